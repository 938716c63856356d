"""Losses, norms and statistics in fp32 under mixed precision, fp64 in an fp64 run (numerical checks)."""
import torch


def wide(t: torch.Tensor) -> torch.Tensor:
    """t in fp32, or in its own dtype if that is wider."""
    return t.to(torch.promote_types(t.dtype, torch.float32))
