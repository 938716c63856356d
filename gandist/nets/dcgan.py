"""DCGAN (Radford et al. 2016) at 28, 32, 64 and 128 px.  D gives logits (the loss applies the sigmoid); with
d_norm `layer` (the WGAN-GP critic) a sample's output never depends on the rest of the batch.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from gandist.nets.conditioning import ConditionalDiscriminator, ConditionalGenerator
from gandist.nets.layers import batch_norm, maybe_sn


def _plan(resolution: int) -> tuple[int, int]:
    """(start size, number of 2x stages) for a resolution."""
    start = 7 if resolution == 28 else 4
    n = int(round(math.log2(resolution / start)))
    if n < 2 or start * 2 ** n != resolution:
        raise ValueError(f"DCGAN supports 28, 32, 64 or 128 px, not {resolution}")
    return start, n


class DCGANGenerator(ConditionalGenerator):
    def __init__(self, z_dim: int, channels: int, resolution: int, width: int = 64,
                 norm: str = "batch", label_dim: int = 0):
        super().__init__(z_dim, label_dim)
        start, n = _plan(resolution)
        ch = width * 2 ** (n - 1)
        layers = [nn.ConvTranspose2d(self.input_dim, ch, start, 1, 0, bias=norm == "none"),
                  batch_norm(norm, ch), nn.ReLU(True)]
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=norm == "none"),
                       batch_norm(norm, ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self.latent(z, y)[:, :, None, None])


class DCGANDiscriminator(ConditionalDiscriminator):
    def __init__(self, channels: int, resolution: int, width: int = 64, norm: str = "batch",
                 sn: bool = False, label_dim: int = 0, conditioning: str = "none"):
        super().__init__(label_dim, conditioning)
        start, n = _plan(resolution)
        in_ch = channels + self.label_inputs
        ch = width
        layers = [maybe_sn(nn.Conv2d(in_ch, ch, 4, 2, 1), sn), nn.LeakyReLU(0.2)]
        for _ in range(n - 1):
            layers += [maybe_sn(nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=norm != "batch"), sn),
                       batch_norm(norm, ch * 2), nn.LeakyReLU(0.2)]
            ch *= 2
        self.features = nn.Sequential(*layers)
        self.head = maybe_sn(nn.Conv2d(ch, 1, start, 1, 0), sn)
        self.add_projection(ch, sn)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        x, y = self.labelled(x, y)
        h = self.features(x)
        return self.heads(self.head(h).flatten(1).sum(1), h, y)  # projection on sum-pooled h
