"""The train and eval IterableDatasets a DataLoader runs in its workers, and that DataLoader."""
from __future__ import annotations

import atexit
import functools
import os
import signal
import weakref

import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from gandist.data.shards.decode import Spec, collate, decoder
from gandist.data.shards.reader import Reader
from gandist.distributed import generator


def _worker_slot() -> int:
    info = get_worker_info()
    return info.id if info is not None else 0


class TrainStream(IterableDataset):
    """(uint8 images, labels, skipped, k) for k = start, start+1, ... forever; batch k is logical worker
    k mod W's, and worker `slot` starts at start + slot so the DataLoader's round robin keeps k in order."""

    def __init__(self, urls: list[str], spec: Spec, *, seed: int, rank: int, batch: int, batches_per_epoch: int,
                 workers: int, start: int = 0, shuffle_buffer: int = 1000, cache_dir: str = "", tag: str = ""):
        self.urls, self.spec, self.seed, self.rank, self.batch = urls, spec, seed, rank, batch
        self.bpe, self.W, self.start = batches_per_epoch, max(1, workers), start
        self.shuffle_buffer, self.cache_dir, self.tag = shuffle_buffer, cache_dir, tag or f"rank {rank}"

    def epoch_samples(self, reader: Reader, epoch: int, w: int):
        """Logical worker w's decoded samples of `epoch`: shards drawn with replacement and a shuffle
        buffer, both seeded by (seed, epoch, rank, w)."""
        s = generator(self.seed, epoch, f"shards rank {self.rank} worker {w}").initial_seed()
        shards = wds.ResampledShards(self.urls, seed=s, deterministic=True, worker_seed=lambda: 0)
        samples = reader.raw(iter(shards))
        if self.shuffle_buffer > 1:
            samples = wds.shuffle(self.shuffle_buffer, initial=min(self.shuffle_buffer, 100), seed=s)(samples)
        return reader.decoded(samples)

    def __iter__(self):
        slot = _worker_slot()
        w = (self.start + slot) % self.W
        reader = Reader(self.spec, self.cache_dir, f"{self.tag}, data worker {w}", len(self.urls), resampled=True)
        k, epoch, it = self.start + slot, None, None
        while True:
            e, i = divmod(k, self.bpe)
            if e != epoch:
                epoch, it = e, self.epoch_samples(reader, e, w)
                first = (w - e * self.bpe) % self.W  # this worker's first batch in epoch e
                for _ in range(len(range(first, i, self.W)) * self.batch):  # resuming mid-epoch: replay
                    next(it)
            items = [next(it)[0] for _ in range(self.batch)]
            images, labels = collate(items, self.spec)
            yield images, labels, reader.take_skipped(), k
            k += self.W


class EvalStream(IterableDataset):
    """This rank's shards (shard i -> rank i mod world), split across workers, in order: (images, labels,
    skipped, keys); a last item with images None carries trailing skips."""

    def __init__(self, urls: list[str], spec: Spec, *, rank: int, world: int, batch: int, cache_dir: str = "",
                 tag: str = ""):
        self.urls = urls[rank::world]
        self.spec, self.batch, self.cache_dir, self.tag = spec, batch, cache_dir, tag or f"rank {rank}"

    def _batch(self, buf: list, reader: Reader):
        return (*collate([it for it, _ in buf], self.spec), reader.take_skipped(), [k for _, k in buf])

    def __iter__(self):
        reader = Reader(self.spec, self.cache_dir, f"{self.tag}, data worker {_worker_slot()}", len(self.urls),
                        resampled=False)
        buf = []
        for item, key in reader.decoded(reader.raw(wds.split_by_worker(self.urls))):
            buf.append((item, key))
            if len(buf) == self.batch:
                yield self._batch(buf, reader)
                buf = []
        if buf:
            yield self._batch(buf, reader)
        if reader.skipped:
            yield None, None, reader.take_skipped(), []


def _ignore_stop_signals(worker_id: int):
    # SLURM signals every process of a step, and a terminal's Ctrl-C every process in its foreground group;
    # the training process decides when to stop (at a step boundary, after a checkpoint), so its loader
    # workers must not die of SIGTERM / SIGUSR1 / SIGINT first.
    for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(s, signal.SIG_IGN)


# Worker iterators still open (a training feed is never exhausted).  At exit multiprocessing SIGTERMs and joins
# their workers, which ignore SIGTERM, so the join would never end: they are shut down here first (an atexit
# hook registered after torch's and multiprocessing's runs before theirs).
_OPEN: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _shut_open_workers():
    for it in list(_OPEN):
        it._shutdown_workers()


def _shut_down(it, shutdown, owner: int):
    """torch's shutdown of `it`'s workers, then SIGKILL for any still alive: torch ends a worker that missed its
    stop message with SIGTERM, which ours ignore, and multiprocessing would then wait for it at exit for ever
    (seen after a worker's DataError, whose traceback kept the iterator until after its shutdown had begun).
    Only the process that started the workers may stop, test or kill them: a process forked later (another
    loader's worker) inherits a copy of the iterator, and its garbage collector may drop that copy."""
    if os.getpid() != owner:
        return
    shutdown()
    for w in getattr(it, "_workers", ()):
        if w.is_alive():
            os.kill(w.pid, signal.SIGKILL)
            w.join(5)


class _Loader(DataLoader):
    def _get_iterator(self):
        it = super()._get_iterator()
        if self.num_workers > 0:
            it._shutdown_workers = functools.partial(_shut_down, it, it._shutdown_workers, os.getpid())
            _OPEN.add(it)
        return it


def loader(ds: IterableDataset, workers: int, pin: bool, prefetch: int = 2) -> DataLoader:
    """The DataLoader around a stream (which batches itself); workers = 0 reads in this process."""
    decoder()
    return _Loader(ds, batch_size=None, num_workers=workers, pin_memory=pin,
                   prefetch_factor=prefetch if workers > 0 else None,
                   worker_init_fn=_ignore_stop_signals if workers > 0 else None)
