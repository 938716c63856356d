"""Regularisers of D and their registry: the WGAN-GP gradient penalty (AMP-correct), R1, and weight
clipping.

Two kinds, each one registered function:
- a *penalty* is a term added to D's loss, computed from what D saw in its step (`CriticInputs`);
  it is logged under its name and weighted by a function of the `loss` config section;
- a *constraint* changes D's weights after every D step that was taken (WGAN's clipping).
The registered names are the allowed values of `loss.regularizer` (gandist.config reads the
registry), and gandist.objective looks them up.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from gandist.utils.precision import wide


@dataclass
class CriticInputs:
    """What a penalty sees of one D step: D (as prepared, so its gradients reach DDP), this rank's real
    and fake images exactly as D saw them, the labels, uniform numbers per sample drawn world-size
    invariantly (`rand(purpose, n)` -> (b, n)), and fp16's GradScaler or None."""
    D: nn.Module
    real: torch.Tensor
    fake: torch.Tensor
    y: torch.Tensor | None
    rand: Callable[[str, int], torch.Tensor]
    scaler: object = None


@dataclass(frozen=True)
class Regularizer:
    name: str
    penalty: Callable[[CriticInputs], torch.Tensor] | None = None
    weight: Callable[[object], float] | None = None  # loss config -> the penalty's weight in D's loss
    constraint: Callable[[nn.Module, object], None] | None = None  # (unwrapped D, loss config), after a D step


REGULARIZERS: dict[str, Regularizer] = {"none": Regularizer("none")}


def register_penalty(name: str, weight: Callable[[object], float]):
    """Decorator: fn(CriticInputs) -> scalar tensor becomes the penalty `name`, weighted by weight(cfg.loss)."""
    def deco(fn):
        REGULARIZERS[name] = Regularizer(name, penalty=fn, weight=weight)
        return fn
    return deco


def register_constraint(name: str):
    """Decorator: fn(D, cfg.loss) becomes the constraint `name`, applied after every D step taken."""
    def deco(fn):
        REGULARIZERS[name] = Regularizer(name, constraint=fn)
        return fn
    return deco


def lookup(name: str) -> Regularizer:
    if name not in REGULARIZERS:
        raise ValueError(f"unknown regularizer {name!r}; registered: {', '.join(REGULARIZERS)}")
    return REGULARIZERS[name]


def _input_grad(D, x: torch.Tensor, y, scaler) -> tuple[torch.Tensor, torch.Tensor]:
    """(D(x), dD(x)/dx with a graph), following PyTorch's AMP recipe for gradient penalties:
    scale the output before autograd.grad so fp16 gradients don't underflow, then unscale."""
    x = x.detach().requires_grad_(True)
    out = D(x, y)
    s = wide(out).sum()
    if scaler is not None:
        s = scaler.scale(s)
    (grad,) = torch.autograd.grad(s, x, create_graph=True)
    if scaler is not None:
        grad = grad / scaler.get_scale()
    return out, wide(grad)


def gradient_penalty(D, real: torch.Tensor, fake: torch.Tensor, y, alpha: torch.Tensor,
                     scaler=None) -> torch.Tensor:
    """E[(||grad_x D(x_hat)||_2 - 1)^2] over this rank's interpolates x_hat = a x + (1 - a) x_fake.

    alpha has one value per sample; the norm runs over all of a sample's dimensions.  The mean is
    over this rank's samples: DDP's gradient averaging makes it the global-batch penalty.
    """
    a = alpha.view(-1, *([1] * (real.dim() - 1))).to(real.dtype)
    x_hat = a * real.detach() + (1 - a) * fake.detach()
    _, grad = _input_grad(D, x_hat, y, scaler)
    return ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


def r1_penalty(D, real: torch.Tensor, y, scaler=None) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E[||grad_x D(x)||^2] on real data; weighted by gamma/2 by the caller."""
    _, grad = _input_grad(D, real, y, scaler)
    return grad.flatten(1).pow(2).sum(1).mean()


@torch.no_grad()
def clip_weights_(D: nn.Module, c: float):
    """WGAN's Lipschitz constraint: every critic parameter into [-c, c]."""
    for p in D.parameters():
        p.clamp_(-c, c)


# -- the registered regularisers -------------------------------------------------------------------

@register_penalty("gp", weight=lambda c: c.gp_weight)
def _gp(b: CriticInputs) -> torch.Tensor:
    """WGAN-GP: one interpolation alpha per sample, drawn from the step's global stream."""
    return gradient_penalty(b.D, b.real, b.fake, b.y, b.rand("alpha", 1).squeeze(1), b.scaler)


@register_penalty("r1", weight=lambda c: 0.5 * c.r1_gamma)
def _r1(b: CriticInputs) -> torch.Tensor:
    return r1_penalty(b.D, b.real, b.y, b.scaler)


@register_constraint("clip")
def _clip(D: nn.Module, c) -> None:
    clip_weights_(D, c.clip)
