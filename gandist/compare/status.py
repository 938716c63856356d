"""How a run stands, judged from its own files only (so it works for a run on another node, a finished job or a
copied-out run directory), first match wins:

    running    lock.json's heartbeat is fresh (training/lock.py refreshes it every few seconds while it trains)
    done       final/ holds the weights and the run reached train.steps
    preempted  preempted.json: a signal made it save and stop (exit 75); a requeue or re-run resumes it; or
               stopped.json: Ctrl-C made it save and stop (exit 130); a re-run resumes it
    diverged   diverged.json (gandist.train leaves it on exit 3), or, for a run from before it, its last logged
               losses are not finite: the non-finite guard stopped it
    failed     it started but ended otherwise: a stale lock (killed, a lost node), or it stopped before
               train.steps (an error, Ctrl-C)
    pending    nothing there yet (a sweep member not started)
"""
from __future__ import annotations

import math
import signal
from dataclasses import dataclass
from pathlib import Path

from gandist.config import Config
from gandist.trained import WEIGHTS, final_dir
from gandist.training import checkpoint, lock
from gandist.training import run_dir as layout

STATES = ("running", "done", "preempted", "diverged", "failed", "pending")
FINISHED = ("done", "diverged")  # a verdict: re-running the same settings would not change it


@dataclass(frozen=True)
class Status:
    state: str  # one of STATES
    detail: str  # in words, for the table's notes
    step: int  # the last step the run logged (0: none)
    total: int | None  # its train.steps (None: unknown)


def _lock(run_dir: Path, stale_s: float) -> tuple[dict | None, float | None, bool]:
    """(record, heartbeat age in s, fresh) of the run's lock.json; age None: there is none."""
    held, age = lock.read(run_dir / lock.LOCK)
    if age is None:
        return None, None, False
    return held, age, lock.beating(age, stale_s)


def diverged(run_dir: Path, train_rows: list[dict]) -> str | None:
    """Why the run counts as diverged, or None."""
    reason = layout.read_diverged(run_dir)
    if reason is not None:
        return reason or "stopped by the non-finite guard"
    last = train_rows[-1] if train_rows else {}
    bad = [k for k in ("loss_d", "loss_g") if k in last and not math.isfinite(last[k])]
    if bad:
        return f"{' and '.join(bad)} not finite at step {last['step']} ({last.get('bad_steps', 0):.0f} bad steps)"
    return None


def of(run_dir: str | Path, total: int | None = None, rows: tuple[list, list] | None = None) -> Status:
    """The run's status.  total: the steps it must reach to be done (default: its config.yaml's train.steps; a
    sweep passes its member's, which may have been raised since).  rows: its metrics (run_dir.read_metrics)."""
    run_dir = Path(run_dir)
    cfg = layout.read_config(run_dir)
    train = cfg.get("train", {}) if isinstance(cfg.get("train"), dict) else {}
    total = total if total is not None else train.get("steps")
    stale_s = (cfg.get("output") or {}).get("lock_stale_s", Config().output.lock_stale_s)
    train_rows, _ = rows if rows is not None else layout.read_metrics(run_dir)
    newest = checkpoint.latest(run_dir)
    steps = ([train_rows[-1]["step"]] if train_rows else []) + ([checkpoint.step_of(newest)] if newest else [])
    step = max(steps, default=0)

    held, age, fresh = _lock(run_dir, stale_s)
    if fresh:
        return Status("running", f"holder {lock.describe(held, age)}", step, total)
    if (final_dir(run_dir) / WEIGHTS["generator"]).is_file() and total is not None and step >= total:
        return Status("done", "", step, total)
    mark = layout.read_stop(run_dir)
    if mark is not None:
        try:
            sig = "Ctrl-C" if mark["signal"] == signal.SIGINT else signal.Signals(mark["signal"]).name
            return Status("preempted", f"{sig} at step {mark['step']}; resumes from {mark.get('checkpoint')}",
                          step, total)
        except (ValueError, KeyError, TypeError):
            return Status("preempted", "stopped by a signal with a checkpoint", step, total)
    why = diverged(run_dir, train_rows)
    if why:
        return Status("diverged", why, step, total)
    if age is not None:
        return Status("failed", f"killed or lost: its lock's heartbeat stopped ({lock.describe(held, age)})",
                      step, total)
    if cfg or train_rows:
        return Status("failed", f"ended at step {step} of {total} without finishing, being preempted or "
                                f"diverging (an error or Ctrl-C: see its log)", step, total)
    return Status("pending", "not started", 0, total)
