"""Images into Inception features: torch-fidelity's `inception-v3-compat`, the TensorFlow graph behind
published FID/IS/KID numbers.  Weights are a local file or torch-fidelity's download; `check_weights` is the
one place that reports a missing file, so that commands and runs say it before any work.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import torch

from gandist.metrics.registry import FEATURE_LAYERS, LOGITS, MetricError

FEATURE_EXTRACTOR = "inception-v3-compat"  # torch-fidelity's name for its InceptionV3
__all__ = ["FEATURE_EXTRACTOR", "FEATURE_LAYERS", "LOGITS", "check_weights", "extract", "feature_extractor",
           "quantise", "to_uint8_rgb"]


def check_weights(weights: str | Path | None, setting: str = "eval.feature_weights") -> Path | None:
    """The weights file as a Path (None: download); MetricError naming `setting` if it does not exist."""
    if not weights:
        return None
    path = Path(weights)
    if not path.is_file():
        raise MetricError(f"{setting}: {path} does not exist (expected a torch-fidelity InceptionV3 weights file; "
                          f"leave {setting} empty to download torch-fidelity's own)")
    return path


def feature_extractor(layers: Iterable[str], weights: str | Path | None, device) -> torch.nn.Module:
    """torch-fidelity's InceptionV3 with these output layers; weights None/'' downloads them."""
    # deferred: torch-fidelity is heavy
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
    from torch_fidelity.utils import create_feature_extractor

    layers = list(dict.fromkeys(layers))
    bad = [l for l in layers if l not in (*FEATURE_LAYERS, LOGITS)]
    if bad:
        raise MetricError(f"unknown Inception feature layer(s) {bad}: choose from {', '.join(FEATURE_LAYERS)}")
    path = check_weights(weights)
    try:
        net = create_feature_extractor(FEATURE_EXTRACTOR, layers, cuda=False, verbose=False,
                                       feature_extractor_weights_path=str(path) if path else None)
    except Exception as e:
        detail = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        if path is not None:
            raise MetricError(f"eval.feature_weights: {path} is not a torch-fidelity InceptionV3 weights file "
                              f"({detail[:300]})") from e
        raise MetricError(f"could not get torch-fidelity's InceptionV3 weights from {URL_INCEPTION_V3} "
                          f"({detail[:300]}); without internet access, copy that file here and set "
                          f"eval.feature_weights=PATH") from e
    return net.to(device)


def quantise(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 as save_image rounds: the grids use it too, so Inception sees what a person sees."""
    return (x.detach().float().clamp(-1, 1) * 0.5 + 0.5).mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def to_uint8_rgb(x: torch.Tensor) -> torch.Tensor:
    """G's output in [-1, 1] (quantised as the grids are) or uint8, 1 or 3 channels -> uint8 (N, 3, H, W)."""
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise MetricError(f"expected images of shape (N, 1 or 3, H, W), got {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        x = quantise(x)
    return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x


@torch.no_grad()
def extract(nets, batches: Iterable[torch.Tensor], on_batch: Callable[[int], None] | None = None
            ) -> dict[str, torch.Tensor]:
    """{layer: (N, D) float32 CPU features} of the batches from one or several extractors, in one pass."""
    nets = [nets] if isinstance(nets, torch.nn.Module) else list(nets)
    device = next(nets[0].parameters()).device
    parts: dict[str, list] = {k: [] for net in nets for k in net.get_requested_features_list()}
    for x in batches:
        x = to_uint8_rgb(x).to(device)
        for net in nets:
            for k, v in net.convert_features_tuple_to_dict(net(x)).items():
                parts[k].append(v.float().cpu())
        if on_batch is not None:
            on_batch(len(x))
    return {k: torch.cat(v) if v else torch.zeros(0, 0) for k, v in parts.items()}
