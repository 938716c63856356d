"""A variant is data, not a subclass: a preset of config values choosing the networks, the loss,
the regulariser and the optimizer.  Adding one is a small file here plus a config."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    name: str
    summary: str
    source: str  # where the defaults come from
    preset: dict  # dotted config keys -> values, applied beneath the user's file and overrides


def _collect() -> dict[str, Variant]:
    from gandist.variants import cgan, dcgan, gan, wgan, wgan_gp

    return {m.VARIANT.name: m.VARIANT for m in (gan, dcgan, wgan, wgan_gp, cgan)}


VARIANTS = _collect()
