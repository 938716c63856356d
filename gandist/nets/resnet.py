"""The ResNet generator and critic of Gulrajani et al. 2017 (WGAN-GP, CIFAR-10), for 32 and 64 px.

G: linear to 4x4, residual up-blocks (BN, ReLU, nearest 2x, conv3x3), BN, ReLU, conv3x3, tanh.
D: an optimised first down-block, residual down-blocks (mean-pool), two plain blocks, ReLU,
global sum pooling, linear.  D's norm is configurable (none or layer for the critic of WGAN-GP).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gandist.nets.layers import Projection, batch_norm, label_maps, maybe_sn


class UpBlock(nn.Module):
    def __init__(self, ch: int, norm: str):
        super().__init__()
        self.n1, self.c1 = batch_norm(norm, ch), nn.Conv2d(ch, ch, 3, 1, 1)
        self.n2, self.c2 = batch_norm(norm, ch), nn.Conv2d(ch, ch, 3, 1, 1)
        self.skip = nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        h = F.interpolate(F.relu(self.n1(x)), scale_factor=2.0)
        h = self.c2(F.relu(self.n2(self.c1(h))))
        return h + self.skip(F.interpolate(x, scale_factor=2.0))


class DownBlock(nn.Module):
    def __init__(self, cin: int, cout: int, norm: str, sn: bool, down: bool, first: bool = False):
        super().__init__()
        self.first, self.down = first, down
        self.n1 = nn.Identity() if first else batch_norm(norm, cin)
        self.c1 = maybe_sn(nn.Conv2d(cin, cout, 3, 1, 1), sn)
        self.n2 = batch_norm(norm, cout)
        self.c2 = maybe_sn(nn.Conv2d(cout, cout, 3, 1, 1), sn)
        self.skip = maybe_sn(nn.Conv2d(cin, cout, 1), sn) if (down or cin != cout) else nn.Identity()

    def forward(self, x):
        h = x if self.first else F.relu(self.n1(x))
        h = self.c2(F.relu(self.n2(self.c1(h))))
        s = x
        if self.down:
            h = F.avg_pool2d(h, 2)
            # The optimised first block pools before its 1x1 shortcut, the others after.
            s = self.skip(F.avg_pool2d(s, 2)) if self.first else F.avg_pool2d(self.skip(s), 2)
        else:
            s = self.skip(s)
        return h + s


class ResNetGenerator(nn.Module):
    def __init__(self, z_dim: int, channels: int, resolution: int, width: int = 64,
                 norm: str = "batch", label_dim: int = 0):
        super().__init__()
        self.z_dim, self.label_dim = z_dim, label_dim
        n_up = {32: 3, 64: 4}[resolution]
        self.ch = width * 2
        self.fc = nn.Linear(z_dim + label_dim, 4 * 4 * self.ch)
        self.blocks = nn.Sequential(*[UpBlock(self.ch, norm) for _ in range(n_up)])
        self.out = nn.Sequential(batch_norm(norm, self.ch), nn.ReLU(), nn.Conv2d(self.ch, channels, 3, 1, 1),
                                 nn.Tanh())

    def forward(self, z, y=None):
        if self.label_dim:
            z = torch.cat([z, y.to(z.dtype)], 1)
        return self.out(self.blocks(self.fc(z).view(-1, self.ch, 4, 4)))


class ResNetDiscriminator(nn.Module):
    def __init__(self, channels: int, resolution: int, width: int = 64, norm: str = "none",
                 sn: bool = False, label_dim: int = 0, conditioning: str = "none"):
        super().__init__()
        self.conditioning = conditioning
        ch = width * 2
        in_ch = channels + (label_dim if conditioning == "concat" else 0)
        blocks = [DownBlock(in_ch, ch, norm, sn, down=True, first=True), DownBlock(ch, ch, norm, sn, down=True)]
        if resolution == 64:
            blocks.append(DownBlock(ch, ch, norm, sn, down=True))
        blocks += [DownBlock(ch, ch, norm, sn, down=False), DownBlock(ch, ch, norm, sn, down=False)]
        self.blocks = nn.Sequential(*blocks)
        self.head = maybe_sn(nn.Linear(ch, 1), sn)
        self.proj = Projection(label_dim, ch, sn) if conditioning == "projection" else None

    def forward(self, x, y=None):
        if self.conditioning == "concat":
            x = torch.cat([x, label_maps(y.to(x.dtype), x.shape[2], x.shape[3])], 1)
        h = F.relu(self.blocks(x)).sum((2, 3))
        out = self.head(h).squeeze(1)
        if self.proj is not None:
            out = out + self.proj(h, y.to(h.dtype))
        return out
