"""Training mode: ShardFeed gives this rank's batch of D-step j, a pure function of (seed, k, rank, workers),
so that a resumed run reads what the uninterrupted one read."""
from __future__ import annotations

import logging

import torch

from gandist.data.errors import BadSample, DataError
from gandist.data.shards.decode import Spec, decode, where_sample
from gandist.data.shards.index import check_index, encoding_of, find_index, total_samples
from gandist.data.shards.io import expand_urls, is_local, local_path
from gandist.data.shards.reader import Reader
from gandist.data.shards.streams import TrainStream, loader
from gandist.data.tensors import condition, to_images
from gandist.distributed import on_gpu, share, where

log = logging.getLogger("gandist.data")


def train_spec(cfg, here: str) -> Spec:
    """What a training sample must be, from the config: its size, and the labels conditioning needs."""
    d = cfg.data
    cond = cfg.model.conditioning != "none"
    attr = d.label_key == "attr"
    if d.label_key not in ("cls", "attr", "cluster"):
        raise DataError(f"data.label_key: {d.label_key!r} is not 'cls', 'attr' or 'cluster' ({here})")
    if cond and attr and not d.attributes:
        raise DataError(f"data.attributes: data.label_key is 'attr' but no attributes are chosen ({here})")
    return Spec(d.resolution, d.channels, ("attr" if attr else "cls") if cond else None,
                tuple(d.attributes) if attr else (), d.num_classes if not attr else 0, require_labels=cond,
                class_key="cluster" if d.label_key == "cluster" else "cls")


class ShardFeed:
    """SyntheticFeed's interface over shards: batch(j) -> (images in [-1, 1] on the device, conditions or None)."""

    def __init__(self, cfg, rank: int, world: int, device):
        self.cfg, self.device, self.rank = cfg, torch.device(device), rank
        self.here = where(rank)
        self.urls = expand_urls(cfg.data.urls)
        self.spec = train_spec(cfg, self.here)
        self.local_b = len(share(cfg.train.batch_size, rank, world))
        meta, total = self._inspect()
        self.total = total
        self.bpe = max(1, total // cfg.train.batch_size)
        self.skipped = 0
        self._next, self._it = 0, None
        self.description = (f"{meta.get('source') or 'shards'}: {total} images in {len(self.urls)} shard(s), "
                            f"{cfg.data.resolution} px, {cfg.data.channels} channel(s); an epoch is {self.bpe} "
                            f"batches of {cfg.train.batch_size}"
                            # without an index.json there is nothing to say: each sample's member tells
                            + (f"; stored as {encoding_of(meta)}" if meta else ""))

    def _inspect(self) -> tuple[dict, int]:
        """Check the shards against the config before any worker starts; return (index metadata, samples)."""
        d, here = self.cfg.data, self.here
        missing = [u for u in self.urls if is_local(u) and not local_path(u).is_file()]
        if len(missing) == len(self.urls):
            raise DataError(f"data.urls: none of the {len(self.urls)} shard(s) exist, e.g. {missing[0]} ({here})")
        if missing and self.rank == 0:
            log.warning("data.urls: %d of %d shards do not exist (e.g. %s); they will be skipped",
                        len(missing), len(self.urls), missing[0])
        meta, counts = find_index(self.urls)
        check_index(meta, d, self.spec.labels, here)
        present = [u for u in self.urls if u not in missing]
        total = total_samples(present, counts, d.cache_dir, here, announce=self.rank == 0)
        if total == 0:
            raise DataError(f"data.urls: the {len(present)} shard(s) hold no readable samples ({here})")
        self._probe(present)
        return meta, total

    def _probe(self, urls: list[str], tries: int = 20):
        """Fail clearly now if none of the first `tries` samples is usable (a systematic mismatch), rather
        than skip every sample."""
        reader = Reader(self.spec, self.cfg.data.cache_dir, self.here, len(urls), resampled=False)
        reader.problem = lambda what: True  # quiet: the workers will log corrupt samples
        first = None
        for n, s in enumerate(reader.raw(urls[:3])):
            try:
                decode(s, self.spec)
                return
            except BadSample as e:
                first = first or f"{where_sample(s)}: {e}"
            if n + 1 >= tries:
                break
        if first is not None:  # (nothing readable at all in the first shards: the workers will say so)
            raise DataError(f"{first} ({self.here})")

    def _start(self, k: int):
        d = self.cfg.data
        ds = TrainStream(self.urls, self.spec, seed=self.cfg.train.seed, rank=self.rank, batch=self.local_b,
                         batches_per_epoch=self.bpe, workers=d.workers, start=k, shuffle_buffer=d.shuffle_buffer,
                         cache_dir=d.cache_dir, tag=self.here)
        self._it = None  # shut the old workers down first
        self._it = iter(loader(ds, d.workers, on_gpu(self.cfg.perf.pin_memory, self.device), prefetch=d.prefetch))
        self._next = k

    def batch(self, j: int):
        if self._it is None or j != self._next:
            self._start(j)
        images, labels, skipped, k = next(self._it)
        if k != j:
            raise RuntimeError(f"data: expected batch {j} from the loader, got {k} ({self.here})")
        self.skipped += skipped
        self._next = j + 1
        return to_images(images, self.device), condition(labels, self.cfg, self.device)

    def state_dict(self) -> dict:
        return {"next_batch": self._next, "epoch": self._next // self.bpe, "batch_in_epoch": self._next % self.bpe,
                "batches_per_epoch": self.bpe, "skipped": self.skipped}

    def load_state_dict(self, state: dict):
        if not state or "next_batch" not in state:
            return
        if state.get("batches_per_epoch") not in (None, self.bpe) and self.rank == 0:
            log.warning("data: the checkpoint's epochs were %s batches, now %s (the shards changed?)",
                        state.get("batches_per_epoch"), self.bpe)
        self._next, self.skipped = int(state["next_batch"]), int(state.get("skipped", 0))
        self._it = None
