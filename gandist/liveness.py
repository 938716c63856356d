"""How the ranks stop together (StopFlag) and how a rank that stops is found (Watchdog, lost_peer).

Progress, not liveness: the loop sets its step and phase as a host attribute (no device sync) and a thread
compares it with the clock.  A rank past its phase's budget, and not waiting in a collective, names itself in
the group's store and leaves, so that an elastic agent restarts the group without it; a rank whose beats stop
is named by the others.  Under torchrun's file timer (launch/elastic.sh) the thread also keeps a deadline
ahead, so that a frozen process is SIGKILLed rather than waited on until the agent's shutdown timeout.
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta

import torch.distributed as dist
from torch.distributed.elastic.timer import FileTimerClient

from gandist.cli import first_line
from gandist.distributed import abandon, broadcast_object, gather_object, where

EXIT_ERROR = 1


class StopFlag:
    """SIGTERM / SIGUSR1 (preemption, time limit) and a first Ctrl-C set `signum`, which the ranks agree on at
    log and checkpoint steps so that all stop at the same step; a second Ctrl-C exits at once.  `early`:
    signals noted before the flag existed."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

    def __init__(self, early: list[int] | tuple = ()):
        self.signum, self.interrupts = 0, 0
        for s in self.SIGNALS:
            signal.signal(s, self._set)
        for s in early:
            self._set(s, None)
        # unregister first: one hook however many runs a process makes (tests run several in-process)
        atexit.unregister(StopFlag.ignore_from_now_on)
        atexit.register(StopFlag.ignore_from_now_on)

    def _set(self, signum, frame):
        if signum == signal.SIGINT:
            self.interrupts += 1
            if self.interrupts > 1:
                print(f"gandist ({where()}): Ctrl-C again: stopped at once, without a checkpoint", file=sys.stderr,
                      flush=True)
                os._exit(130)
            if int(os.environ.get("RANK", 0)) == 0:
                print("gandist: Ctrl-C: stopping with a checkpoint at the next log or checkpoint step "
                      "(Ctrl-C again stops at once, without one)", file=sys.stderr, flush=True)
        # a preemption signal wins over Ctrl-C: its exit status asks the scheduler for a requeue
        self.signum = signum if self.signum in (0, signal.SIGINT) else self.signum

    @staticmethod
    def ignore_from_now_on():
        """At exit a late stop signal has nothing to stop, but would kill teardown with the default action
        (requeueing a finished run, losing a stopped one's status 75).  An atexit hook, not the end of main:
        an ignored signal is inherited by later children, and main also runs inside other programs."""
        for s in StopFlag.SIGNALS:
            signal.signal(s, signal.SIG_IGN)


def lost_peer(e: BaseException) -> bool:
    """Is this the error a collective raises when another rank is gone (gloo and NCCL wording)?"""
    if isinstance(e, dist.DistError):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and dist.is_initialized() and any(
        s in text for s in ("Connection reset by peer", "Connection closed by peer", "Timed out waiting",
                            "Broken pipe", "NCCL communicator was aborted", "Watchdog caught collective"))


@contextmanager
def end_on_lost_peer(prog: str, hint: str):
    """A lost peer ends this rank with one line naming it and `hint` (what gives up on a hung peer), no
    traceback, status 1 at once."""
    try:
        yield
    except Exception as e:
        if not lost_peer(e):
            raise
        print(f"{prog}: error ({where()}): lost contact with another process of the run; it died, hung or was "
              f"cut off ({hint}); see the other ranks' logs. {type(e).__name__}: {first_line(e)}", file=sys.stderr)
        abandon(EXIT_ERROR)


class Progress:
    """This rank's last step, phase, the phase's budget (seconds without progress) and whether it waits in a
    collective.  One tuple replaced whole: no device sync, no lock.  On its own it only records."""

    def __init__(self, budget_s: float = 90.0, phase: str = "start-up"):
        self.default_s = budget_s
        self.now = (0, phase, budget_s, time.monotonic(), False)  # step, phase, budget, since, waiting

    def at(self, phase: str, step: int | None = None, budget_s: float | None = None, waiting: bool = False) -> None:
        """Enter `phase` (after `step` steps); `waiting`: the whole phase waits for the other ranks."""
        last = self.now[0] if step is None else step
        self.now = (last, phase, budget_s or self.default_s, time.monotonic(), waiting)

    def within(self, phase: str) -> None:
        """Progress within the current phase, its budget kept."""
        step, _, budget, _, _ = self.now
        self.now = (step, phase, budget, time.monotonic(), False)

    @contextmanager
    def waiting(self, phase: str | None = None):
        """The block waits for the other ranks in a collective: a stall here is theirs to name, not this rank's."""
        step, current, budget, _, _ = self.now
        phase = phase or current
        self.now = (step, phase, budget, time.monotonic(), True)
        try:
            yield
        finally:
            self.now = (step, phase, budget, time.monotonic(), False)

    def close(self):
        pass


class Watchdog(Progress):
    """Progress, watched.  Each rank bumps its record in the group's store (a client of its own, so a frozen
    store holds up neither this nor training); no clock is compared across hosts.  A silent store names rank 0."""

    def __init__(self, hang_timeout_s: float, rank: int, world: int, startup_s: float):
        super().__init__(hang_timeout_s, "start-up")
        self.timeout_s, self.rank, self.world = hang_timeout_s, rank, world
        self.at("start-up", 0, max(startup_s, hang_timeout_s), waiting=True)  # the ranks wait for one another in it
        self.every = min(max(hang_timeout_s / 10, 0.2), 5.0)
        self._stop = threading.Event()
        self._thread = None
        self.timer = None
        if os.environ.get("TORCHELASTIC_TIMER_FILE"):  # torchrun's agent runs a FileTimerServer for us
            self.timer = FileTimerClient(os.environ["TORCHELASTIC_TIMER_FILE"], signal=signal.SIGKILL)
        self.store, self.values, self.names, self.resumed = None, {}, [where(rank)] * world, 0.0
        self.record = {"beat": 0, "step": 0, "phase": "start-up", "state": "ok"}
        addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
        if world > 1 and dist.is_initialized() and addr and port:
            self.store = dist.TCPStore(addr, int(port), is_master=False, wait_for_workers=False,
                                       timeout=timedelta(seconds=60))
            self.names = gather_object(where(rank))  # also a barrier: every rank's client is connected
            # a prefix of this start's own: keys of an earlier start of the group (an elastic restart) are not read
            self.prefix = f"gandist/alive/{broadcast_object(uuid.uuid4().hex)}/"
            self.store.set(f"{self.prefix}{rank}", json.dumps(self.record))
        elif not elastic_agent():
            return  # one process on its own: nobody to tell, and no agent to restart it
        self._thread = threading.Thread(target=self._watch, name="gandist-watchdog", daemon=True)
        self._thread.start()

    # -- this rank ----------------------------------------------------------------------------------------
    def _deadline(self, now: float) -> float:
        """Seconds until this rank is stalled (negative: it is); waiting in a collective adds hang_timeout_s,
        so a peer's stall is named by that peer first."""
        _, _, budget, since, waiting = self.now
        return max(since, self.resumed) + budget + (self.timeout_s if waiting else 0) - now

    def _renew_timer(self, left: float):
        """Due two beats after this rank's own deadline (so this thread names the stall first), and at most
        hang_timeout_s ahead (so the agent SIGKILLs a frozen process)."""
        if self.timer is None:
            return
        try:
            self.timer.acquire("gandist-progress", time.time() + min(left + 2 * self.every + 2, self.timeout_s))
        except (OSError, RuntimeError):
            pass  # the agent is restarting the workers: it is about to end this one anyway

    def _stalled(self, stuck: float):
        step, phase, budget, _, waiting = self.now
        if waiting:
            what = (f"has waited {stuck:.0f} s in a collective (phase '{phase}', after step {step}) and no rank is "
                    f"behind it: a collective that does not complete (a device or interconnect fault)")
        else:
            what = (f"stalled: no progress for {stuck:.0f} s in phase '{phase}' after step {step} (its budget "
                    f"{budget:.0f} s; train.hang_timeout_s={self.timeout_s:g})")
        if self.timer is not None:  # this thread ends the process itself, after the others have read why
            try:
                self.timer.release("gandist-progress")
            except (OSError, RuntimeError):
                pass
        self.record.update(state="stalled", step=step, phase=phase, stuck=round(stuck))
        try:
            if self.store is not None:
                self.store.set(f"{self.prefix}{self.rank}", json.dumps(self.record))
        except Exception:
            pass
        leaves = not waiting and elastic_agent()
        print(f"gandist: error ({where()}): {what}; this rank stops"
              + (" and its node leaves the elastic run (its agent is ended), so that the run goes on without it"
                 if leaves else ""), file=sys.stderr, flush=True)
        self._stop.wait(2 * self.every + 1)  # the others read the record before this rank's sockets close
        if leaves:
            note = os.environ.get("GANDIST_NODE_NOTE")
            if note:
                try:
                    with open(note, "w") as f:
                        f.write(f"{where()} {what}\n")
                except OSError:
                    pass
            os.kill(os.getppid(), signal.SIGKILL)
        abandon(EXIT_ERROR)

    # -- the others -----------------------------------------------------------------------------------------
    def _named(self, who: int, what: str):
        print(f"gandist: error ({where()}): {self.names[who]} {what} (train.hang_timeout_s={self.timeout_s:g}); "
              f"this rank stops so that the run can go on without it (an elastic launcher restarts it)",
              file=sys.stderr, flush=True)
        abandon(EXIT_ERROR)

    def _exchange(self):
        """Publish this rank's record and read the others'.  A store call to a frozen host never returns, so
        this runs in a thread of its own and _watch judges by when it last got an answer."""
        while not self._stop.wait(self.every):
            step, phase = self.now[:2]
            self.record.update(beat=self.record["beat"] + 1, step=step, phase=phase)
            try:
                self.store.set(f"{self.prefix}{self.rank}", json.dumps(self.record))
                keys = {r: f"{self.prefix}{r}" for r in range(self.world) if r != self.rank}
                if self.store.check(list(keys.values())):  # one round trip for all (a missing key would block it)
                    self.values = dict(zip(keys, map(json.loads, self.store.multi_get(list(keys.values())))))
                else:
                    self.values = {r: json.loads(self.store.get(k)) for r, k in keys.items() if self.store.check([k])}
                self.answered = time.monotonic()
            except Exception:  # the store is gone (its node lost): the collectives will say so first
                continue

    def _watch(self):
        self.answered = time.monotonic()
        if self.store is not None:
            threading.Thread(target=self._exchange, name="gandist-watchdog-beat", daemon=True).start()
        last: dict[int, tuple[int, float]] = {}  # rank -> (its beat, when it last moved)
        # more often than the beats: judging this rank's own progress costs nothing, and a stall is then named
        # within a beat and a half of hang_timeout_s
        tick, every = time.monotonic(), min(self.every, 0.5)
        while not self._stop.wait(every):
            now = time.monotonic()
            if now - tick > every + 2:  # this process itself was stopped (SIGSTOP, a suspended job) and goes on:
                self.resumed, self.answered = now, now  # nobody stalled meanwhile, nobody froze
                last = {r: (b, now) for r, (b, _) in last.items()}
            tick = now
            for r, v in self.values.items():
                if v["state"] == "stalled":
                    self._named(r, f"stalled in phase '{v['phase']}' after step {v['step']} (no progress for "
                                   f"{v.get('stuck', '?')} s)")
            left = self._deadline(now)
            if left < 0:
                self._stalled(now - self.now[3])
            self._renew_timer(left)
            if (self.store is not None and now - self.answered > self.timeout_s and self.rank != 0
                    and self.values.get(0, {}).get("state") != "done"):
                self._named(0, f"(and the group's store it holds) has been silent for {now - self.answered:.0f} s")
            for r, v in self.values.items():
                if v["state"] == "done":
                    continue
                if r not in last or last[r][0] != v["beat"]:
                    last[r] = (v["beat"], now)
                elif now - last[r][1] > self.timeout_s:
                    self._named(r, f"has been silent for {now - last[r][1]:.0f} s (last seen in phase '{v['phase']}' "
                                   f"after step {v['step']}): its process froze or its node is lost")

    def close(self):
        """Tell the others to stop watching this rank; release the agent's timer."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        if self.timer is not None:
            try:
                self.timer.release("gandist-progress")
            except (OSError, RuntimeError):
                pass
        if self.store is None:
            return
        self.record["state"] = "done"
        try:
            self.store.set(f"{self.prefix}{self.rank}", json.dumps(self.record))
        except Exception:
            pass


def elastic_agent() -> bool:
    """Is this process a worker of launch/elastic.sh's torchrun agent (its parent)?"""
    return bool(os.environ.get("GANDIST_ELASTIC_NODES") and os.environ.get("TORCHELASTIC_RUN_ID"))


def save_budget(hang_timeout_s: float, longest_s: float, needed_bytes: int) -> float:
    """Seconds a save may take before it counts as stalled: generous against slow disks (10 MB/s) and past saves."""
    return hang_timeout_s + max(hang_timeout_s, 4 * longest_s, needed_bytes / 10e6)

