"""The run directory's layout: the name of every file a run leaves in <output.dir>, and the one reader and
writer of each of its plain files.  Training, plots, gandist-compare, gandist-sample and gandist-eval all go
through here, so a file's name and format live in one place.

Three parts have formats of their own and their own module, which alone names, writes and reads them:
checkpoints/ (training/checkpoint.py), lock.json (training/lock.py) and final/ (gandist/trained.py).
Readers here never raise for a torn or missing file: a run killed mid-write is still a run to look at.
"""
from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import yaml

from gandist.training.lock import LOCK
from gandist.utils.files import atomic_path, write_json_atomic, write_text_atomic

CONFIG = "config.yaml"  # the resolved config, loadable as a config file
RUN_INFO = "run.json"  # world size, each rank's host and device, versions, commit
METRICS = "metrics.jsonl"  # one row per log step (training) or evaluation
HISTORY = "history.jsonl"  # one row per start of the run (training/history.py says what they mean)
EVAL = "eval.json"  # gandist-eval's last scores
SAMPLES = "samples"  # the fixed-noise grids, progress.gif, gandist-sample's images
PLOTS = "plots"
PREEMPTED = "preempted.json"  # a signal made the run save and stop: a requeue resumes it
STOPPED = "stopped.json"  # Ctrl-C made it save and stop: nothing to requeue
DIVERGED = "diverged.json"  # the non-finite guard stopped it (exit 3)
MARKERS = (PREEMPTED, STOPPED, DIVERGED)
GRID = re.compile(r"^step_(\d{6,})\.png$")


# -- config.yaml and run.json ------------------------------------------------------------------------

def write_config(run_dir: Path, text: str):
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / CONFIG, text)


def read_config(run_dir: Path) -> dict:
    """config.yaml as a nested dict ({} when absent or unreadable).  Plain YAML, not config.load: a run's file
    records what ran, and stays readable after the schema changes."""
    try:
        data = yaml.safe_load((run_dir / CONFIG).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def write_run_info(run_dir: Path, info: dict):
    write_json_atomic(run_dir / RUN_INFO, info)


def is_run(directory: Path) -> bool:
    """Whether `directory` looks like a run directory (or the start of one)."""
    return any((directory / f).exists() for f in (CONFIG, METRICS, LOCK))


# -- metrics.jsonl -------------------------------------------------------------------------------------

def read_metrics(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(training rows, evaluation rows); a row torn by a kill is skipped."""
    train, evals = [], []
    for row in _rows(run_dir / METRICS):
        (train if "loss_d" in row else evals).append(row)
    return train, evals


def last_logged(run_dir: Path) -> tuple[int, float] | None:
    """The step and wall time of the last training row, or None."""
    rows, _ = read_metrics(run_dir)
    return (int(rows[-1]["step"]), float(rows[-1]["time"])) if rows else None


def truncate_metrics(run_dir: Path, start: int):
    """Keep the rows up to step `start`: those after it are the lost tail of an interrupted run."""
    f = run_dir / METRICS
    if not f.exists():
        return
    kept = [line for line, row in _lines(f) if isinstance(row.get("step"), (int, float)) and row["step"] <= start]
    with atomic_path(f) as tmp:
        tmp.write_text("".join(line + "\n" for line in kept))


class MetricsLog:
    """metrics.jsonl, open for appending (rank 0): one row a line, flushed at once, so a reader sees every
    row written so far."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / METRICS
        self._f = open(self.path, "a", buffering=1)

    @staticmethod
    def line(row: dict) -> str:
        return json.dumps(row) + "\n"

    def append(self, line: str):
        self._f.write(line)

    def close(self):
        self._f.close()


def _rows(path: Path) -> list[dict]:
    return [row for _, row in _lines(path)]


def _lines(path: Path) -> list[tuple[str, dict]]:
    """Each whole JSON row of a .jsonl file with its line; a row torn by a kill is left out."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            out.append((line, row))
    return out


# -- history.jsonl -------------------------------------------------------------------------------------

def read_history(run_dir: Path) -> list[dict]:
    return _rows(run_dir / HISTORY)


def append_history(run_dir: Path, row: dict):
    with open(run_dir / HISTORY, "a") as f:
        f.write(json.dumps(row) + "\n")


# -- the markers a run leaves when it stops early ------------------------------------------------------

def mark_stopped(run_dir: Path, step: int, signum: int, checkpoint: Path | None):
    """A stop signal made the run save and stop: STOPPED for Ctrl-C, PREEMPTED for the others (SIGTERM,
    SIGUSR1), which launchers that drop exit statuses read to requeue it."""
    write_json_atomic(run_dir / (STOPPED if signum == signal.SIGINT else PREEMPTED),
                      {"step": step, "signal": signum, "checkpoint": str(checkpoint) if checkpoint else None})


def mark_diverged(run_dir: Path, reason: str, last_good: Path | None):
    write_json_atomic(run_dir / DIVERGED, {"reason": reason, "checkpoint": str(last_good) if last_good else None})


def clear_markers(run_dir: Path):
    for marker in MARKERS:
        (run_dir / marker).unlink(missing_ok=True)


def read_stop(run_dir: Path) -> dict | None:
    """The stop marker's record ({} when it is there but torn), or None without one."""
    for name in (PREEMPTED, STOPPED):
        if (run_dir / name).is_file():
            try:
                mark = json.loads((run_dir / name).read_text())
                return mark if isinstance(mark, dict) else {}
            except (OSError, ValueError):
                return {}
    return None


def read_diverged(run_dir: Path) -> str | None:
    """The divergence marker's reason ('' when it is there but torn), or None without one."""
    f = run_dir / DIVERGED
    if not f.is_file():
        return None
    try:
        return str(json.loads(f.read_text()).get("reason") or "")
    except (OSError, ValueError, AttributeError):
        return ""


# -- eval.json, samples/ and plots/ --------------------------------------------------------------------

def write_eval(run_dir: Path, record: dict) -> Path:
    write_json_atomic(run_dir / EVAL, record)
    return run_dir / EVAL


def grid_path(run_dir: Path, step: int) -> Path:
    """The fixed-noise sample grid of `step`."""
    return run_dir / SAMPLES / f"step_{step:06d}.png"


def grids(run_dir: Path) -> list[Path]:
    """Every sample grid, in step order."""
    return sorted((p for p in (run_dir / SAMPLES).glob("step_*.png") if GRID.match(p.name)), key=lambda p: p.name)


def progress_gif(run_dir: Path) -> Path:
    return run_dir / SAMPLES / "progress.gif"


def plot_path(run_dir: Path, name: str) -> Path:
    return run_dir / PLOTS / f"{name}.png"
