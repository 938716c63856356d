"""The non-finite guard's verdict, computed on the device: both backends' updates (gandist/backends/ddp.py's
DdpUpdate, and ZeRO stage 0's in gandist/backends/zero/update.py) skip a step whose gradients hold a NaN or
an inf, without reading anything back to the host."""
from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=None)
def _one(device: torch.device) -> torch.Tensor:
    return torch.ones((), dtype=torch.float32, device=device)


def nonfinite(grads: list[torch.Tensor], device) -> torch.Tensor:
    """The non-finite guard's verdict, on the device: a 0-d float32 tensor, 1 if any of `grads` holds a NaN or
    an inf, else 0 (torch's own check for the loss scaler, with a scale of 1: no host read)."""
    found = torch.zeros((), dtype=torch.float32, device=device)
    torch._amp_foreach_non_finite_check_and_unscale_(grads, found, _one(torch.device(device)))
    return found
