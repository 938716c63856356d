"""uint8 pixels to [-1, 1] and labels to condition vectors: a leaf (torch only), so that the feeds, the EMA
and the metrics share it without importing one another."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def to_images(u8: torch.Tensor, device) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float in [-1, 1], converted on the device (less to copy)."""
    return u8.to(device, non_blocking=True).to(torch.get_default_dtype()).div_(127.5).sub_(1.0)


def condition(labels: torch.Tensor | None, cfg, device=None) -> torch.Tensor | None:
    """Labels as condition vectors (one-hot classes or 0/1 attributes) on `device`, copied as integers."""
    if cfg.model.conditioning == "none" or labels is None:
        return None
    if device is not None:
        labels = labels.to(device, non_blocking=True)
    if labels.dim() == 1:
        return F.one_hot(labels.long(), cfg.data.num_classes).to(torch.get_default_dtype())
    return (labels > 0).to(torch.get_default_dtype())
