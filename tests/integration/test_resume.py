"""Resuming (issue 7): SIGKILL at any moment, then train.resume=auto, ends where an uninterrupted run
ends; SIGTERM / SIGUSR1 stop every rank at the next step boundary with a checkpoint and exit 75.

Every test starts real training processes (python, torchrun, or one process per rank started
directly, as srun does) and sends them real signals.  The runs are tiny (conftest.TINY) and short.
"""
from __future__ import annotations

import itertools
import json
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from gandist.training import checkpoint
from tests.conftest import REPO, env, free_port, max_weight_diff, metrics, run_train, train_cmd

STEPS = {"dcgan": 10, "wgan_gp": 6}
COMMON = ["checkpoint.every=2", "checkpoint.keep=2", "optim.ema=0.9", "optim.lr_decay=linear"]
EXIT_REQUEUE = 75


def overrides(variant: str) -> list[str]:
    return [f"variant={variant}", f"train.steps={STEPS[variant]}", *COMMON]


# -- running and signalling real processes --------------------------------------------------------

_logs = itertools.count()


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d.name))
    return kids


class Job:
    """One training run as real processes: launcher "python" (1 process), "torchrun", or "ranks" (one
    process per rank started directly with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)."""

    def __init__(self, out: Path, *overrides: str, nproc: int = 1, launcher: str = "python",
                 torchrun_args: tuple = (), extra_env: dict | None = None):
        self.out, self.procs, self.logs, self.launcher = Path(out), [], [], launcher
        if launcher == "ranks":
            port = free_port()
            cmds = [(train_cmd(out, *overrides), env(RANK=r, WORLD_SIZE=nproc, LOCAL_RANK=r, LOCAL_WORLD_SIZE=nproc,
                                                     MASTER_ADDR="127.0.0.1", MASTER_PORT=port, **(extra_env or {})))
                    for r in range(nproc)]
        else:
            cmd = train_cmd(out, *overrides, nproc=nproc, launcher=launcher)
            if torchrun_args:
                cmd[1:1] = list(torchrun_args)
            cmds = [(cmd, env(**(extra_env or {})))]
        for cmd, e in cmds:
            log = self.out.parent / f"{self.out.name}.{next(_logs)}.log"
            self.logs.append(log)
            with open(log, "w") as f:
                self.procs.append(subprocess.Popen(cmd, cwd=REPO, env=e, stdout=f, stderr=subprocess.STDOUT,
                                                   start_new_session=True))
        self.t0 = time.monotonic()

    def alive(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def pids(self, rank: int | None = None) -> list[int]:
        """The launched process(es) and all their descendants (torchrun's workers run in their own sessions)."""
        todo = [p.pid for p in self.procs] if rank is None else [self.procs[rank].pid]
        found = []
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo += _children(pid)
        return found

    def signal(self, sig: int, rank: int | None = None):
        for pid in self.pids(rank):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def kill(self):
        self.signal(signal.SIGKILL)
        for p in self.procs:
            p.wait(timeout=60)

    def wait(self, timeout: float = 240) -> list[int]:
        deadline = time.monotonic() + timeout
        try:
            return [p.wait(timeout=max(0.1, deadline - time.monotonic())) for p in self.procs]
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the run did not end within {timeout} s:\n{self.log()}") from None

    def log(self, tail: int = 4000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-tail:]}" for p in self.logs)


def wait_until(job: Job, cond, what: str, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while True:
        hit = cond()
        if hit:
            return hit
        if not job.alive():
            raise AssertionError(f"the run ended before {what}:\n{job.log()}")
        if time.monotonic() > deadline:
            job.kill()
            raise AssertionError(f"no {what} within {timeout} s:\n{job.log()}")
        time.sleep(0.005)


def squash(text: str) -> str:
    """Text without whitespace: rich wraps long lines wherever it likes."""
    return re.sub(r"\s+", "", text)


def says(log: str, *phrases: str) -> bool:
    return all(squash(p) in squash(log) for p in phrases)


def last_step(out: Path) -> int:
    try:
        text = (out / "metrics.jsonl").read_text()
    except OSError:
        return 0
    steps = [0]
    for line in text.splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except ValueError:
            pass  # a row being written
    return max(steps)


def _tmp_dirs(out: Path) -> dict[str, int]:
    try:
        return {e.name: e.inode() for e in os.scandir(out / "checkpoints") if e.name.startswith(".tmp-step_")}
    except OSError:
        return {}


def new_save(out: Path, stale: dict[str, int]):
    """The name of a checkpoint being written now (not a leftover of an earlier killed run), if any."""
    for name, inode in _tmp_dirs(out).items():
        if stale.get(name) != inode:
            return name
    return None


def latest_step(out: Path) -> int:
    p = checkpoint.latest(out)
    return checkpoint.step_of(p) if p else 0


def check_complete_checkpoints(out: Path):
    """Every checkpoint that looks complete is: all its files there with the recorded sizes and hashes."""
    for c in checkpoint.complete(out):
        checkpoint.check_files(c, checkpoint.read_trainer_state(c))


def assert_same_run(out: Path, ref: Path, steps: int):
    """Weights (G, D, EMA) and every logged loss equal to the uninterrupted run's; one row per step."""
    from safetensors.torch import load_file

    assert max_weight_diff(out, ref) <= 1e-6
    a, b = (load_file(str(p / "final" / "generator_ema.safetensors")) for p in (out, ref))
    assert max((a[k].double() - b[k].double()).abs().max().item() for k in a) <= 1e-6
    rows, ref_rows = metrics(out), metrics(ref)
    assert [r["step"] for r in rows] == [r["step"] for r in ref_rows] == list(range(1, steps + 1))
    for r, q in zip(rows, ref_rows):
        for k in ("loss_d", "loss_g", "d_real", "d_fake"):
            assert abs(r[k] - q[k]) <= 1e-6, (r["step"], k, r[k], q[k])
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names[-1] == f"step_{steps:08d}" and len(names) <= 2, names  # checkpoint.keep=2, nothing left over
    check_complete_checkpoints(out)


class References:
    """The uninterrupted run of each (variant, processes), made once, in the background while a test
    interrupts its twin (the machine has two cores; most runs use one)."""

    def __init__(self, factory):
        self.factory, self.jobs = factory, {}

    def start(self, variant: str, nproc: int):
        if (variant, nproc) not in self.jobs:
            out = self.factory.mktemp(f"ref_{variant}_{nproc}") / "run"
            self.jobs[variant, nproc] = Job(out, *overrides(variant), nproc=nproc,
                                            launcher="python" if nproc == 1 else "ranks")

    def __call__(self, variant: str, nproc: int) -> Path:
        self.start(variant, nproc)
        job = self.jobs[variant, nproc]
        assert job.wait() == [0] * nproc, job.log()
        return job.out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return References(tmp_path_factory)


# -- SIGKILL, SIGTERM, SIGUSR1 at any moment ------------------------------------------------------------

# Each run of a test is interrupted a few times, then resumed with train.resume=auto to the end, and
# must end with the uninterrupted run's weights and losses.  An interruption is "<signal> <moment>":
#   signal  SIGKILL (every process of the job); SIGTERM or SIGUSR1 (to what was launched: the process,
#           each rank, or torchrun, which passes it on to its workers; "SIGUSR1@1": rank 1 only),
#           after which the run must checkpoint at the next step boundary and exit 75
#   moment  "t=T" (T s after launch: start-up, loading), "step=N" (once the metrics row of step N is
#           written, plus a random 0-60 ms: inside a step, a save, or between a save and the next
#           rows), "saving" (while a checkpoint is written; for SIGKILL the job is first frozen with
#           SIGSTOP and what a kill would leave is checked)
PLANS = {
    ("dcgan", 1, "python"): ["SIGKILL t=2.5", "SIGTERM saving", "SIGKILL step=6", "SIGKILL saving"],
    ("wgan_gp", 1, "python"): ["SIGKILL saving", "SIGUSR1 step=3"],
    ("dcgan", 2, "torchrun"): ["SIGUSR1 step=2", "SIGKILL saving"],
    ("wgan_gp", 2, "ranks"): ["SIGUSR1@1 step=2", "SIGKILL step=4"],
}
# torchrun passes on SIGTERM, SIGINT, SIGHUP, SIGQUIT, and SIGUSR1 when told to.
TORCHRUN_ARGS = ("--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",)


def assert_preempted(out: Path, log: str, signame: str) -> int:
    """The run stopped for a signal: message, marker file, a complete checkpoint at the last logged step."""
    assert says(log, f"{signame} received", "exiting with 75"), log
    marker = json.loads((out / "preempted.json").read_text())
    assert marker["signal"] == getattr(signal, signame)
    step = marker["step"]
    assert latest_step(out) == step == last_step(out)
    assert Path(marker["checkpoint"]) == checkpoint.latest(out)
    check_complete_checkpoints(out)
    return step


def interrupt(job: Job, how: str, rng: random.Random, start: int, stale: dict) -> str:
    """Wait for the moment, send the signal, check what it left; returns what happened, in words."""
    out = job.out
    sig, _, moment = how.partition(" ")
    if moment.startswith("t="):
        wait_until(job, lambda: time.monotonic() - job.t0 >= float(moment[2:]), moment)
        said = f"{sig} {moment[2:]} s after launch"
    elif moment.startswith("step="):
        target = max(int(moment[5:]), start + 1)
        wait_until(job, lambda: last_step(out) >= target, f"step {target}")
        time.sleep(rng.uniform(0, 0.06))
        said = f"{sig} just after step {target}'s row"
    else:
        name = wait_until(job, lambda: new_save(out, stale), "a checkpoint save")
        said = f"{sig} while or just after writing {name}"
        if sig == "SIGKILL":
            job.signal(signal.SIGSTOP)
            if new_save(out, stale) == name:  # frozen mid-save: that checkpoint must not count yet
                assert latest_step(out) < int(name.removeprefix(".tmp-step_")), (name, checkpoint.latest(out))
                said = f"SIGKILL while writing {name}"
            check_complete_checkpoints(out)
    if sig == "SIGKILL":
        job.kill()
        return said
    signame, _, rank = sig.partition("@")
    if job.launcher == "torchrun":
        os.kill(job.procs[0].pid, getattr(signal, signame))  # torchrun, not its workers
    else:
        job.signal(getattr(signal, signame), rank=int(rank) if rank else None)
    codes = job.wait(timeout=180)
    if job.launcher == "torchrun":
        assert codes[0] != 0, job.log()  # torchrun reports a signal as a failure: hence preempted.json
    else:
        assert codes == [EXIT_REQUEUE] * len(job.procs), job.log()
    step = assert_preempted(out, job.log(), signame)
    return f"{said}: stopped at step {step}"


@pytest.mark.parametrize("variant,nproc,launcher", list(PLANS))
def test_interrupted_anywhere_then_auto_resume_equals_uninterrupted(tmp_path, reference, variant, nproc, launcher):
    reference.start(variant, nproc)
    out = tmp_path / "run"
    rng = random.Random(f"{variant}{nproc}")
    torchrun_args = TORCHRUN_ARGS if launcher == "torchrun" else ()
    events = []
    for how in PLANS[variant, nproc, launcher]:
        start, stale = latest_step(out), _tmp_dirs(out)
        job = Job(out, *overrides(variant), nproc=nproc, launcher=launcher, torchrun_args=torchrun_args)
        events.append(interrupt(job, how, rng, start, stale))
        assert latest_step(out) >= start  # an interruption never loses a checkpoint that was there
    print(f"{variant} x{nproc} ({launcher}):", "; ".join(events))
    resumable = latest_step(out)
    job = Job(out, *overrides(variant), nproc=nproc, launcher="ranks" if nproc > 1 else launcher)
    assert job.wait() == [0] * len(job.procs), job.log()
    assert says(job.log(), f"steps {resumable}->{STEPS[variant]}")
    assert not (out / "preempted.json").exists()
    assert_same_run(out, reference(variant, nproc), STEPS[variant])


def test_torn_rows_and_leftovers_of_killed_saves_are_ignored(tmp_path, reference):
    """What a kill can leave (a half-written row, rows after the checkpoint, a half-written checkpoint,
    one half-deleted by pruning) does not change the resumed run; the leftovers are cleaned up."""
    import shutil

    ref = reference("dcgan", 1)
    out = tmp_path / "run"
    shutil.copytree(ref, out, ignore=shutil.ignore_patterns("final", "step_00000010"))
    root = out / "checkpoints"  # holds step_8 only; step 10 never finished
    half = root / ".tmp-step_00000010"
    shutil.copytree(root / "step_00000008", half)
    (half / "trainer.json").unlink()
    (half / "model.safetensors").write_bytes(b"\0" * 10)
    shutil.copytree(root / "step_00000008", root / ".del-step_00000006", ignore=shutil.ignore_patterns("model*"))
    shutil.copytree(root / "step_00000008", root / "step_00000009", ignore=shutil.ignore_patterns("trainer.json"))
    rows = (ref / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join(rows[:9]) + "\n" + rows[9][:25])  # rows 1-9, then a torn one
    assert latest_step(out) == 8
    p = run_train(out, *overrides("dcgan"))
    assert says(p.stdout, f"resumed from {out}/checkpoints/step_00000008")
    shutil.rmtree(root / "step_00000009")  # not a checkpoint (no trainer.json): left alone, never loaded
    assert_same_run(out, ref, STEPS["dcgan"])


# -- train.resume: auto / no / PATH ------------------------------------------------------------------

def test_resume_choices(tmp_path, reference):
    """auto on a finished run only re-exports; no refuses a run directory with checkpoints unless
    train.overwrite=true; PATH refuses to mix histories, and continues from an older checkpoint with
    train.overwrite=true, also with another number of processes."""
    import shutil

    ref = reference("dcgan", 1)
    out = tmp_path / "run"
    shutil.copytree(ref, out)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "checkpoints").iterdir()}
    # one after another: two at once on one run directory would be refused by its lock (tests/unit/training)
    codes, logs = {}, {}
    for k, extra in {"auto": (), "no": ("train.resume=no",),
                     "path": (f"train.resume={out}/checkpoints/step_00000008",)}.items():
        job = Job(out, *overrides("dcgan"), *extra)
        codes[k], logs[k] = job.wait()[0], job.log()
    assert codes == {"auto": 0, "no": 2, "path": 2}, logs
    assert says(logs["auto"], "steps 10->10", "resumed from")
    assert says(logs["no"], "holds checkpoints", "train.overwrite=true")
    assert says(logs["path"], "newer than", "step_00000010", "would mix two histories")
    assert {p.name: p.stat().st_mtime_ns for p in (out / "checkpoints").iterdir()} == before  # untouched
    assert max_weight_diff(out, ref) == 0

    # From an older checkpoint, and on 2 processes although 1 wrote it: model files hold plain keys.
    job = Job(out, *overrides("dcgan"), f"train.resume={out}/checkpoints/step_00000008", "train.overwrite=true",
              nproc=2, launcher="ranks")
    assert job.wait() == [0, 0], job.log()
    assert says(job.log(), "steps 8->10", f"resumed from {out}/checkpoints/step_00000008 (written by 1 processes)")
    assert [r["step"] for r in metrics(out)] == list(range(1, 11))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000008", "step_00000010"]
    diff = max_weight_diff(out, ref)
    print(f"1 process to step 8, then 2 processes to step 10: max weight difference {diff:.2e}")
    assert diff <= 1e-4  # the same run up to float32 rounding (world-size invariance, tests/integration/test_world_size.py)
