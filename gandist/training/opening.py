"""Opening a run: rank 0 takes the run directory's lock, every rank agrees where the run starts from, rank 0
clears what that start makes obsolete and, once the start step is known, writes the files that describe the
run.  Every decision is made before any training work, and a refusal (ConfigError) before any file is touched.
"""
from __future__ import annotations

import os
import platform
import shutil
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
from gandist.training import run_dir as layout
from gandist.training.history import History


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


def clear(cfg, run_dir: Path, resume_from: Path | None):
    """Rank 0, before any work: clear what the chosen start point makes obsolete."""
    if cfg.train.resume == "no" and cfg.train.overwrite:
        shutil.rmtree(checkpoint.checkpoints_dir(run_dir), ignore_errors=True)
        (run_dir / layout.METRICS).unlink(missing_ok=True)
        (run_dir / layout.HISTORY).unlink(missing_ok=True)
    if resume_from is not None and cfg.train.overwrite:
        checkpoint.remove_after(run_dir, checkpoint.read_trainer_state(resume_from)["step"])
    layout.clear_markers(run_dir)


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
        layout.write_config(run_dir, config.dump(cfg))
        info = {"world_size": acc.num_processes, "ranks": ranks, "distributed_type": str(acc.distributed_type),
                "mixed_precision": cfg.train.mixed_precision,
                "versions": {"gandist": __version__, "torch": torch.__version__,
                             "accelerate": accelerate.__version__, "python": platform.python_version()},
                "git_commit": git_commit(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        layout.write_run_info(run_dir, info)
    return ranks




class Opened:
    """A run whose directory is held and whose start point is decided: `resume_from` (None: a fresh start),
    `lock` (rank 0's; None on the others)."""

    def __init__(self, cfg, acc, lock_held, resume_from: Path | None):
        self.cfg, self.acc, self.lock, self.resume_from = cfg, acc, lock_held, resume_from
        self.dir = Path(cfg.output.dir)

    def begin(self, start: int) -> tuple[list[dict], History]:
        """Collective, once the start step is known: drop the metrics rows after it, write config.yaml and
        run.json; returns every rank's host and device, and the record of this start."""
        before = layout.last_logged(self.dir)  # read before the rows after `start` go
        if self.acc.is_main_process:
            layout.truncate_metrics(self.dir, start)
        ranks = write_run_files(self.cfg, self.acc, self.dir)
        return ranks, History(self.dir, start, self.acc.num_processes, ranks, self.resume_from, before,
                              self.acc.is_main_process)


@contextmanager
def open_run(cfg, acc):
    """Collective: hold the run directory for the block (rank 0 takes its lock, training/lock.py), decide
    where the run starts (every rank the same answer) and clear what that makes obsolete; yields Opened.
    A refusal is raised on every rank alike, before any file of the run is touched."""
    run_dir = Path(cfg.output.dir)
    held, refusal = None, None
    if acc.is_main_process:
        try:
            held = lock.acquire(run_dir, cfg.output.lock_stale_s, say=lambda m: print(f"gandist: {m}"))
        except lock.RunDirBusy as e:
            refusal = str(e)
    refusal = broadcast_object(refusal)
    if refusal:
        raise lock.RunDirBusy(refusal)
    try:
        resume_from = decide_resume(cfg, run_dir)
        if acc.is_main_process:
            clear(cfg, run_dir, resume_from)
        acc.wait_for_everyone()
        yield Opened(cfg, acc, held, resume_from)
    finally:
        if held is not None:
            held.release()
