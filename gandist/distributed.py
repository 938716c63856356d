"""Everything that knows about ranks: a rank's share of a batch, the collectives, and ending a process at once.

World-size invariance by construction: every random draw is a pure function of (seed, step, purpose) and the
global row index, and a rank computes only its own rows, so one process and N see the same numbers and the
training step never mentions ranks.
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
# Imported before any process group exists, on purpose: its functions default to `group=group.WORLD`, bound at
# first import; bound after init_process_group they keep the group alive past destroy_process_group, and gloo's
# threads then die in interpreter teardown without the GIL.
import torch.distributed.nn  # noqa: F401


def on_gpu(flag: bool | None, device) -> bool:
    """A perf flag whose null means: on when training on a GPU."""
    return device.type == "cuda" if flag is None else flag


def is_distributed() -> bool:
    """A process group with more than one rank: the only case that needs a collective."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def where(rank: int | None = None) -> str:
    """'rank R on HOST': the group's rank, else `rank` (simulated ranks), else the launcher's RANK."""
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
    """Every world size an elastic job may take (GANDIST_ELASTIC_NODES=MIN:MAX times this node's processes)."""
    nodes = os.environ.get("GANDIST_ELASTIC_NODES", "")
    lo, _, hi = nodes.partition(":")
    if not (lo.isdigit() and (hi or lo).isdigit()):
        return []
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return [n * per_node for n in range(int(lo), int(hi or lo) + 1)]


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def reduce_sum(t: torch.Tensor) -> list[float]:
    """Sum over the ranks of a 1-d float64 tensor: one all-reduce, one host read."""
    if is_distributed():
        dist.all_reduce(t)
    return t.tolist()


def reduce_max(t: torch.Tensor) -> list[float]:
    """Elementwise max over the ranks of a 1-d float64 tensor, read to the host."""
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
    """Destroy a leftover process group before the interpreter exits: left to teardown, gloo's threads
    outlive what they use and the process aborts after choosing its exit status."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def abandon(status: int) -> NoReturn:
    """Exit at once with `status`, skipping teardown, after a lost peer: gloo's threads still wait on the
    peer and teardown would abort (status -6).  Nothing is lost: checkpoints are atomic, the metrics file is
    line-buffered, and data workers exit when their parent does."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
