"""The run directory's lifecycle: where a run starts from, what a fresh start or a resume clears, the
files that describe the run (config.yaml, run.json), and the mark a preempted run leaves.

Rank 0 is the one writer, and the lock it holds (`locked`) keeps any other run out; every decision here
is made before any training work, and a refusal (ConfigError) comes before any file is touched.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import accelerate
import torch

from gandist import __version__, config
from gandist.cli import ConfigError
from gandist.distributed import broadcast_object, gather_object
from gandist.training import checkpoint, lock
from gandist.utils.files import atomic_path, write_json_atomic, write_text_atomic

PREEMPTED = "preempted.json"  # left by a run stopped by a signal, for launchers that drop exit statuses
STOPPED = "stopped.json"  # left by a run stopped by Ctrl-C (not a preemption: nothing to requeue), for gandist-compare
DIVERGED = "diverged.json"  # left by a run the non-finite guard stopped (exit 3): gandist-compare reads it
METRICS = "metrics.jsonl"
HISTORY = "history.jsonl"  # the run's starts (training/history.py)


@contextmanager
def locked(cfg, acc):
    """Collective: rank 0 holds the run directory's lock for the block (training/lock.py) and yields it (the
    other ranks: None).  A refusal is raised on every rank alike, before any file of the run is touched."""
    held, refusal = None, None
    if acc.is_main_process:
        try:
            held = lock.acquire(Path(cfg.output.dir), cfg.output.lock_stale_s, say=lambda m: print(f"gandist: {m}"))
        except lock.RunDirBusy as e:
            refusal = str(e)
    refusal = broadcast_object(refusal)
    if refusal:
        raise lock.RunDirBusy(refusal)
    try:
        yield held
    finally:
        if held is not None:
            held.release()


def decide_resume(cfg, run_dir: Path) -> Path | None:
    """Which checkpoint to start from, decided before any work; may refuse to overwrite a run."""
    r = cfg.train.resume
    if r == "no":
        if checkpoint.complete(run_dir) and not cfg.train.overwrite:
            raise ConfigError(f"train.resume: output.dir {run_dir} holds checkpoints; use train.resume=auto to "
                              f"continue that run, or train.overwrite=true to start afresh there")
        return None
    if r == "auto":
        path = checkpoint.latest(run_dir)
        if path is None:
            return None
        step = checkpoint.step_of(path)
    else:
        path = Path(r)
        if not path.is_dir():
            raise ConfigError(f"train.resume: checkpoint {path} does not exist (expected a checkpoint directory, "
                              f"a run directory, 'auto' or 'no')")
        if not (path / "trainer.json").exists() and checkpoint.latest(path) is not None:
            path = checkpoint.latest(path)  # a run directory: its newest checkpoint
        step = checkpoint.read_trainer_state(path)["step"]
        newer = [p.name for p in checkpoint.complete(run_dir) if checkpoint.step_of(p) > step]
        if newer and not cfg.train.overwrite:
            raise ConfigError(f"train.resume: output.dir {run_dir} holds checkpoints newer than {path} "
                              f"({', '.join(newer)}); continuing from step {step} there would mix two histories. "
                              f"Use another output.dir, or train.overwrite=true to delete them")
    if step > cfg.train.steps:
        raise ConfigError(f"train.steps: {cfg.train.steps} is below the step of checkpoint {path} ({step}); "
                          f"raise train.steps to continue the run")
    return path


def prepare(cfg, run_dir: Path, resume_from: Path | None):
    """Rank 0, before any work: clear what the chosen start point makes obsolete."""
    if cfg.train.resume == "no" and cfg.train.overwrite:
        shutil.rmtree(checkpoint.checkpoints_dir(run_dir), ignore_errors=True)
        (run_dir / METRICS).unlink(missing_ok=True)
        (run_dir / HISTORY).unlink(missing_ok=True)
    if resume_from is not None and cfg.train.overwrite:
        checkpoint.remove_after(run_dir, checkpoint.read_trainer_state(resume_from)["step"])
    for marker in (PREEMPTED, STOPPED, DIVERGED):
        (run_dir / marker).unlink(missing_ok=True)


def open_run(cfg, acc) -> Path | None:
    """Collective: decide where the run starts (every rank, the same answer) and prepare its directory."""
    run_dir = Path(cfg.output.dir)
    resume_from = decide_resume(cfg, run_dir)
    if acc.is_main_process:
        prepare(cfg, run_dir, resume_from)
    acc.wait_for_everyone()
    return resume_from


def truncate_metrics(run_dir: Path, start: int):
    """Rows logged after the step we start from belong to the lost tail of an interrupted run."""
    f = run_dir / METRICS
    if not f.exists():
        return
    kept = []
    for line in f.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= start:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            pass  # a row torn by a kill
    with atomic_path(f) as tmp:
        tmp.write_text("".join(line + "\n" for line in kept))


def git_commit() -> str | None:
    """The commit the code comes from: GANDIST_GIT_COMMIT when set (the Docker image records it at build
    time, having no .git), else `git rev-parse HEAD` in the package's checkout; None when neither says."""
    recorded = os.environ.get("GANDIST_GIT_COMMIT", "").strip()
    if recorded:
        return recorded
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return (out.stdout.strip() or None) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def write_run_files(cfg, acc, run_dir: Path) -> list[dict]:
    """Collective: config.yaml and run.json (world size, each rank's host and device, versions, commit);
    returns every rank's {rank, host, device, local_rank}."""
    me = {"rank": acc.process_index, "host": socket.gethostname(), "device": str(acc.device),
          "local_rank": acc.local_process_index}
    ranks = [r for part in gather_object([me]) for r in part]
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", config.dump(cfg))
        info = {"world_size": acc.num_processes, "ranks": ranks, "distributed_type": str(acc.distributed_type),
                "mixed_precision": cfg.train.mixed_precision,
                "versions": {"gandist": __version__, "torch": torch.__version__,
                             "accelerate": accelerate.__version__, "python": platform.python_version()},
                "git_commit": git_commit(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_json_atomic(run_dir / "run.json", info)
    return ranks


def start(cfg, acc, run_dir: Path, start_step: int) -> list[dict]:
    """Collective, once the start step is known: drop the metrics rows after it, write the run files;
    returns every rank's host and device."""
    if acc.is_main_process:
        truncate_metrics(run_dir, start_step)
    return write_run_files(cfg, acc, run_dir)


def mark_diverged(run_dir: Path, reason: str, last_good: Path | None):
    write_json_atomic(run_dir / DIVERGED, {"reason": reason, "checkpoint": str(last_good) if last_good else None})


def mark_preempted(run_dir: Path, step: int, signum: int, path: Path | None):
    marker = STOPPED if signum == signal.SIGINT else PREEMPTED
    write_json_atomic(run_dir / marker, {"step": step, "signal": signum, "checkpoint": str(path) if path else None})
