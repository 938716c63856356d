"""Precision helpers.  Losses, norms and statistics are computed in fp32 under mixed precision,
and in fp64 when the whole run is fp64 (train.fp64, for numerical checks)."""
import torch


def wide(t: torch.Tensor) -> torch.Tensor:
    """t in fp32, or in its own dtype if that is wider."""
    return t.to(torch.promote_types(t.dtype, torch.float32))
