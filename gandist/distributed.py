"""Everything that knows about ranks: the Accelerator, this rank's share of global draws, every
collective (reductions, gathering and broadcasting objects), and the stop flag ranks agree on.

World-size invariance by construction: every random draw of a step (noise, interpolation alpha,
augmentation, instance noise) is a pure function of (seed, step, purpose) and the global row index;
a rank jumps its stream to its first row and draws only its own rows (Draws), so its work grows with
its own batch, not the world's.  The embedded dataset's batch for D-step j is likewise a fixed run of
a per-epoch permutation.  So one process and N processes see the same numbers, and the training step
never mentions ranks.
"""
from __future__ import annotations

import math
import os
import signal
import socket
import zlib
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
# Imported before any process group exists, on purpose: torch.distributed.nn.functional gives ten of its
# functions the default argument `group=group.WORLD`, evaluated when the module is first imported.  Imported
# after init_process_group (torch._dynamo imports it, and torchvision and torch-fidelity import torch._dynamo),
# they keep the default group alive past destroy_process_group, so gloo's threads run on into interpreter
# teardown and the group is destroyed there, when its threads can no longer take the GIL.
import torch.distributed.nn  # noqa: F401
from accelerate import Accelerator
from accelerate.utils import (DistributedDataParallelKwargs, GradScalerKwargs, InitProcessGroupKwargs,
                               ProjectConfiguration)

from gandist.config import ConfigError


def make_accelerator(cfg) -> Accelerator:
    ddp = DistributedDataParallelKwargs(
        # Running statistics are kept equal across ranks by synchronised BatchNorm (or are
        # per-sample norms), so broadcasting buffers from rank 0 each forward is pointless; it is
        # also what makes two forwards of a BatchNorm D before one backward fail with an in-place
        # error on some torch releases.
        broadcast_buffers=False,
        # Every D step's backward reaches every D parameter (the adversarial loss always takes part,
        # also beside a penalty), and the G step never runs D under DDP (see training_loop), so no
        # parameter is ever unused: searching the graph for them each step would only cost time.
        find_unused_parameters=False,
    )
    pg = InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.train.timeout_s))
    cpu = cfg.train.device == "cpu" or (cfg.train.device == "auto" and not torch.cuda.is_available())
    acc = Accelerator(
        mixed_precision=cfg.train.mixed_precision,
        cpu=cpu,
        kwargs_handlers=[ddp, pg, GradScalerKwargs(init_scale=cfg.train.fp16_init_scale)],
        log_with=cfg.log.trackers or None,
        # trackers write under <output.dir>/tensorboard/<run name>/ (see reporting.Reporter)
        project_config=ProjectConfiguration(project_dir=cfg.output.dir,
                                            logging_dir=str(Path(cfg.output.dir) / "tensorboard")),
    )
    if cfg.train.mixed_precision == "fp16" and acc.scaler is None:
        # accelerate quietly runs "fp16" without autocast or loss scaling where it has no fp16 AMP (CPU)
        raise ConfigError(f"train.mixed_precision: fp16 needs a GPU; on {acc.device.type} accelerate would run it "
                          f"as fp32 without a loss scaler. Use bf16 or no there.")
    return acc


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


def _seeds(seed: int, step: int, purpose: str) -> np.random.SeedSequence:
    """Well-mixed entropy that depends only on (seed, step, purpose)."""
    return np.random.SeedSequence([seed & 0xFFFFFFFF, step, zlib.crc32(purpose.encode())])


def generator(seed: int, step: int, purpose: str) -> torch.Generator:
    """A CPU generator whose stream depends only on (seed, step, purpose)."""
    state = _seeds(seed, step, purpose).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def share(n: int, rank: int, world: int) -> range:
    """This rank's contiguous rows of n (sizes differ by at most one; equal when world divides n)."""
    return range(rank * n // world, (rank + 1) * n // world)


class Draws:
    """The step's random numbers: this rank's rows of a global draw, computed alone, on this rank's device.

    Every draw (step, purpose) is one stream of 64-bit words from numpy's PCG64DXSM seeded by (seed, step,
    purpose).  Value v of global row r of a draw of `shape` (k = prod(shape) values a row) is made from word
    r*k + v alone: a uniform from its top bits, a standard normal as the inverse normal CDF of such a uniform
    (torch.special.ndtri, elementwise scalar code: a value doesn't depend on where it sits in the tensor, as
    SIMD loops with scalar tails would make it).  So a rank advances the stream to its first row and draws only
    its own rows' words, and gets the numbers of a 1-process run whatever the world size and rank, made on the
    CPU whatever the device they are moved to.

    Why: PCG64DXSM.advance(n) jumps exactly n words ahead in O(log n), and the generator makes a whole run of
    rows in one fast call, where one generator per row costs a seeding per row and torch's CPU generator
    (mt19937) can't jump at all; one word per value, whatever the distribution, is what makes a row's first
    word computable (torch's and numpy's Gaussians use a varying number of words per value).  A value costs
    more than torch.randn's (the scalar ndtri is most of it: at one process the same global draw takes about
    1.5-3 times as long), but a rank makes only its own values: at 64 ranks its share of a 4096 x 3x64x64
    draw takes ~16 ms where drawing all of it took ~400 ms (CPU, 2 cores).

    `raw_drawn` counts the 64-bit words taken from the streams so far: the work this rank has done."""

    def __init__(self, seed: int, global_batch: int, rank: int, world: int, device: torch.device):
        self.seed, self.global_batch, self.device = seed, global_batch, device
        rows = share(global_batch, rank, world)
        self.rows = slice(rows.start, rows.stop)
        self.raw_drawn = 0

    def randn(self, step: int, purpose: str, *shape: int) -> torch.Tensor:
        """This rank's (rows, *shape) standard normal numbers of the draw (step, purpose), default dtype.

        Cost: one 64-bit word and one ndtri per value of this rank's rows, so a rank's work grows with its own
        batch, not the global one (drawing the global batch and slicing it cost each rank world times more)."""
        words = self._words(step, purpose, shape)
        # 1 + k/2^52 for the top 52 bits k, minus (1 - 2^-53): (k + 1/2) / 2^52, exact, strictly inside (0, 1)
        # and symmetric about 1/2, so ndtri never sees 0 or 1.  In place, in numpy: uint64 shifts are logical,
        # and numpy's elementwise loops use no thread pool (torch's stall when the cores are busy).
        words >>= np.uint64(12)
        words |= _ONE
        u = words.view(np.float64)
        u -= 1 - 2.0 ** -53
        z = torch.from_numpy(u).view(-1, *shape)
        return torch.special.ndtri(z, out=z).to(torch.get_default_dtype()).to(self.device)

    def rand(self, step: int, purpose: str, *shape: int) -> torch.Tensor:
        """This rank's (rows, *shape) uniform numbers in [0, 1) of the draw (step, purpose), default dtype.

        Cost: one 64-bit word per value of this rank's rows only, as for randn."""
        words = self._words(step, purpose, shape)
        dtype = torch.get_default_dtype()
        # The top b bits k as 1 + k/2^b, minus 1: k/2^b exactly, with b the dtype's precision (at most float64's
        # 52 stored bits), so the value is exact in the dtype and never rounds up to 1.
        bits = min(52, 1 - int(math.log2(torch.finfo(dtype).eps)))
        words >>= np.uint64(64 - bits)
        words <<= np.uint64(52 - bits)
        words |= _ONE
        u = words.view(np.float64)
        u -= 1.0
        return torch.from_numpy(u).view(-1, *shape).to(dtype).to(self.device)

    def _words(self, step: int, purpose: str, shape: tuple[int, ...]) -> np.ndarray:
        """Words [first row * k, end row * k) of the (step, purpose) stream: a flat, fresh uint64 array."""
        k = math.prod(shape)
        stream = np.random.PCG64DXSM(_seeds(self.seed, step, purpose))
        stream.advance(self.rows.start * k)
        words = stream.random_raw((self.rows.stop - self.rows.start) * k)
        self.raw_drawn += words.size
        return words


_ONE = np.uint64(0x3FF0000000000000)  # the bits of float64 1.0: OR-ed with 52 random mantissa bits, a float in [1, 2)


def mean_over_ranks(values: dict[str, float | torch.Tensor], device) -> dict[str, float]:
    """Cross-rank mean of scalar metrics, in one all-reduce; identical on every rank."""
    if not values:
        return {}
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    if is_distributed():
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def sum_over_ranks(value: float, device) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    if is_distributed():
        dist.all_reduce(t)
    return float(t.item())


def max_over_ranks(value: float, device) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


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


class StopFlag:
    """SIGTERM / SIGUSR1 (SLURM preemption, time limit, docker stop) set a flag; the ranks agree on it
    at a step boundary, so all of them checkpoint and stop at the same step."""

    def __init__(self):
        self.signum = 0
        for s in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(s, self._set)

    def _set(self, signum, frame):
        self.signum = signum

    def agreed(self, device) -> int:
        """The signal some rank received (the highest number if several), else 0; the same on every rank."""
        return int(max_over_ranks(float(self.signum), device))
