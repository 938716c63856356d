"""The embedded dataset (gandist.data.synthetic) written as shards: image i is render(seed, i)."""
from __future__ import annotations

from pathlib import Path

from gandist.data.errors import PrepareError
from gandist.data.sources import Options, Source, Split, sample
from gandist.data.synthetic import CLASSES, render


def process(item) -> dict:
    i, seed, resolution, channels = item
    arr, label = render(seed, i, resolution, channels)
    return sample(f"{i:07d}", arr[0] if channels == 1 else arr.transpose(1, 2, 0), cls=label)


def open_source(opt: Options) -> Source:
    resolution, channels = opt.resolution or 32, opt.channels or 3
    if resolution not in (32, 64):
        raise PrepareError(f"synthetic: the embedded dataset is made at 32 or 64 px, not {resolution}")
    if opt.size < 1:
        raise PrepareError(f"synthetic: --size must be at least 1, not {opt.size}")

    def item(i):
        return i, opt.seed, resolution, channels

    splits = {"train": Split("train", opt.size, item, process)} if opt.wants("train") else {}
    return Source("synthetic", resolution, channels, splits, [], opt.src or Path("."),
                  classes=list(CLASSES), preprocessing={"size": opt.size, "seed": opt.seed})
