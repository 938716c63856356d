"""Adversarial losses as plain functions of D's logits, reduced in fp32."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from gandist.precision import wide


def d_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    real, fake = wide(real), wide(fake)
    if kind == "bce":  # -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z))))
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind == "wasserstein":  # critic minimises E[D(fake)] - E[D(real)]
        return fake.mean() - real.mean()
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    raise ValueError(f"unknown adversarial loss {kind!r}")


def g_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    fake = wide(fake)
    if kind == "bce":  # non-saturating: -log sigmoid(D(G(z)))
        return F.softplus(-fake).mean()
    if kind in ("wasserstein", "hinge"):
        return -fake.mean()
    raise ValueError(f"unknown adversarial loss {kind!r}")
