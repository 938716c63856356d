"""Everything that knows about ranks: this rank's share of a global batch, every collective (reductions,
gathering and broadcasting objects), and how a process ends at once.  The Accelerator that sets up the
process group is made by gandist/backends/ddp.py; the stop flag and the watchdog are gandist/liveness.py's.

World-size invariance by construction: every random draw of a step is a pure function of (seed, step,
purpose) and the global row index, and a rank computes only its own rows (gandist.draws); the embedded
dataset's batch for D-step j is likewise a fixed run of a per-epoch permutation.  So one process and N
processes see the same numbers, and the training step never mentions ranks.
"""
from __future__ import annotations

import os
import socket
import sys
import zlib
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
