"""A run directory nothing can corrupt (issue 19), one process: Ctrl-C pressed on a real terminal, and a
disk that really fills up (a small tmpfs).  Two processes, SIGKILL, SIGTERM, an injected ENOSPC and a
second run on the same directory: tests/integration/test_chaos.py; the lock itself: tests/unit/training/."""
from __future__ import annotations

import json

import os
import pty
import re
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from gandist.training import checkpoint
from tests.conftest import REPO, env, metrics, run_train, train_cmd
from tests.integration.test_resume import check_complete_checkpoints, latest_step, says

EXIT_INTERRUPTED = 130
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal:
    """A command on a pseudo-terminal of its own, as a user at a shell runs it: keys typed there go through
    the terminal's line discipline, so Ctrl-C is a SIGINT to its foreground process group."""

    def __init__(self, cmd: list[str]):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: a new session whose controlling terminal is the pty
            os.chdir(REPO)
            os.execvpe(cmd[0], cmd, env(TERM="xterm-256color", COLUMNS=200))
        self.out, self.status = bytearray(), None

    def read(self, seconds: float):
        end = time.monotonic() + seconds
        while self.status is None and time.monotonic() < end:
            if select.select([self.fd], [], [], 0.05)[0]:
                try:
                    self.out += os.read(self.fd, 65536)
                except OSError:  # EIO: the child has gone
                    pass
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(st)

    def text(self) -> str:
        return ANSI.sub("", self.out.decode(errors="replace"))

    def press_ctrl_c(self):
        os.write(self.fd, b"\x03")

    def wait(self, seconds: float) -> int:
        self.read(seconds)
        if self.status is None:
            os.kill(self.pid, 9)
            raise AssertionError(f"still running {seconds} s later:\n{self.text()[-4000:]}")
        return self.status


def until(cond, seconds: float, term: Terminal, what: str):
    end = time.monotonic() + seconds
    while not cond():
        term.read(0.1)
        if term.status is not None or time.monotonic() > end:
            raise AssertionError(f"no {what} (status {term.status}):\n{term.text()[-4000:]}")


def test_ctrl_c_saves_a_checkpoint_and_exits_130_and_a_second_one_stops_at_once(tmp_path):
    out = tmp_path / "run"
    # first Ctrl-C: agreed at the next log step (every step here), a checkpoint, one line, 130
    term = Terminal(train_cmd(out, "train.steps=100000", "log.progress=true"))
    until(lambda: len(metrics(out)) >= 3 if (out / "metrics.jsonl").exists() else False, 120, term, "step 3")
    term.press_ctrl_c()
    assert term.wait(60) == EXIT_INTERRUPTED
    text = term.text()
    step = latest_step(out)
    assert step >= 3 and step == metrics(out)[-1]["step"], text[-3000:]
    check_complete_checkpoints(out)
    assert says(text, f"Ctrl-C: checkpoint {out}/checkpoints/step_{step:08d} saved at step {step}",
                "train.resume=auto"), text[-3000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    assert not (out / "preempted.json").exists()  # a user's stop is not a preemption: nothing to requeue
    assert json.loads((out / "stopped.json").read_text())["step"] == step  # but gandist-compare shows it stopped
    assert not (out / "lock.json").exists()  # released
    # second Ctrl-C while the first waits for a log step (none for a long while): out at once, no checkpoint
    term = Terminal(train_cmd(out, "train.steps=100000", "train.resume=auto", "train.log_every=100000",
                              "log.progress=true"))
    until(lambda: "resumed from" in term.text(), 120, term, "the start-up panel")
    term.read(2)
    term.press_ctrl_c()
    term.read(1)
    assert term.status is None, term.text()[-3000:]  # the first asks for a checkpoint at the next log step
    term.press_ctrl_c()
    t = time.monotonic()
    assert term.wait(30) == EXIT_INTERRUPTED
    assert time.monotonic() - t < 10
    text = term.text()
    assert "Ctrl-C again: stopped at once, without a checkpoint" in text, text[-3000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    assert latest_step(out) == step


@pytest.fixture
def small_disk():
    """A tmpfs of our own (root only: CI runs as root, and there this test must run)."""
    if os.geteuid() != 0:
        why = "mounting a small tmpfs needs root"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{why}; CI=true requires this test")
        pytest.skip(why)
    where = Path(tempfile.mkdtemp(prefix="gandist-full-"))
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True)
        shutil.rmtree(where, ignore_errors=True)


def test_a_full_disk_stops_with_a_clear_error_and_resume_continues_exactly(tmp_path, small_disk):
    args = ["train.steps=12", "checkpoint.every=4", "checkpoint.keep=2", "train.fp64=true"]
    ref = tmp_path / "alone"
    run_train(ref, *args)  # the run on a disk with room, and the size of one of its checkpoints
    ckpt = sum(f.stat().st_size for f in checkpoint.latest(ref).iterdir())
    # room for the run's small files and one checkpoint, not two
    size_kb = (int(ckpt * 1.5) + 96 * 1024) // 1024
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(small_disk)], check=True)
    out = small_disk / "run"
    p = run_train(out, *args, check=False)
    log = p.stdout + p.stderr
    assert p.returncode == 1, log[-4000:]
    assert "Traceback" not in log, log[-4000:]
    assert says(log, "could not write checkpoint", "needs about", "is free there", "checkpoint.keep=2",
                "train.resume=auto", "every earlier checkpoint is intact"), log[-4000:]
    assert says(log, "warning:", "a checkpoint takes about", "the next save may fail")  # said before it failed
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]  # the partial one is gone
    assert latest_step(out) == 4
    check_complete_checkpoints(out)
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)  # space freed
    p = run_train(out, *args, "train.resume=auto")
    assert says(p.stdout, "steps 4->12")
    from safetensors.torch import load_file
    for name in ("generator", "discriminator", "generator_ema"):
        a, b = (load_file(str(d / "final" / f"{name}.safetensors")) for d in (out, ref))
        assert all(bool((a[k] == b[k]).all()) for k in a), name
