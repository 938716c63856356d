"""The embedded dataset: coloured shapes on textured backgrounds, 10 classes (class i % 10), no download.

Image i is a pure function of (seed, i): drawn from PCG64 seeded by [seed, i] and rendered with only
+ - * abs floor and comparisons in float64, exact under IEEE, so every machine and rank gets the same bytes.
"""
from __future__ import annotations

import numpy as np
import torch

CLASSES = ("disk", "square", "triangle", "diamond", "ring", "plus", "hbar", "vbar", "x", "frame")
_SS = 2  # supersampling factor per axis, for anti-aliased edges


def _shape_mask(k: int, dx: np.ndarray, dy: np.ndarray, s: float) -> np.ndarray:
    ax, ay = np.abs(dx), np.abs(dy)
    r2, m = dx * dx + dy * dy, np.maximum(ax, ay)
    if k == 0:
        return r2 < s * s
    if k == 1:
        return m < 0.85 * s
    if k == 2:
        return (dy < 0.75 * s) & (dy > -s + 2.0 * ax)
    if k == 3:
        return ax + ay < 1.15 * s
    if k == 4:
        return (r2 < s * s) & (r2 > 0.36 * s * s)
    if k == 5:
        return ((ax < 0.3 * s) & (ay < s)) | ((ay < 0.3 * s) & (ax < s))
    if k == 6:
        return (ax < 1.2 * s) & (ay < 0.35 * s)
    if k == 7:
        return (ay < 1.2 * s) & (ax < 0.35 * s)
    if k == 8:
        return (np.abs(ax - ay) < 0.28 * s) & (m < s)
    return (m < s) & (m > 0.6 * s)


def render(seed: int, index: int, resolution: int = 32, channels: int = 3) -> tuple[np.ndarray, int]:
    """Image `index` of the dataset `seed`: (uint8 array (C, H, W), class label)."""
    rng = np.random.default_rng([seed, index])
    label = index % 10
    n = resolution * _SS
    c = (np.arange(n, dtype=np.float64) + 0.5) / n
    v, u = c[:, None] * np.ones((1, n)), np.ones((n, 1)) * c[None, :]

    # Background: a dim colour textured by low-contrast stripes, a checkerboard or a gradient
    # (faint and coarse, so the shape stays the dominant structure for a minutes-long CPU demo).
    bg1 = rng.random(3) * 0.45
    bg2 = bg1 + (rng.random(3) * 0.45 - bg1) * 0.15
    kind, freq = int(rng.integers(3)), float(rng.integers(1, 4))
    a, b = rng.random() * 2.0 - 1.0, rng.random() * 2.0 - 1.0
    if kind == 0:
        t = (u * a + v * b) * freq
        pattern = (t - np.floor(t) < 0.5).astype(np.float64)
    elif kind == 1:
        pattern = ((np.floor(u * freq) + np.floor(v * freq)) % 2).astype(np.float64)
    else:
        pattern = np.clip(0.5 + (u - 0.5) * a + (v - 0.5) * b, 0.0, 1.0)
    img = bg1[:, None, None] + (bg2 - bg1)[:, None, None] * pattern[None]

    # Foreground: one large bright shape of the class near the centre, random size and colour.
    cx, cy = 0.45 + 0.1 * rng.random(), 0.45 + 0.1 * rng.random()
    s = 0.3 + 0.1 * rng.random()
    fg = 0.55 + 0.45 * rng.random(3)
    fg[int(rng.integers(3))] *= 0.3 * rng.random()  # damp one channel: saturated, varied hues
    mask = _shape_mask(label, u - cx, v - cy, s).astype(np.float64)
    img = img * (1.0 - mask[None]) + fg[:, None, None] * mask[None]

    img = img.reshape(3, resolution, _SS, resolution, _SS).mean((2, 4))
    if channels == 1:
        img = (img[0] * 0.25 + img[1] * 0.5 + img[2] * 0.25)[None]
    return np.floor(np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), label


class SyntheticDataset(torch.utils.data.Dataset):
    """Map-style view of the embedded dataset; renders on demand and keeps what it rendered."""

    def __init__(self, size: int, resolution: int = 32, channels: int = 3, seed: int = 0,
                 cache_bytes: int = 512 << 20):
        self.size, self.resolution, self.channels, self.seed = size, resolution, channels, seed
        self._cache: dict[int, tuple[torch.Tensor, int]] = {}
        self._cache_items = cache_bytes // (channels * resolution * resolution)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for the embedded dataset of {self.size}")
        hit = self._cache.get(index)
        if hit is None:
            arr, label = render(self.seed, index, self.resolution, self.channels)
            hit = (torch.from_numpy(arr), label)
            if len(self._cache) < self._cache_items:
                self._cache[index] = hit
        return hit
