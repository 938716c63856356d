"""Networks: G maps (z, labels) to images in [-1, 1]; D maps (images, labels) to one logit each.
They know nothing about training."""
from __future__ import annotations

import torch.nn as nn

from gandist.config import Config, label_dim
from gandist.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from gandist.nets.layers import init_dcgan_weights
from gandist.nets.mlp import MLPDiscriminator, MLPGenerator
from gandist.nets.resnet import ResNetDiscriminator, ResNetGenerator, init_resnet_weights

# family -> (G, D, the initialisation of the paper that introduced it)
_FAMILIES = {
    "mlp": (MLPGenerator, MLPDiscriminator, init_dcgan_weights),
    "dcgan": (DCGANGenerator, DCGANDiscriminator, init_dcgan_weights),
    "resnet": (ResNetGenerator, ResNetDiscriminator, init_resnet_weights),
}


def build(cfg: Config) -> tuple[nn.Module, nn.Module]:
    m, d = cfg.model, cfg.data
    G_cls, D_cls, init = _FAMILIES[m.arch]
    ld = label_dim(cfg)
    G = G_cls(m.z_dim, d.channels, d.resolution, m.g_width, m.g_norm, label_dim=ld)
    D = D_cls(d.channels, d.resolution, m.d_width, m.d_norm, m.spectral_norm, label_dim=ld,
              conditioning=m.conditioning)
    init(G)
    init(D)
    return G, D
