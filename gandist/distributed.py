"""Everything that knows about ranks: the Accelerator, slicing global draws, cross-rank reductions.

World-size invariance by construction: every random draw of a step (noise, interpolation alpha,
augmentation, instance noise) comes from a generator seeded by (seed, step, purpose) and is drawn
at the *global* batch size on every rank; each rank keeps its contiguous slice.  The embedded
dataset's batch for D-step j is likewise a fixed run of a per-epoch permutation.  So one process
and N processes see the same numbers, and the training step never mentions ranks.
"""
from __future__ import annotations

import os
import socket
import zlib
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist


def make_accelerator(cfg):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, GradScalerKwargs, InitProcessGroupKwargs

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
        project_dir=cfg.output.dir,
    )
    if cfg.train.mixed_precision == "fp16" and acc.scaler is None:
        # accelerate quietly runs "fp16" without autocast or loss scaling where it has no fp16 AMP (CPU)
        from gandist.config import ConfigError

        raise ConfigError(f"train.mixed_precision: fp16 needs a GPU; on {acc.device.type} accelerate would run it "
                          f"as fp32 without a loss scaler. Use bf16 or no there.")
    return acc


def where() -> str:
    """'rank R on HOST' for error messages, also before or without a process group."""
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else int(os.environ.get("RANK", 0))
    return f"rank {rank} on {socket.gethostname()}"


def generator(seed: int, step: int, purpose: str) -> torch.Generator:
    """A CPU generator whose stream depends only on (seed, step, purpose)."""
    key = zlib.crc32(purpose.encode())
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, step, key]).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def local_slice(global_n: int, rank: int, world: int) -> slice:
    per = global_n // world
    return slice(rank * per, (rank + 1) * per)


class Draws:
    """The step's random numbers, drawn globally and sliced to this rank, on this rank's device."""

    def __init__(self, seed: int, global_batch: int, rank: int, world: int, device: torch.device):
        self.seed, self.global_batch, self.device = seed, global_batch, device
        self.rows = local_slice(global_batch, rank, world)

    def randn(self, step: int, purpose: str, *shape: int) -> torch.Tensor:
        g = generator(self.seed, step, purpose)
        return torch.randn(self.global_batch, *shape, generator=g)[self.rows].to(self.device)

    def rand(self, step: int, purpose: str, *shape: int) -> torch.Tensor:
        g = generator(self.seed, step, purpose)
        return torch.rand(self.global_batch, *shape, generator=g)[self.rows].to(self.device)


def mean_over_ranks(values: dict[str, float | torch.Tensor], device) -> dict[str, float]:
    """Cross-rank mean of scalar metrics, in one all-reduce; identical on every rank."""
    if not values:
        return {}
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def sum_over_ranks(value: float, device) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return float(t.item())
