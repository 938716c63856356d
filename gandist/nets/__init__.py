"""Networks: G maps (z, labels) to images in [-1, 1]; D maps (images, labels) to one logit each
(with model.info_codes, InfoGAN's code logits beside it: gandist.nets.conditioning).  They know nothing about
training."""
from __future__ import annotations

import torch.nn as nn

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
FAMILIES = tuple(_FAMILIES)


def build_generator(arch: str, z_dim: int, channels: int, resolution: int, width: int, norm: str,
                    label_dim: int, info_codes: int = 0) -> nn.Module:
    """G from explicit arguments (what final/generator.json records; info_codes is absent from cards written
    before InfoGAN's code), uninitialised: nets.build initialises it, loading a trained generator replaces the
    weights."""
    if arch not in _FAMILIES:
        raise ValueError(f"unknown network family {arch!r}: one of {', '.join(FAMILIES)}")
    if not 0 <= info_codes <= z_dim:
        raise ValueError(f"info_codes {info_codes} must be between 0 and z_dim {z_dim}")
    G = _FAMILIES[arch][0](z_dim, channels, resolution, width, norm, label_dim=label_dim)
    G.info_codes = info_codes
    return G


def generator_args(cfg) -> dict:
    m, d = cfg.model, cfg.data
    return {"arch": m.arch, "z_dim": m.z_dim, "channels": d.channels, "resolution": d.resolution,
            "width": m.g_width, "norm": m.g_norm, "label_dim": cfg.label_dim, "info_codes": m.info_codes}


def build(cfg) -> tuple[nn.Module, nn.Module]:
    m, d = cfg.model, cfg.data
    _, D_cls, init = _FAMILIES[m.arch]
    ld = cfg.label_dim
    # G, then D, then their initialisation: this order of random draws keeps a seed's weights as they were
    G = build_generator(**generator_args(cfg))
    D = D_cls(d.channels, d.resolution, m.d_width, m.d_norm, m.spectral_norm, label_dim=ld,
              conditioning=m.conditioning)
    init(G)
    init(D)
    if m.info_codes:  # after the others' draws, so that a seed gives them the weights it gives without a code
        D.add_info_head(m.info_codes, m.spectral_norm)
        init(D.info)
    return G, D
