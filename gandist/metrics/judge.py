"""The judge: a small classifier of the run's own labelled data, whose features stand in for Inception's where
no Inception weights can be had (offline clusters), and whose predictions check a conditional generator.

It is registered as torch-fidelity's extractor "gandist-judge", so torch-fidelity's own calculate_metrics
works with it too.  Its safetensors metadata holds what evaluation checks before any work (size, labels) and
what a run is read against (held-out accuracy, the real-vs-real floor).
"""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import torch
from torch import nn

from gandist.metrics.registry import JUDGE_FEATURES, JUDGE_LOGITS, MetricError

JUDGE = "gandist-judge"  # its name in torch-fidelity's feature-extractor registry
FORMAT = "gandist-judge/1"
META_KEY = "gandist_judge"


class JudgeNet(nn.Module):
    """Four 3x3 convs, average pooling, a hidden layer (the features) and the logits; input in [-1, 1]."""

    def __init__(self, channels: int, outputs: int, width: int = 32, features: int = 128):
        super().__init__()

        def block(cin, cout, stride):
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.body = nn.Sequential(*block(channels, width, 1), *block(width, width, 2), *block(width, 2 * width, 2),
                                  *block(2 * width, 4 * width, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(4 * width, features), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(features, outputs))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.body(x)
        return f, self.head(f)


def to_input(x: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 (N, 1 or 3, H, W) -> the judge's float input in [-1, 1] with `channels` channels."""
    if x.shape[1] != channels:
        x = x[:, :1] if channels == 1 else x.expand(-1, 3, -1, -1)
    return x.float() / 127.5 - 1


def outputs_of(meta: dict) -> int:
    return len(meta["attributes"]) if meta["labels"] == "attr" else len(meta["classes"])


def build(meta: dict) -> JudgeNet:
    return JudgeNet(meta["channels"], outputs_of(meta), meta["width"], meta["features"])


def read_meta(path: str | Path, setting: str = "eval.judge") -> dict:
    """The judge file's metadata (header only); MetricError naming `setting` if missing or not a judge."""
    # deferred: only a judge file needs it
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise MetricError(f"{setting}: {path} does not exist (train one with gandist-judge)")
    try:
        with safe_open(str(path), "pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except (SafetensorError, OSError, ValueError) as e:
        raise MetricError(f"{setting}: {path} is not a readable safetensors file ({str(e)[:200]})") from None
    try:
        meta = json.loads(raw) if raw else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise MetricError(f"{setting}: {path} is not a gandist judge file (no {FORMAT} metadata; train one with "
                          f"gandist-judge)")
    return meta


def load(path: str | Path, setting: str = "eval.judge", device="cpu") -> tuple[JudgeNet, dict]:
    from safetensors.torch import load_file

    meta = read_meta(path, setting)
    net = build(meta)
    try:
        net.load_state_dict(load_file(str(path)))
    except Exception as e:  # safetensors and load_state_dict raise several kinds for a damaged file
        raise MetricError(f"{setting}: {path}: its weights do not load ({str(e).strip().splitlines()[0][:200]})") \
            from None
    return net.to(device).eval(), meta


def save(net: JudgeNet, meta: dict, path: Path):
    """Write the judge atomically (a kill leaves the old file or none, never half of one)."""
    from safetensors.torch import save_file

    from gandist.utils.files import atomic_path

    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={META_KEY: json.dumps({"format": FORMAT, **meta})})


def check_fits(meta: dict, cfg, path, setting: str = "eval.judge", *, accuracy: bool = False) -> tuple[int, ...] | None:
    """MetricError unless the judge was trained on data like the run's (size, labels, classes; attributes
    where `accuracy`).  Returns its output columns of the run's attributes, else None."""
    d = cfg.data
    for key, mine in (("resolution", d.resolution), ("channels", d.channels)):
        if meta[key] != mine:
            raise MetricError(f"{setting}: {path} judges {key} {meta[key]}, but the run's data.{key} is {mine}")
    if d.attributes or d.label_key == "attr":
        have = meta["attributes"] if meta["labels"] == "attr" else []
        if not have:
            raise MetricError(f"{setting}: {path} judges classes, but the run's data has attributes "
                              f"(data.label_key=attr): train the judge with --labels attr")
        missing = [a for a in d.attributes if a not in have]
        if accuracy and missing:
            raise MetricError(f"{setting}: {path} was not trained on the attribute(s) {', '.join(missing)} of "
                              f"data.attributes")
        return tuple(have.index(a) for a in d.attributes) if accuracy else None
    # a run conditioned on clusters (data.label_key=cluster) has the judge's data without its class count
    if meta["labels"] != "cls" or (d.label_key == "cls" and d.num_classes and len(meta["classes"]) != d.num_classes):
        what = f"{len(meta['classes'])} classes" if meta["labels"] == "cls" else "attributes"
        raise MetricError(f"{setting}: {path} judges {what}, but the run has data.num_classes={d.num_classes}")
    return None


@cache
def register() -> type:
    """Register "gandist-judge" with torch-fidelity once; deferred, as importing torch-fidelity takes seconds."""
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    class JudgeExtractor(FeatureExtractorBase):
        """uint8 (N, 3, H, W) -> (features, logits) as asked."""

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            if not feature_extractor_weights_path:
                raise MetricError("the judge needs its file (feature_extractor_weights_path)")
            self.net, self.meta = load(feature_extractor_weights_path, kwargs.get("setting", "eval.judge"))

        @staticmethod
        def get_provided_features_list():
            return JUDGE_FEATURES, JUDGE_LOGITS

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return JUDGE_FEATURES

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return None

        def forward(self, x):
            f, logits = self.net(to_input(x, self.meta["channels"]))
            got = {JUDGE_FEATURES: f, JUDGE_LOGITS: logits}
            return tuple(got[k] for k in self.features_list)

    if JUDGE not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(JUDGE, JudgeExtractor)
    return FEATURE_EXTRACTORS_REGISTRY[JUDGE]


def judge_extractor(layers, path: str | Path, device, setting: str = "eval.judge") -> torch.nn.Module:
    from torch_fidelity.utils import create_feature_extractor

    register()
    net = create_feature_extractor(JUDGE, list(dict.fromkeys(layers)), cuda=False, verbose=False,
                                   feature_extractor_weights_path=str(path), setting=setting)
    return net.to(device)
