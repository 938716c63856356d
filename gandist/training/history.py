"""The run's starts, one JSON row each in <output.dir>/history.jsonl, and what each restart cost.

An elastic run changes size when a node is lost or comes back, and a preempted one starts again later: each
start records its step, world size, hosts, the launcher's restart count, the checkpoint it resumed, and --
once its first step is done -- the time lost (from the last step logged before it to its own first step)
and the steps replayed (those logged after the checkpoint it resumed, trained again).  The end summary lists
the membership changes and the time lost over the whole run.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from gandist.training import run_dir as layout


class History:
    """Rank 0's record of this start."""

    def __init__(self, run_dir: Path, start: int, world: int, ranks: list[dict], resumed_from: Path | None,
                 before: tuple[int, float] | None, main: bool):
        """`before`: the step and time of the last row logged before this start."""
        self.run_dir, self.main = run_dir, main
        self.row = {"step": start, "world_size": world, "hosts": sorted({r["host"] for r in ranks}),
                    "restart": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)),
                    "resumed_from": str(resumed_from) if resumed_from else None,
                    "started": time.time(), "steps_replayed": max(before[0] - start, 0) if before else 0}
        self.before = before
        self.written = False

    def first_step(self):
        """Rank 0, after this start's first step: the time lost since the last step logged before it."""
        if not self.main or self.written:
            return
        self.written = True
        self.row["first_step"] = time.time()
        self.row["time_lost_s"] = round(self.row["first_step"] - self.before[1], 1) if self.before else 0.0
        layout.append_history(self.run_dir, self.row)

    def summary(self) -> list[tuple[str, str]]:
        """Rows for the end summary: the world sizes the run went through, and the time restarts lost."""
        starts = layout.read_history(self.run_dir)
        if len(starts) < 2:
            return []
        sizes = " -> ".join(f"{s['world_size']} at step {s['step']}" for s in starts)
        lost = sum(s.get("time_lost_s", 0.0) for s in starts)
        replayed = sum(s.get("steps_replayed", 0) for s in starts)
        return [("starts", f"{len(starts)}; world size {sizes} ({layout.HISTORY})"),
                ("lost to restarts", f"{lost:.0f} s, {replayed} steps trained again")]
