"""DiffAugment (Zhao et al. 2020): differentiable colour, translation and cutout applied to every
image D sees, real and fake, so D can't memorise a small dataset.  Random parameters come from
the caller's per-step global draws (distributed.Draws), which keeps runs world-size invariant."""
from __future__ import annotations

import torch

POLICIES = ("color", "translation", "cutout")


def parse_policy(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in parts if p not in POLICIES]
    if bad:
        raise ValueError(f"loss.diffaugment: unknown policy {bad}; allowed: {', '.join(POLICIES)}")
    return parts


def diff_augment(x: torch.Tensor, policy: tuple[str, ...], rand) -> torch.Tensor:
    """rand(n) returns this rank's (b, n) uniform numbers for one augmentation."""
    b, _, h, w = x.shape
    if "color" in policy:
        r = rand(3).to(x.dtype)
        x = x + (r[:, 0:1, None, None] - 0.5)  # brightness
        m = x.mean(1, keepdim=True)
        x = (x - m) * (r[:, 1:2, None, None] * 2) + m  # saturation
        m = x.mean((1, 2, 3), keepdim=True)
        x = (x - m) * (r[:, 2:3, None, None] + 0.5) + m  # contrast
    if "translation" in policy:
        r = rand(2)
        sy = (r[:, 0] * (h // 4 + 1)).floor().long() - h // 8  # shift by up to 1/8 of the size
        sx = (r[:, 1] * (w // 4 + 1)).floor().long() - w // 8
        gy = torch.arange(h, device=x.device)[None, :, None] + sy[:, None, None]
        gx = torch.arange(w, device=x.device)[None, None, :] + sx[:, None, None]
        valid = ((gy >= 0) & (gy < h) & (gx >= 0) & (gx < w)).to(x.dtype)
        bi = torch.arange(b, device=x.device)[:, None, None]
        x = x[bi, :, gy.clamp(0, h - 1), gx.clamp(0, w - 1)].permute(0, 3, 1, 2) * valid[:, None]
    if "cutout" in policy:
        r = rand(2)
        cy, cx = (r[:, 0] * h).floor(), (r[:, 1] * w).floor()
        ys = torch.arange(h, device=x.device, dtype=torch.float32)[None, :, None]
        xs = torch.arange(w, device=x.device, dtype=torch.float32)[None, None, :]
        hole = ((ys - cy[:, None, None]).abs() < h / 4) & ((xs - cx[:, None, None]).abs() < w / 4)
        x = x * (~hole).to(x.dtype)[:, None]
    return x
