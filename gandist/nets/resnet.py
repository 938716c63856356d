"""The ResNet G and critic of Gulrajani et al. 2017 (WGAN-GP), for 32 and 64 px, block for block as the
paper's CIFAR-10 code (128 channels at width 64), so that its results are the reference; the paper's critic
is unnormalised (d_norm: none).
"""
from __future__ import annotations

import math

import torch.nn as nn
import torch.nn.functional as F

from gandist.nets.conditioning import ConditionalDiscriminator, ConditionalGenerator
from gandist.nets.layers import batch_norm, maybe_sn, raw_weight

_N_RESAMPLE = {32: 3, 64: 4}  # G's up-blocks, from 4x4; D downsamples one block fewer, to 8x8


def _check(resolution: int):
    if resolution not in _N_RESAMPLE:
        raise ValueError(f"the ResNet nets support 32 or 64 px, not {resolution}")


class UpBlock(nn.Module):
    def __init__(self, ch: int, norm: str):
        super().__init__()
        self.n1, self.c1 = batch_norm(norm, ch), nn.Conv2d(ch, ch, 3, 1, 1)
        self.n2, self.c2 = batch_norm(norm, ch), nn.Conv2d(ch, ch, 3, 1, 1)
        self.skip = nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        h = self.c1(F.interpolate(F.relu(self.n1(x)), scale_factor=2.0))
        h = self.c2(F.relu(self.n2(h)))
        return h + self.skip(F.interpolate(x, scale_factor=2.0))


class DownBlock(nn.Module):
    """A residual critic block; `first` is the optimised first block, which sees the raw image."""

    def __init__(self, cin: int, cout: int, norm: str, sn: bool, down: bool, first: bool = False):
        super().__init__()
        self.first, self.down = first, down
        self.n1 = nn.Identity() if first else batch_norm(norm, cin)
        self.c1 = maybe_sn(nn.Conv2d(cin, cout, 3, 1, 1), sn)
        self.n2 = nn.Identity() if first else batch_norm(norm, cout)
        self.c2 = maybe_sn(nn.Conv2d(cout, cout, 3, 1, 1), sn)
        self.skip = maybe_sn(nn.Conv2d(cin, cout, 1), sn) if (down or cin != cout) else nn.Identity()

    def forward(self, x):
        h = x if self.first else F.relu(self.n1(x))
        h = self.c2(F.relu(self.n2(self.c1(h))))
        if not self.down:
            return h + self.skip(x)
        # The first block pools before its 1x1 shortcut (cheaper on the raw image), the others after.
        s = self.skip(F.avg_pool2d(x, 2)) if self.first else F.avg_pool2d(self.skip(x), 2)
        return F.avg_pool2d(h, 2) + s


class ResNetGenerator(ConditionalGenerator):
    def __init__(self, z_dim: int, channels: int, resolution: int, width: int = 64,
                 norm: str = "batch", label_dim: int = 0):
        super().__init__(z_dim, label_dim)
        _check(resolution)
        self.ch = width * 2
        self.fc = nn.Linear(self.input_dim, 4 * 4 * self.ch)
        self.blocks = nn.Sequential(*[UpBlock(self.ch, norm) for _ in range(_N_RESAMPLE[resolution])])
        self.out = nn.Sequential(batch_norm(norm, self.ch), nn.ReLU(), nn.Conv2d(self.ch, channels, 3, 1, 1),
                                 nn.Tanh())

    def forward(self, z, y=None):
        h = self.fc(self.latent(z, y)).view(-1, self.ch, 4, 4)
        return self.out(self.blocks(h))


class ResNetDiscriminator(ConditionalDiscriminator):
    def __init__(self, channels: int, resolution: int, width: int = 64, norm: str = "none",
                 sn: bool = False, label_dim: int = 0, conditioning: str = "none"):
        super().__init__(label_dim, conditioning)
        _check(resolution)
        ch = width * 2
        in_ch = channels + self.label_inputs
        blocks = [DownBlock(in_ch, ch, norm, sn, down=True, first=True)]
        blocks += [DownBlock(ch, ch, norm, sn, down=True) for _ in range(_N_RESAMPLE[resolution] - 2)]
        blocks += [DownBlock(ch, ch, norm, sn, down=False), DownBlock(ch, ch, norm, sn, down=False)]
        self.blocks = nn.Sequential(*blocks)
        self.head = maybe_sn(nn.Linear(ch, 1), sn)
        self.add_projection(ch, sn)

    def forward(self, x, y=None):
        x, y = self.labelled(x, y)
        # Global mean pooling, as the paper's code (reduce_mean); SNGAN's global sum only rescales the head.
        h = F.relu(self.blocks(x)).mean((2, 3))
        return self.heads(self.head(h).squeeze(1), h, y)


def init_resnet_weights(module: nn.Module):
    """The paper's initialisation: Glorot with gain sqrt(2) on ReLU paths, plain Glorot elsewhere, zero biases."""
    for name, m in module.named_modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        relu_path = isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and not name.startswith("out.")
        nn.init.xavier_uniform_(raw_weight(m), gain=math.sqrt(2.0) if relu_path else 1.0)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
