"""DCGAN (Radford et al. 2016): transposed convolutions up, strided convolutions down.

Resolutions 28 (from 7x7), 32 and 64 (from 4x4), and 128.  G: BatchNorm + ReLU, tanh output.
D: LeakyReLU(0.2), no norm on the first layer, one logit (no sigmoid: the loss takes logits).
With d_norm `layer` (the WGAN-GP critic) each hidden layer is normalised over (C, H, W) of its own
sample, so a sample's output never depends on the rest of the batch.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from gandist.nets.layers import Projection, batch_norm, check_labels, label_maps, maybe_sn, with_labels


def _plan(resolution: int) -> tuple[int, int]:
    """(start size, number of 2x stages) for a resolution."""
    start = 7 if resolution == 28 else 4
    n = int(round(math.log2(resolution / start)))
    if n < 2 or start * 2 ** n != resolution:
        raise ValueError(f"DCGAN supports 28, 32, 64 or 128 px, not {resolution}")
    return start, n


class DCGANGenerator(nn.Module):
    def __init__(self, z_dim: int, channels: int, resolution: int, width: int = 64,
                 norm: str = "batch", label_dim: int = 0):
        super().__init__()
        self.z_dim, self.label_dim = z_dim, label_dim
        start, n = _plan(resolution)
        ch = width * 2 ** (n - 1)
        layers = [nn.ConvTranspose2d(z_dim + label_dim, ch, start, 1, 0, bias=norm == "none"),
                  batch_norm(norm, ch), nn.ReLU(True)]
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=norm == "none"),
                       batch_norm(norm, ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(with_labels(z, y, self.label_dim)[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    def __init__(self, channels: int, resolution: int, width: int = 64, norm: str = "batch",
                 sn: bool = False, label_dim: int = 0, conditioning: str = "none"):
        super().__init__()
        start, n = _plan(resolution)
        self.label_dim, self.conditioning = label_dim, conditioning
        in_ch = channels + (label_dim if conditioning == "concat" else 0)
        ch = width
        layers = [maybe_sn(nn.Conv2d(in_ch, ch, 4, 2, 1), sn), nn.LeakyReLU(0.2)]
        for _ in range(n - 1):
            layers += [maybe_sn(nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=norm != "batch"), sn),
                       batch_norm(norm, ch * 2), nn.LeakyReLU(0.2)]
            ch *= 2
        self.features = nn.Sequential(*layers)
        self.head = maybe_sn(nn.Conv2d(ch, 1, start, 1, 0), sn)
        self.proj = Projection(label_dim, ch, sn) if conditioning == "projection" else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditioning != "none":
            check_labels(y, self.label_dim, "D")
            y = y.to(x.dtype)
        if self.conditioning == "concat":
            x = torch.cat([x, label_maps(y, x.shape[2], x.shape[3])], 1)
        h = self.features(x)
        out = self.head(h).flatten(1).sum(1)
        if self.proj is not None:
            out = out + self.proj(h.sum((2, 3)), y)
        return out
