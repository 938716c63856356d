"""The run directory's lock (gandist/training/lock.py): a live holder is refused with its name, a dead or
silent one is taken over with a message, a restart of the same job is not refused by its predecessor."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from gandist.training import lock
from gandist.training.lock import LOCK, RunDirBusy, acquire


def plant(run_dir, age: float = 0.0, **record):
    """A lock.json as another run would have left it, its heartbeat `age` seconds old."""
    run_dir.mkdir(parents=True, exist_ok=True)
    held = {"host": socket.gethostname(), "pid": os.getpid(), "job": None, "token": "theirs",
            "started": "2026-01-01T00:00:00+0000", **record}
    path = run_dir / LOCK
    path.write_text(json.dumps(held))
    t = time.time() - age
    os.utime(path, (t, t))
    return path


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture(autouse=True)
def no_job(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)


def test_a_free_directory_is_taken_and_released(tmp_path):
    run = tmp_path / "run"
    held = acquire(run, 30)
    record = json.loads((run / LOCK).read_text())
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    held.release()
    assert not (run / LOCK).exists()


def test_a_live_holder_is_refused_naming_it_and_its_lock_is_left_alone(tmp_path):
    run = tmp_path / "run"
    first = acquire(run, 30)
    before = (run / LOCK).read_text()
    with pytest.raises(RunDirBusy) as e:
        acquire(run, 30)
    msg = str(e.value)
    assert f"pid {os.getpid()}" in msg and socket.gethostname() in msg and "nothing was touched" in msg
    assert (run / LOCK).read_text() == before
    first.release()


def test_a_holder_whose_process_has_ended_is_taken_over_with_a_message(tmp_path):
    run, said = tmp_path / "run", []
    plant(run, pid=dead_pid())
    held = acquire(run, 300, say=said.append)
    assert "has ended" in said[0]
    assert json.loads((run / LOCK).read_text())["token"] == held.record["token"]
    held.release()


def test_a_holder_on_another_host_is_refused_until_its_heartbeat_is_stale(tmp_path):
    run, said = tmp_path / "run", []
    plant(run, age=5, host="node-elsewhere", pid=1)
    with pytest.raises(RunDirBusy, match="node-elsewhere"):
        acquire(run, 60)
    plant(run, age=90, host="node-elsewhere", pid=1)
    held = acquire(run, 60, say=said.append)
    assert "heartbeat is 90 s old" in said[0]
    held.release()


def test_a_restart_of_the_same_job_takes_over_once_its_predecessor_stops_beating(tmp_path, monkeypatch):
    run, said = tmp_path / "run", []
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    # a requeue on another node, its predecessor's node lost 20 s ago: not refused, though the lock is fresh
    plant(run, age=20, host="node-lost", pid=1, job="slurm:4242")
    held = acquire(run, 300, say=said.append)
    assert "earlier start of this job" in said[0]
    held.release()
    # another job's fresh lock is still refused
    plant(run, age=20, host="node-lost", pid=1, job="slurm:999")
    with pytest.raises(RunDirBusy, match="job 999"):
        acquire(run, 300)


def test_the_heartbeat_keeps_the_lock_fresh_and_notices_a_takeover(tmp_path):
    run = tmp_path / "run"
    held = acquire(run, 2.5)  # a beat every 0.5 s
    t = time.time() - 100
    os.utime(run / LOCK, (t, t))
    time.sleep(2.0)
    assert time.time() - (run / LOCK).stat().st_mtime < 1.0 and held.lost is None
    plant(run, host="node-b", pid=7)  # another run took it over, thinking us dead
    time.sleep(2.0)
    assert held.lost and "node-b" in held.lost
    held.release()
    assert (run / LOCK).exists()  # not ours to remove any more


def test_an_unreadable_lock_is_refused_while_fresh_and_taken_when_old(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK).write_text("{torn")
    with pytest.raises(RunDirBusy, match="unreadable"):
        acquire(run, 60)
    t = time.time() - 120
    os.utime(run / LOCK, (t, t))
    acquire(run, 60).release()


def test_the_beat_is_a_few_seconds_whatever_the_staleness():
    assert lock.beat(300) == 5.0 and lock.beat(5) == 1.0
