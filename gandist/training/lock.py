"""One writer per run directory: a run holds `<output.dir>/lock.json` for its whole life.

Rank 0 takes the lock before any file of the run directory is touched, and a thread of its own refreshes
it (the file's modification time is the heartbeat) every few seconds (`beat`).  A second run on
the same directory is refused at once, naming the holder.  A lock whose holder is gone is taken over,
with a message:
- its process has ended on this host (checked with the pid);
- it belongs to the same job: a SLURM requeue (same SLURM_JOB_ID) or an elastic restart (same
  TORCHELASTIC_RUN_ID) starts again while its predecessor's lock is still fresh: taken over once the
  predecessor has stopped beating (three beats), so a predecessor still alive is not written over;
- its heartbeat is older than output.lock_stale_s, for a holder on another host, whose pid cannot be
  checked (a lost node on a shared filesystem).
The lock is created with a hard link of a file holding the record (atomic on NFS and Lustre, where
O_EXCL and flock are not dependable), falling back to O_EXCL where links are not supported.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from gandist.cli import ConfigError
from gandist.utils.files import fsync

LOCK = "lock.json"


def beating(age: float, stale_s: float) -> bool:
    """Whether a heartbeat `age` s old is a live holder's: it beats every `beat` s, and three missed beats is
    what a restart of the same job waits for before it takes the lock over."""
    return age <= 3 * beat(stale_s)


def beat(stale_s: float) -> float:
    """Seconds between heartbeats: often enough that a restart of the same job waits only a few."""
    return min(stale_s / 5, 5.0)


class RunDirBusy(ConfigError):
    """Another live run holds this run directory (exit 2, before any file is touched)."""


def job_id() -> str | None:
    """What a restart of the same job shares with its predecessor: the SLURM job id (kept by a requeue), or
    the elastic rendezvous id (kept by torchrun's restarts; "none" when torchrun is not elastic)."""
    slurm = os.environ.get("SLURM_JOB_ID")
    if slurm:
        return f"slurm:{slurm}"
    elastic = os.environ.get("TORCHELASTIC_RUN_ID", "")
    return f"elastic:{elastic}" if elastic and elastic != "none" else None


def _record() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "job": job_id(), "token": uuid.uuid4().hex,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def read(path: Path) -> tuple[dict | None, float | None]:
    """The lock's record (None when torn or unreadable) and the age of its heartbeat in seconds (None: no lock)."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None, None
    try:
        held = json.loads(path.read_text())
        return (held if isinstance(held, dict) else None), age
    except (OSError, ValueError):
        return None, age


def _staged(path: Path, record: dict) -> Path:
    """`record` written and flushed to a file of its own beside `path`, to be linked or renamed there."""
    tmp = path.with_name(f".{LOCK}.{record['token']}")
    tmp.write_text(json.dumps(record) + "\n")
    fsync(tmp)
    return tmp


def _write_new(path: Path, record: dict) -> bool:
    """Create `path` holding `record` unless it exists; True when this call created it."""
    tmp = _staged(path, record)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # NFS may report a link that was made as failed; the link count says
        try:
            if os.stat(tmp).st_nlink == 2:
                return True
        except OSError:
            pass
        try:  # no hard links on this filesystem
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record) + "\n")
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _replace(path: Path, record: dict):
    os.replace(_staged(path, record), path)


def stale_because(held: dict | None, age: float, me: dict, stale_s: float) -> str | None:
    """Why a lock held as `held` (heartbeat `age` s old) may be taken over by `me`; None: it may not."""
    if held is None:
        return f"it is unreadable and {age:.0f} s old" if age > stale_s else None
    same_host = held.get("host") == me["host"]
    gone = same_host and not _alive(int(held.get("pid", 0)))
    if gone:
        return f"its process {held.get('pid')} on {held.get('host')} has ended"
    if held.get("job") and held.get("job") == me["job"] and not beating(age, stale_s):
        return f"it belongs to an earlier start of this job ({held['job']}), which stopped beating {age:.0f} s ago"
    if age > stale_s:
        return f"its heartbeat is {age:.0f} s old (output.lock_stale_s={stale_s:g})"
    return None


def describe(held: dict | None, age: float) -> str:
    if held is None:
        return f"an unreadable lock, last written {age:.0f} s ago"
    job = f", job {held['job'].split(':', 1)[1]}" if held.get("job") else ""
    return (f"host {held.get('host')}, pid {held.get('pid')}{job}, started {held.get('started')}, "
            f"heartbeat {age:.0f} s ago")


class RunLock:
    """Rank 0's hold on the run directory; `release()` when the run ends (a killed run's lock goes stale)."""

    def __init__(self, path: Path, record: dict, stale_s: float):
        self.path, self.record, self.stale_s = path, record, stale_s
        self.lost: str | None = None  # set when another run has taken the lock over (we were thought dead)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="gandist-run-lock", daemon=True)
        self._thread.start()

    def _beat(self):
        while not self._stop.wait(beat(self.stale_s)):
            held, age = read(self.path)
            if age is None:
                self.lost = f"the run directory's lock {self.path} was deleted"
                return
            if held is None or held.get("token") != self.record["token"]:
                self.lost = f"the run directory's lock was taken over by {describe(held, age)}"
                return
            try:
                os.utime(self.path)
            except OSError:
                pass  # a full or flaky disk: the next beat tries again

    def release(self):
        self._stop.set()
        self._thread.join()
        held, _ = read(self.path)
        if held is not None and held.get("token") == self.record["token"]:
            self.path.unlink(missing_ok=True)


def acquire(run_dir: Path, stale_s: float, say=print) -> RunLock:
    """Take the run directory's lock, taking over a stale one (saying so), or raise RunDirBusy."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path, me = run_dir / LOCK, _record()
    for _ in range(3):
        if _write_new(path, me):
            return RunLock(path, me, stale_s)
        held, age = read(path)
        if age is None:
            continue  # released since: try to create it again
        why = stale_because(held, age, me, stale_s)
        deadline = time.monotonic() + stale_s
        while (why is None and held is not None and held.get("job") == me["job"] and me["job"]
               and time.monotonic() < deadline):
            time.sleep(1)  # an earlier start of this job: wait for it to stop beating
            held, age = read(path)
            if age is None:
                break  # released: try to create it again
            why = stale_because(held, age, me, stale_s)
        if age is None:
            continue
        if why is None:
            raise RunDirBusy(
                f"output.dir {run_dir} is in use by another run ({describe(held, age)}); nothing was touched. "
                f"Wait for it to end or stop it, or use another output.dir. If that run is gone (a lost node), "
                f"its lock goes stale {stale_s:g} s after its last heartbeat (output.lock_stale_s); or delete {path}")
        say(f"taking over the run directory's lock from {describe(held, age)}: {why}")
        _replace(path, me)
        time.sleep(0.05)  # two runs taking over at once: the later rename wins, and the loser sees it
        held, _ = read(path)
        if held is not None and held.get("token") == me["token"]:
            return RunLock(path, me, stale_s)
    raise RunDirBusy(f"output.dir {run_dir}: another run keeps taking its lock ({path}); nothing was touched")
