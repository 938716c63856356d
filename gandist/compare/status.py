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

import json
import math
import signal
from dataclasses import dataclass
from pathlib import Path

import yaml

from gandist.config import Config
from gandist.training import checkpoint, lock
from gandist.training.plots import read_metrics
from gandist.training.run_dir import DIVERGED, METRICS, PREEMPTED, STOPPED

STATES = ("running", "done", "preempted", "diverged", "failed", "pending")
FINISHED = ("done", "diverged")  # a verdict: re-running the same settings would not change it
FINAL = Path("final") / "generator.safetensors"


@dataclass(frozen=True)
class Status:
    state: str  # one of STATES
    detail: str  # in words, for the table's notes
    step: int  # the last step the run logged (0: none)
    total: int | None  # its train.steps (None: unknown)


def read_config(run_dir: Path) -> dict:
    """The run's config.yaml as a nested dict ({} when absent or unreadable).  Read as plain YAML, not through
    config.load: a run's file is a record of what ran, and must stay readable after the schema changes."""
    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _lock(run_dir: Path, stale_s: float) -> tuple[dict | None, float | None, bool]:
    """(record, heartbeat age in s, fresh) of the run's lock.json; age None: there is none."""
    held, age = lock.read(run_dir / lock.LOCK)
    if age is None:
        return None, None, False
    # a live holder refreshes it every beat; three missed beats is what a restart of the same job waits for
    return held, age, age <= 3 * lock.beat(stale_s)


def diverged(run_dir: Path, train_rows: list[dict]) -> str | None:
    """Why the run counts as diverged, or None."""
    f = run_dir / DIVERGED
    if f.is_file():
        try:
            return json.loads(f.read_text()).get("reason") or "stopped by the non-finite guard"
        except (OSError, ValueError, AttributeError):
            return "stopped by the non-finite guard"
    last = train_rows[-1] if train_rows else {}
    bad = [k for k in ("loss_d", "loss_g") if k in last and not math.isfinite(last[k])]
    if bad:
        return f"{' and '.join(bad)} not finite at step {last['step']} ({last.get('bad_steps', 0):.0f} bad steps)"
    return None


def of(run_dir: str | Path, total: int | None = None, rows: tuple[list, list] | None = None) -> Status:
    """The run's status.  total: the steps it must reach to be done (default: its config.yaml's train.steps; a
    sweep passes its member's, which may have been raised since).  rows: its metrics (plots.read_metrics)."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    train = cfg.get("train", {}) if isinstance(cfg.get("train"), dict) else {}
    total = total if total is not None else train.get("steps")
    stale_s = (cfg.get("output") or {}).get("lock_stale_s", Config().output.lock_stale_s)
    train_rows, _ = rows if rows is not None else read_metrics(run_dir / METRICS)
    newest = checkpoint.latest(run_dir)
    steps = ([train_rows[-1]["step"]] if train_rows else []) + ([checkpoint.step_of(newest)] if newest else [])
    step = max(steps, default=0)

    held, age, fresh = _lock(run_dir, stale_s)
    if fresh:
        return Status("running", f"holder {lock.describe(held, age)}", step, total)
    if (run_dir / FINAL).is_file() and total is not None and step >= total:
        return Status("done", "", step, total)
    marker = next((run_dir / m for m in (PREEMPTED, STOPPED) if (run_dir / m).is_file()), None)
    if marker is not None:
        try:
            mark = json.loads(marker.read_text())
            sig = "Ctrl-C" if mark["signal"] == signal.SIGINT else signal.Signals(mark["signal"]).name
            return Status("preempted", f"{sig} at step {mark['step']}; resumes from {mark.get('checkpoint')}",
                          step, total)
        except (OSError, ValueError, KeyError, TypeError):
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
