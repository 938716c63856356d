"""What `python -m gandist.bench train` times with: pre-made device batches behind gandist's feed
interface, and interleaved timing of several training loops."""
from __future__ import annotations

import resource
import time

import torch

PREMADE = 4  # distinct device batches cycled through by the timed loops


class DeviceFeed:
    """A feed with gandist's interface (batch(j) -> (images, labels), skipped, state_dict) serving a few
    batches made beforehand and kept on the device: the step is timed without the reader."""

    def __init__(self, batches: list):
        self.batches, self.skipped = batches, 0
        self.description = f"{len(batches)} pre-made batches on the device"

    @classmethod
    def take(cls, feed, n: int) -> "DeviceFeed":
        made = cls([feed.batch(j) for j in range(n)])
        feed.load_state_dict(feed.state_dict())  # a ShardFeed drops its workers: none read ahead while others are timed
        return made

    def batch(self, j: int):
        return self.batches[j % len(self.batches)]

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict):
        pass


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(loops: dict, warmup: int, steps: int, device: torch.device) -> tuple[dict, dict]:
    """(seconds, peak MB) per loop for `steps` rounds after `warmup` untimed ones each.  The timed rounds
    are interleaved, one of each loop in turn, so that all of them see the same load from whatever else
    the machine runs; on CUDA each loop's peak is its own (reset before each of its rounds)."""
    for fn in loops.values():
        for s in range(warmup):
            fn(s)
    sync(device)
    seconds, peaks = dict.fromkeys(loops, 0.0), dict.fromkeys(loops, 0.0)
    for s in range(warmup, warmup + steps):
        for name, fn in loops.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            fn(s)
            sync(device)
            seconds[name] += time.perf_counter() - t0
            peaks[name] = max(peaks[name], peak_mb(device))
    return seconds, peaks


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
