"""Everything that knows about ranks: this rank's share of a global batch, every collective (reductions,
gathering and broadcasting objects), the stop flag ranks agree on, and how a rank ends when a peer is lost.
The Accelerator that sets up the process group is made by gandist/backends/ddp.py.

World-size invariance by construction: every random draw of a step is a pure function of (seed, step,
purpose) and the global row index, and a rank computes only its own rows (gandist.draws); the embedded
dataset's batch for D-step j is likewise a fixed run of a per-epoch permutation.  So one process and N
processes see the same numbers, and the training step never mentions ranks.
"""
from __future__ import annotations

import atexit
import os
import signal
import socket
import sys
import threading
import time
import uuid
import zlib
from datetime import timedelta
from typing import NoReturn

import numpy as np
import torch
import torch.distributed as dist
# Imported before any process group exists, on purpose: torch.distributed.nn.functional gives ten of its
# functions the default argument `group=group.WORLD`, evaluated when the module is first imported.  Imported
# after init_process_group (torch._dynamo imports it, and torchvision and torch-fidelity import torch._dynamo),
# they keep the default group alive past destroy_process_group, so gloo's threads run on into interpreter
# teardown and the group is destroyed there, when its threads can no longer take the GIL.
import torch.distributed.nn  # noqa: F401


def on_gpu(flag: bool | None, device) -> bool:
    """A perf flag whose null means: on when training on a GPU."""
    return device.type == "cuda" if flag is None else flag


def is_distributed() -> bool:
    """Is there a process group with more than one rank (the only case that needs a collective)?"""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def where(rank: int | None = None) -> str:
    """'rank R on HOST' for messages: the process group's rank, else `rank` (ranks simulated in one
    process by tests and benchmarks), else the launcher's RANK."""
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
    elif rank is None:
        rank = int(os.environ.get("RANK", 0))
    return f"rank {rank} on {socket.gethostname()}"


def seed_sequence(seed: int, step: int, purpose: str) -> np.random.SeedSequence:
    """Well-mixed entropy that depends only on (seed, step, purpose)."""
    return np.random.SeedSequence([seed & 0xFFFFFFFF, step, zlib.crc32(purpose.encode())])


def generator(seed: int, step: int, purpose: str) -> torch.Generator:
    """A CPU generator whose stream depends only on (seed, step, purpose)."""
    state = seed_sequence(seed, step, purpose).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def share(n: int, rank: int, world: int) -> range:
    """This rank's contiguous rows of n (sizes differ by at most one; equal when world divides n)."""
    return range(rank * n // world, (rank + 1) * n // world)


def elastic_world_sizes() -> list[int]:
    """Every world size this job may take: GANDIST_ELASTIC_NODES=MIN:MAX (set for launch/elastic.sh, also by
    slurm/train.sh's elastic mode) times this node's processes; none when the job is not elastic."""
    nodes = os.environ.get("GANDIST_ELASTIC_NODES", "")
    lo, _, hi = nodes.partition(":")
    if not (lo.isdigit() and (hi or lo).isdigit()):
        return []
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return [n * per_node for n in range(int(lo), int(hi or lo) + 1)]


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def reduce_sum(t: torch.Tensor) -> list[float]:
    """The sum over the ranks of a 1-d float64 tensor, read to the host: one all-reduce and one host read."""
    if is_distributed():
        dist.all_reduce(t)
    return t.tolist()


def reduce_max(t: torch.Tensor) -> list[float]:
    """The elementwise max over the ranks of a 1-d float64 tensor, read to the host."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def sum_over_ranks(value: float, device) -> float:
    return reduce_sum(torch.tensor([value], dtype=torch.float64, device=device))[0]


def gather_object(obj) -> list:
    """Every rank's picklable obj, in rank order, on every rank."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    """Rank src's picklable obj, on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def shutdown():
    """Destroy the process group if one is still there (a run that ended in an error never reached
    accelerate's end_training), in ordinary code before the interpreter exits.  Left to interpreter
    teardown, gloo's threads outlive what they use and the process aborts with "terminate called
    without an active exception" after having reported its error and chosen its exit status."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def abandon(status: int) -> NoReturn:
    """End this process at once with `status`, skipping interpreter teardown, after a lost peer.  The
    group cannot be torn down cleanly then: gloo's threads still wait on the frozen or dead peer, and
    teardown aborted one run in five on a busy machine ("terminate called without an active
    exception", status -6 instead of the chosen 1).  Nothing is lost by skipping it: the error is
    printed, checkpoints are written whole or not at all, the metrics file is line-buffered, the
    tracker flushes at each log, and data workers exit on their own when their parent is gone."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


class StopFlag:
    """SIGTERM / SIGUSR1 (SLURM preemption, time limit, docker stop) and a first SIGINT (Ctrl-C) set
    `signum`; the ranks agree on it at log and checkpoint steps (tally.Tally.sync), so all of them
    checkpoint and stop at the same step.  A second SIGINT ends the process at once, with one line."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

    def __init__(self):
        self.signum, self.interrupts = 0, 0
        for s in self.SIGNALS:
            signal.signal(s, self._set)
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
        """At interpreter exit: a stop signal then (SLURM's warning reaching a finished run; a launcher
        script's repeat of one already heard) has nothing left to stop.  Left to the handler, it would kill
        the process in the rest of teardown, where Python has put the default action (terminate) back: a
        finished run would be requeued, a stopped one would lose its status 75.  An atexit hook, not the
        end of gandist.train.main: an ignored signal stays ignored in every process started afterwards,
        and main also runs inside other programs (the tests)."""
        for s in StopFlag.SIGNALS:
            signal.signal(s, signal.SIG_IGN)


class PeerWatch:
    """Finds a hung peer in about train.hang_timeout_s, whatever the collectives are doing.

    A lost node shows itself at once (its connections close), but a hung one (a GPU fault, a stalled
    filesystem) only when a collective times out, and that timeout (train.timeout_s) must stay long enough
    for saves and evaluation.  So each rank's thread bumps a counter of its own in the group's store every
    hang_timeout_s / 10 seconds and reads the others'; a counter that has not moved for hang_timeout_s (on
    this rank's own clock: no clock is compared across hosts) names the silent rank and its host, and this
    rank ends with status 1, so that an elastic agent restarts the group without the silent node.  The
    store lives with rank 0 (in its process, or its node's torchrun agent): a store that has not answered
    for hang_timeout_s names rank 0.  The threads have a store client of their own, so that a frozen store
    holds up neither the watching nor the training's own store calls."""

    def __init__(self, hang_timeout_s: float, rank: int, world: int):
        self.timeout_s, self.rank, self.world = hang_timeout_s, rank, world
        self.every = min(max(hang_timeout_s / 10, 0.2), 5.0)
        self._stop = threading.Event()
        self._thread = None
        addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
        if world < 2 or not dist.is_initialized() or not (addr and port):
            return
        self.store = dist.TCPStore(addr, int(port), is_master=False, wait_for_workers=False,
                                   timeout=timedelta(seconds=60))
        self.names = gather_object(where(rank))  # also a barrier: every rank's client is connected
        # a prefix of this start's own: keys of an earlier start of the group (an elastic restart) are not read
        self.prefix = f"gandist/alive/{broadcast_object(uuid.uuid4().hex)}/"
        self.store.set(f"{self.prefix}{rank}", "0")
        self._thread = threading.Thread(target=self._watch, name="gandist-peer-watch", daemon=True)
        self._thread.start()

    def _silent(self, who: int, seconds: float, what: str = ""):
        print(f"gandist: error ({where()}): {self.names[who]}{what} has been silent for {seconds:.0f} s "
              f"(train.hang_timeout_s={self.timeout_s:g}): it hung or its node is lost; this rank stops so that "
              f"the run can go on without it (an elastic launcher restarts it)", file=sys.stderr)
        abandon(1)

    def _exchange(self):
        """Bump this rank's counter and read the others', every beat.  A call to a store whose host is frozen
        never returns (its timeout covers waiting for a key, not a silent socket): so this runs in a thread of
        its own, and _watch judges from how long ago it last got an answer."""
        beats = 0
        while not self._stop.wait(self.every):
            beats += 1
            try:
                self.store.set(f"{self.prefix}{self.rank}", str(beats))
                keys = {r: f"{self.prefix}{r}" for r in range(self.world) if r != self.rank}
                self.values = {r: self.store.get(k).decode() for r, k in keys.items() if self.store.check([k])}
                self.answered = time.monotonic()
            except Exception:  # the store is gone (its node lost): the collectives will say so first
                continue

    def _watch(self):
        self.values, self.answered = {}, time.monotonic()
        threading.Thread(target=self._exchange, name="gandist-peer-beat", daemon=True).start()
        last: dict[int, tuple[str, float]] = {}  # rank -> (its counter, when it last moved)
        while not self._stop.wait(self.every):
            now = time.monotonic()
            if now - self.answered > self.timeout_s and self.rank != 0 and self.values.get(0) != "done":
                self._silent(0, now - self.answered, " (and the group's store it holds)")
            for r, value in self.values.items():
                if value == "done":
                    continue
                if r not in last or last[r][0] != value:
                    last[r] = (value, now)
                elif now - last[r][1] > self.timeout_s:
                    self._silent(r, now - last[r][1])

    def close(self):
        """This rank is done: the others stop watching it."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        try:
            self.store.set(f"{self.prefix}{self.rank}", "done")
        except Exception:
            pass
