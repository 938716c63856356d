"""Regularisers of D: the WGAN-GP gradient penalty (AMP-correct), R1, and weight clipping."""
from __future__ import annotations

import torch
import torch.nn as nn

from gandist.precision import wide


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
