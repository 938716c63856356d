"""Elastic training (issue 20) on one machine: two torchrun agents (launch/elastic.sh) are two "nodes", the
rendezvous store a process of its own (launch/store.py), gloo on 127.0.0.1, fp64, the embedded data.

- a node killed whole (agent and workers): the other continues at world 1 from the newest checkpoint; the
  node started again rejoins (world 2); the final weights equal, bit for bit, those of the run that was
  never interrupted (fp64: the weights do not depend on the world size, so a membership change loses only
  the steps since the checkpoint and changes nothing else);
- a node frozen (SIGSTOP: a hung node), that of rank 0 (whose agent also holds the group's store) or the
  other: the other names it and stops within train.hang_timeout_s plus a few seconds, and its agent
  continues without it at world 1; then, its restarts used up, one more failure ends the job with a clear
  error, leaving no process behind.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import socket
from pathlib import Path

import pytest
from gandist.training.run_dir import read_history as read
from tests.conftest import PY, REPO, TINY, env, free_port
from tests.integration.test_resume import _children, says

HOST = socket.gethostname()
ARGS = ["train.fp64=true", "train.steps=600", "checkpoint.every=50", "checkpoint.keep=2", "optim.ema=0.9"]


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += _children(p)
    return found


class Node:
    """launch/elastic.sh as one node: its agent and workers, in a session of their own."""

    def __init__(self, out: Path, store: str, run_id: str, name: str, *extra: str, **settings):
        self.log = out.parent / f"{name}.log"
        e = env(**{"GANDIST_RDZV_ENDPOINT": store, "GANDIST_RDZV_ID": run_id, "GANDIST_ELASTIC_NODES": "1:2",
                   "GANDIST_PROCS_PER_NODE": 1, "GANDIST_SHUTDOWN_TIMEOUT": 60,
                   "GANDIST_RDZV_CONF": "last_call_timeout=1,keep_alive_interval=1,keep_alive_max_attempt=3",
                   **settings})
        cmd = ["bash", str(REPO / "launch/elastic.sh"), "--config", str(REPO / "configs/quickstart.yaml"), *TINY,
               f"output.dir={out}", *ARGS, *extra]
        with open(self.log, "w") as f:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=e, stdout=f, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def signal(self, sig: int):
        for pid in descendants(self.proc.pid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def text(self) -> str:
        return self.log.read_text()


def store() -> tuple[subprocess.Popen, str]:
    port = free_port()
    p = subprocess.Popen([PY, str(REPO / "launch/store.py"), "--host", "127.0.0.1", "--port", str(port)],
                         stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert "rendezvous store" in p.stdout.readline()
    return p, f"127.0.0.1:{port}"


def until(cond, seconds: float, what: str, *nodes: Node):
    end = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > end:
            for n in nodes:
                n.signal(signal.SIGKILL)
            logs = "\n".join(f"--- {n.log.name}\n{n.text()[-3000:]}" for n in nodes)
            raise AssertionError(f"no {what} within {seconds} s:\n{logs}")
        time.sleep(0.05)


def last_step(out: Path) -> int:
    try:
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return 0
    return max([r["step"] for r in rows if "loss_d" in r], default=0)


def starts(out: Path) -> list[int]:
    return [s["world_size"] for s in read(out)]


def test_a_lost_node_costs_a_restart_and_a_rejoin_brings_it_back_exactly(tmp_path):
    ref = tmp_path / "alone"
    # the run left alone, in one process: in fp64 the weights do not depend on the world size
    # (tests/integration/test_world_size.py), and one process leaves more of the CPU to the nodes
    alone = subprocess.Popen([sys.executable, "-m", "gandist.train", "--config", str(REPO / "configs/quickstart.yaml"),
                              *TINY, f"output.dir={ref}", *ARGS], cwd=REPO, env=env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    srv, endpoint = store()
    out = tmp_path / "run"
    a = Node(out, endpoint, "lost", "a")
    b = Node(out, endpoint, "lost", "b")
    try:
        until(lambda: starts(out) == [2] and last_step(out) >= 60, 240, "world 2 at step 60", a, b)
        b.signal(signal.SIGKILL)  # the node is lost: its agent and its worker
        t_lost = time.monotonic()
        until(lambda: starts(out)[-1:] == [1], 120, "a start at world 1", a)
        print(f"node lost -> first step at world 1: {time.monotonic() - t_lost:.1f} s (wall, this test)")
        b = Node(out, endpoint, "lost", "b-again")  # the node comes back
        until(lambda: starts(out)[-1:] == [2] and len(starts(out)) >= 3, 180, "a rejoin at world 2", a, b)
        assert a.proc.wait(timeout=240) == 0, a.text()[-3000:]
        assert b.proc.wait(timeout=60) == 0, b.text()[-3000:]
    finally:
        for n in (a, b):
            n.signal(signal.SIGKILL)
        srv.kill()
    history = read(out)
    print("history:", [(s["step"], s["world_size"], s["restart"], s["steps_replayed"], s["time_lost_s"])
                       for s in history])
    assert [s["world_size"] for s in history][:1] == [2] and 1 in [s["world_size"] for s in history]
    lost = next(s for s in history if s["world_size"] == 1)
    assert lost["resumed_from"] and lost["step"] % 50 == 0  # the newest checkpoint before the loss
    rejoin = history[-1]
    assert rejoin["world_size"] == 2 and rejoin["steps_replayed"] == 0  # a rejoin saves first: nothing replayed
    assert alone.wait(timeout=240) == 0
    from safetensors.torch import load_file
    for name in ("generator", "discriminator", "generator_ema"):
        x, y = (load_file(str(d / "final" / f"{name}.safetensors")) for d in (out, ref))
        assert all(bool((x[k] == y[k]).all()) for k in x), f"{name} differs from the run left alone"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in rows if "loss_d" in r}) == list(range(1, 601))


@pytest.mark.parametrize("frozen", [0, 1])
def test_a_hung_node_is_named_and_left_behind_then_used_up_restarts_end_the_job_cleanly(tmp_path, frozen):
    srv, endpoint = store()
    out = tmp_path / "run"
    hang = 8
    a = Node(out, endpoint, "hung", "a", f"train.hang_timeout_s={hang}", "train.steps=100000",
             GANDIST_MAX_RESTARTS=1)
    b = Node(out, endpoint, "hung", "b", f"train.hang_timeout_s={hang}", "train.steps=100000",
             GANDIST_MAX_RESTARTS=1)
    try:
        until(lambda: starts(out) == [2] and last_step(out) >= 20, 240, "world 2 at step 20", a, b)
        if ("process(es)" in a.text()) == (frozen == 0):  # rank 0 prints: b becomes the node of rank `frozen`
            a, b = b, a
        b.signal(signal.SIGSTOP)  # the node hangs: nothing of it runs, nothing of it closes
        t = time.monotonic()
        until(lambda: "has been silent" in a.text(), hang + 30, "the silent rank named", a)
        took = time.monotonic() - t
        print(f"hung node named after {took:.1f} s (train.hang_timeout_s={hang})")
        assert took < hang + 15
        named = "rank 0 on vm (and the group's store it holds)" if frozen == 0 else "rank 1 on vm"
        assert says(a.text(), f"{named.replace('vm', HOST)} has been silent for", f"train.hang_timeout_s={hang}"), \
            a.text()[-3000:]
        until(lambda: starts(out)[-1:] == [1] and last_step(out) > 20, 120, "training on at world 1", a)
        # the agent's one restart is used: a failure of its own worker now ends the job
        worker = [p for p in descendants(a.proc.pid) if b"gandist.train" in Path(f"/proc/{p}/cmdline").read_bytes()
                  and p != a.proc.pid]
        os.kill(max(worker), signal.SIGKILL)
        assert a.proc.wait(timeout=120) == 1, a.text()[-3000:]
        assert says(a.text(), "launch/elastic.sh: error: training ended", "restarts (GANDIST_MAX_RESTARTS) were used "
                    "up", "the newest checkpoint is", "start the nodes again"), a.text()[-3000:]
    finally:
        for n in (a, b):
            n.signal(signal.SIGKILL)
        srv.kill()
    time.sleep(1)
    left = [p for p in os.listdir("/proc") if p.isdigit() and str(out).encode() in _cmdline(p)]
    assert not left, f"processes of the run left behind: {left}"


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_time_based_checkpoints_and_what_a_failure_costs(tmp_path):
    """checkpoint.every_minutes: a checkpoint at the first log step after the time has passed, every rank at
    the same step; each save's size and duration printed; the panel says what a failure can cost."""
    out = tmp_path / "run"
    p = subprocess.run([PY, "-m", "gandist.train", "--config", str(REPO / "configs/quickstart.yaml"), *TINY,
                        f"output.dir={out}", "train.steps=400", "checkpoint.every=100000", "checkpoint.keep=100",
                        "checkpoint.every_minutes=0.01", "log.progress=false"], cwd=REPO, env=env(),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    saved = sorted((out / "checkpoints").glob("step_*"))
    assert len(saved) >= 3, (saved, p.stdout[-2000:])  # 0.6 s apart over a run of several seconds, and the last
    assert says(p.stdout, "a failure costs: at most 100000 steps or 0.01 minutes of training, whichever comes first")
    assert re.search(r"checkpoint\S+step_\d+\(\d+\.\dKB,\d+\.\ds\)", re.sub(r"\s+", "", p.stdout))  # size, time


def test_a_batch_that_does_not_split_over_every_elastic_world_size_is_refused(tmp_path):
    p = subprocess.run([PY, "-m", "gandist.train", "--config", str(REPO / "configs/quickstart.yaml"), *TINY,
                        f"output.dir={tmp_path / 'run'}"], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env=env(GANDIST_ELASTIC_NODES="1:3", LOCAL_WORLD_SIZE=1))
    assert p.returncode == 2, p.stderr[-2000:]
    assert says(p.stderr, "train.batch_size: 8 does not split over world size(s) 3, which this elastic job may take")
    assert not (tmp_path / "run").exists()
