"""Evaluation mode: this rank's share of the shards' samples, each exactly once across ranks x
DataLoader workers, in shard order (the real images FID/KID compare with, gandist-eval, benchmarks)."""
from __future__ import annotations

from gandist.data.shards.decode import Spec
from gandist.data.shards.index import find_index
from gandist.data.shards.io import expand_urls
from gandist.data.shards.streams import EvalStream, loader
from gandist.distributed import where


class EvalBatches:
    """(uint8 images, labels[, keys]) covering this rank's share exactly once; `skipped` counts what was corrupt."""

    def __init__(self, urls, rank: int, world: int, batch_size: int, workers: int = 2, *, label_key: str | None = "cls",
                 attributes=(), resolution: int | None = None, channels: int | None = None, cache_dir: str = "",
                 with_keys: bool = False, pin_memory: bool = False):
        self.urls = expand_urls(urls)
        if resolution is None or channels is None:
            meta, _ = find_index(self.urls)
            resolution = resolution or meta.get("resolution")
            channels = channels or meta.get("channels")
        spec = Spec(resolution, channels, label_key if label_key in ("cls", "attr") else None, tuple(attributes or ()))
        self.ds = EvalStream(self.urls, spec, rank=rank, world=world, batch=batch_size, cache_dir=cache_dir,
                             tag=where(rank))
        self.workers = min(workers, len(self.ds.urls))  # a worker without a shard would only start up
        self.with_keys, self.pin = with_keys, pin_memory
        self.skipped = 0

    def __iter__(self):
        self.skipped = 0
        if not self.ds.urls:
            return
        for images, labels, skipped, keys in loader(self.ds, self.workers, self.pin):
            self.skipped += skipped
            if images is None:
                continue
            yield (images, labels, keys) if self.with_keys else (images, labels)


def eval_batches(urls, rank: int, world: int, batch_size: int, workers: int = 2, **kw) -> EvalBatches:
    return EvalBatches(urls, rank, world, batch_size, workers, **kw)


def eval_batches_for(cfg, rank: int, world: int, batch_size: int, urls: str | None = None) -> EvalBatches:
    """eval_batches with the run config's data settings (urls default to data.urls)."""
    d = cfg.data
    attr = d.label_key == "attr" and bool(d.attributes)
    return EvalBatches(urls or d.urls, rank, world, batch_size, d.workers, label_key="attr" if attr else "cls",
                       attributes=d.attributes if attr else (), resolution=d.resolution, channels=d.channels,
                       cache_dir=d.cache_dir)
