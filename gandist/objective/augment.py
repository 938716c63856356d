"""DiffAugment (Zhao et al. 2020): differentiable colour, translation and cutout applied to every
image D sees, real and fake, so D can't memorise a small dataset.  Random parameters come from
the caller's per-step global draws (draws.Draws), which keeps runs world-size invariant.

The magnitudes are those of the paper: brightness +U[-0.5, 0.5], saturation x U[0, 2], contrast
x U[0.5, 1.5]; translation by up to 1/8 of the size with zero padding; cutout of a square half
the size, centred anywhere in the image (clipped at the border).
"""
from __future__ import annotations

import torch

POLICIES = ("color", "translation", "cutout")
_NUMBERS = {"color": 3, "translation": 2, "cutout": 2}  # uniform numbers each augmentation uses per sample


def parse_policy(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in parts if p not in POLICIES]
    if bad:
        raise ValueError(f"loss.diffaugment: unknown policy {bad}; allowed: {', '.join(POLICIES)}")
    return parts


def diff_augment(x: torch.Tensor, policy: tuple[str, ...], rand) -> torch.Tensor:
    """rand(n) returns this rank's (b, n) uniform numbers in [0, 1).  It is called once, for all the
    policy's augmentations together: a Draws stream gives the same numbers to every call with the
    same step and purpose, so separate calls would tie translation and cutout to the same values."""
    used = [p for p in POLICIES if p in policy]
    if not used:
        return x
    r = rand(sum(_NUMBERS[p] for p in used))
    cols, k = {}, 0
    for p in used:
        cols[p], k = r[:, k:k + _NUMBERS[p]], k + _NUMBERS[p]
    if "color" in cols:
        x = _color(x, cols["color"].to(x.dtype))
    if "translation" in cols:
        x = _translation(x, cols["translation"])
    if "cutout" in cols:
        x = _cutout(x, cols["cutout"])
    return x


def _color(x, r):
    x = x + (r[:, 0, None, None, None] - 0.5)  # brightness
    m = x.mean(1, keepdim=True)
    x = (x - m) * (r[:, 1, None, None, None] * 2) + m  # saturation
    m = x.mean((1, 2, 3), keepdim=True)
    return (x - m) * (r[:, 2, None, None, None] + 0.5) + m  # contrast


def int_shift(r: torch.Tensor, size: int) -> torch.Tensor:
    """Integer shifts uniform in [-s, s], s = size/8 rounded."""
    s = int(size / 8 + 0.5)
    return (r * (2 * s + 1)).floor().long().clamp(max=2 * s) - s


def _translation(x, r):
    b, _, h, w = x.shape
    dev = x.device
    gy = torch.arange(h, device=dev)[None, :, None] - int_shift(r[:, 0], h).to(dev)[:, None, None]
    gx = torch.arange(w, device=dev)[None, None, :] - int_shift(r[:, 1], w).to(dev)[:, None, None]
    inside = ((gy >= 0) & (gy < h) & (gx >= 0) & (gx < w)).to(x.dtype)
    bi = torch.arange(b, device=dev)[:, None, None]
    # Output pixel (y, x) reads input (y - dy, x - dx): content moves by (dy, dx); what comes in is 0.
    return x[bi, :, gy.clamp(0, h - 1), gx.clamp(0, w - 1)].permute(0, 3, 1, 2) * inside[:, None]


def _cutout(x, r):
    _, _, h, w = x.shape
    dev = x.device
    ch, cw = int(h / 2 + 0.5), int(w / 2 + 0.5)
    # A centre anywhere in [0, size] (size + 1 places for even holes, as in the paper's code).
    cy = (r[:, 0] * (h + 1 - ch % 2)).floor().clamp(max=h - ch % 2).to(dev)
    cx = (r[:, 1] * (w + 1 - cw % 2)).floor().clamp(max=w - cw % 2).to(dev)
    ys = torch.arange(h, device=dev, dtype=torch.float32)[None, :, None] - (cy - ch // 2)[:, None, None]
    xs = torch.arange(w, device=dev, dtype=torch.float32)[None, None, :] - (cx - cw // 2)[:, None, None]
    hole = (ys >= 0) & (ys < ch) & (xs >= 0) & (xs < cw)
    return x * (~hole).to(x.dtype)[:, None]
