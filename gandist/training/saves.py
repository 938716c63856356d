"""A run's checkpoint saves: when (every checkpoint.every steps, and checkpoint.every_minutes of wall time,
agreed at a log step), whether the disk has room for them, and what each took (size, seconds)."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from gandist.training import checkpoint
from gandist.training.disk import estimate_checkpoint, human, size, warn_if_low, writing


class Saves:
    """The run's checkpoints against the clock and the space left: `due()` once checkpoint.every_minutes have
    passed since the last save; a warning at start when fewer than two checkpoints fit, and before a save
    that may not; each save timed and measured, and its failure for lack of space made a DiskFull with its
    partial directory removed."""

    def __init__(self, run_dir: Path, models, cfg, say, main: bool):
        newest = checkpoint.latest(run_dir)
        self.run_dir, self.keep, self.say, self.main = run_dir, cfg.checkpoint.keep, say, main
        self.every_s, self.every_steps = cfg.checkpoint.every_minutes * 60, cfg.checkpoint.every
        self.needed = size(newest) if newest else estimate_checkpoint(models)
        self.last = time.monotonic()
        if main:
            warn_if_low(run_dir, self.needed, 2, say)

    def due(self) -> bool:
        """This rank's clock says a time-based checkpoint is due (the ranks agree on it at the next log step)."""
        return bool(self.every_s) and time.monotonic() - self.last >= self.every_s

    def save(self, step: int, save) -> tuple[Path | None, str]:
        """`save()` (collective) for the checkpoint of `step`; its path (None: not saved) and 'size, seconds'."""
        tmp = checkpoint.scratch(self.run_dir, step)
        if self.main:
            warn_if_low(self.run_dir, self.needed, 1, self.say)
        t0 = time.perf_counter()
        with writing("checkpoint", tmp, self.needed, self.keep, self.run_dir,
                     cleanup=lambda: shutil.rmtree(tmp, ignore_errors=True)):
            path = save()
        self.last = time.monotonic()
        took = time.perf_counter() - t0
        if path is None:
            return None, ""
        self.needed = size(path)
        return path, f"{human(self.needed)}, {took:.1f} s"

    def at_most_lost(self) -> str:
        """What a failure can cost: the work since the last checkpoint."""
        minutes = f" or {self.every_s / 60:g} minutes" if self.every_s else ""
        first = ", whichever comes first" if self.every_s else ""
        return f"at most {self.every_steps} steps{minutes} of training{first} (what came after the last checkpoint)"
