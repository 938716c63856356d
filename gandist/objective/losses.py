"""Adversarial losses as plain functions of D's logits, reduced in fp32, and their registry.

A loss is what D minimises and what G minimises, registered together under one name; that name is
an allowed value of `loss.adversarial` (gandist.config reads the registry) and the objective
(gandist.objective) looks it up.  Adding a loss is one `register_adversarial` call here or anywhere
before the config is loaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from gandist.utils.precision import wide


@dataclass(frozen=True)
class Adversarial:
    name: str
    d: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (D(real), D(fake)) -> what D minimises
    g: Callable[[torch.Tensor], torch.Tensor]  # D(G(z)) -> what G minimises
    wasserstein: bool = False  # D is a critic: E[D(real)] - E[D(fake)] estimates the Wasserstein distance


ADVERSARIAL: dict[str, Adversarial] = {}


def register_adversarial(name: str, d, g, *, wasserstein: bool = False) -> Adversarial:
    ADVERSARIAL[name] = Adversarial(name, d, g, wasserstein)
    return ADVERSARIAL[name]


def lookup(name: str) -> Adversarial:
    if name not in ADVERSARIAL:
        raise ValueError(f"unknown adversarial loss {name!r}; registered: {', '.join(ADVERSARIAL)}")
    return ADVERSARIAL[name]


def d_loss(name: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return lookup(name).d(wide(real), wide(fake))


def g_loss(name: str, fake: torch.Tensor) -> torch.Tensor:
    return lookup(name).g(wide(fake))


# -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z)))); G's is the non-saturating -log sigmoid(D(G(z)))
register_adversarial("bce", lambda real, fake: F.softplus(-real).mean() + F.softplus(fake).mean(),
                     lambda fake: F.softplus(-fake).mean())
# the critic minimises E[D(fake)] - E[D(real)]
register_adversarial("wasserstein", lambda real, fake: fake.mean() - real.mean(), lambda fake: -fake.mean(),
                     wasserstein=True)
register_adversarial("hinge", lambda real, fake: F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean(),
                     lambda fake: -fake.mean())
