"""Test fixtures for the metrics: an InceptionV3 weights file with random weights, in torch-fidelity's
format (no downloads here), and small image sets."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch


def make_random_inception_weights(path: Path, seed: int = 0) -> Path:
    """Save the state dict of torch-fidelity's FeatureExtractorInceptionV3 with random weights to `path`,
    the file format its `feature_extractor_weights_path` option loads (torch.load of a state dict).

    The extractor always loads weights in its constructor, so it is built from an empty file by a
    subclass that skips that load; then every conv gets He-normal weights, which keep the activations'
    scale through the 90-odd layers (PyTorch's default init shrinks them to ~1e-15 by the pool layer)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, *args, **kwargs):
            return None

    path = Path(path)
    empty = path.with_name(path.name + ".empty")
    torch.save({}, empty)
    torch.manual_seed(seed)
    net = _Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    empty.unlink()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
    sd = {k: v.float().contiguous() for k, v in net.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(sd, tmp)
    tmp.replace(path)
    return path


class U8(torch.utils.data.Dataset):
    """A tensor of uint8 images as a Dataset: what torch-fidelity's own calculate_metrics takes as an input."""

    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory) -> Path:
    """Made once per session (the test modules that use it bind it to a name of their own; the file is shared)."""
    path = tmp_path_factory.getbasetemp() / "metrics_random_inception.pth"
    if not path.is_file():
        make_random_inception_weights(path)
    return path


def synthetic_images(n: int, start: int = 0, seed: int = 0, channels: int = 3) -> torch.Tensor:
    """n uint8 images of the embedded dataset."""
    from gandist.data.synthetic import SyntheticDataset

    ds = SyntheticDataset(start + n, 32, channels, seed)
    return torch.stack([ds[i][0] for i in range(start, start + n)])


def noise_images(n: int, seed: int = 1) -> torch.Tensor:
    """n uint8 images of uniform pixel noise: clearly unlike the embedded dataset."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)


def tiny_cfg(*overrides):
    """A Config for a tiny generator on the embedded dataset, evaluated on 6 samples."""
    from gandist import config

    return config.load(None, ["model.z_dim=8", "model.g_width=4", "model.d_width=4", "data.synthetic_size=64",
                              "eval.metrics=[fid,kid]", "eval.num_samples=6", "log.progress=false", *overrides])


def make_random_judge(path: Path, resolution: int = 32, channels: int = 3, classes: int = 10, seed: int = 0) -> Path:
    """A judge file with random weights (as gandist-judge writes one), for the plumbing: its floor is 1."""
    from gandist.metrics import judge

    torch.manual_seed(seed)
    info = {"labels": "cls", "classes": [str(c) for c in range(classes)], "attributes": [], "resolution": resolution,
            "channels": channels, "width": 4, "features": 16, "test_accuracy": 0.5, "floor_fd": 1.0, "floor_n": 12}
    judge.save(judge.build(info).eval(), info, Path(path))
    return Path(path)
