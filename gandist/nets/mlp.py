"""The MLP G and D of Goodfellow et al. 2014, with LeakyReLU instead of the paper's maxout and dropout: it
trains as well here and has no hyperparameters of its own.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from gandist.nets.conditioning import ConditionalDiscriminator, ConditionalGenerator
from gandist.nets.layers import batch_norm, maybe_sn


class MLPGenerator(ConditionalGenerator):
    def __init__(self, z_dim: int, channels: int, resolution: int, width: int = 64,
                 norm: str = "none", label_dim: int = 0):
        super().__init__(z_dim, label_dim)
        self.shape = (channels, resolution, resolution)
        dims = [self.input_dim, width * 4, width * 8, width * 16]
        layers = []
        for a, b in zip(dims, dims[1:]):
            layers += [nn.Linear(a, b), batch_norm(norm, b, dims=1), nn.LeakyReLU(0.2)]
        layers += [nn.Linear(dims[-1], channels * resolution * resolution), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self.latent(z, y)).view(-1, *self.shape)


class MLPDiscriminator(ConditionalDiscriminator):
    def __init__(self, channels: int, resolution: int, width: int = 64, norm: str = "none",
                 sn: bool = False, label_dim: int = 0, conditioning: str = "none"):
        super().__init__(label_dim, conditioning)
        in_dim = channels * resolution * resolution + self.label_inputs
        dims = [in_dim, width * 16, width * 8, width * 4]
        layers = []
        for i, (a, b) in enumerate(zip(dims, dims[1:])):
            layers += [maybe_sn(nn.Linear(a, b), sn)]
            if i > 0:  # as in DCGAN's D, no norm right after the input layer
                layers += [batch_norm(norm, b, dims=1)]
            layers += [nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.head = maybe_sn(nn.Linear(dims[-1], 1), sn)
        self.add_projection(dims[-1], sn)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        x, y = self.labelled(x.flatten(1), y)
        h = self.features(x)
        return self.heads(self.head(h).squeeze(1), h, y)
