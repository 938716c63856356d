"""What a config means at a world size: dist.batch_per_process, the batch that grows with the world.

By default train.batch_size is the global batch whatever the world (the exact path: N processes take
batch_size/N each, and the run does not depend on N).  With dist.batch_per_process = n, `settle` sets
train.batch_size to n x world once the world is known, so that everything reading the global batch (the feeds,
the draws, the reports, the checkpoint's schedule) follows it unchanged, and `lr_factor` scales both lrs by
dist.lr_scaling's rule for k = world processes.  The lrs in the config stay one process's, so settling a
config read back from a run directory again gives the same run.
"""
from __future__ import annotations

import math


def settle(cfg, world: int) -> None:
    """With dist.batch_per_process, make train.batch_size this world's global batch (in place)."""
    if cfg.dist.batch_per_process:
        cfg.train.batch_size = cfg.dist.batch_per_process * world


def processes(cfg) -> int:
    """k, the number of per-process batches in the global one (1 on the exact path); after `settle`."""
    n = cfg.dist.batch_per_process
    return max(1, cfg.train.batch_size // n) if n else 1


def scaled(rule: str, k: int) -> float:
    """dist.lr_scaling's factor for k per-process batches."""
    return {"none": 1.0, "linear": float(k), "sqrt": math.sqrt(k)}[rule]


def lr_factor(cfg) -> float:
    """What both lrs are multiplied by: 1 on the exact path, else dist.lr_scaling's rule for k processes."""
    return scaled(cfg.dist.lr_scaling, processes(cfg))


def describe(cfg, world: int) -> str:
    """The start-up panel's batch row."""
    batch = cfg.train.batch_size
    if not cfg.dist.batch_per_process:
        return f"{batch} global, {batch // world} per rank"
    return (f"{batch} global = {world} x {cfg.dist.batch_per_process} per rank (dist.batch_per_process: grows with "
            f"the world, not world-size invariant), lrs x{lr_factor(cfg):.3g} (dist.lr_scaling={cfg.dist.lr_scaling})")


def resume_warning(cfg, saved_world: int | None) -> list[str]:
    """One warning when a run with dist.batch_per_process resumes at another world size than the checkpoint's
    (None: not recorded): its global batch and lrs are not those of the run that wrote it.  After `settle`."""
    if saved_world is None or not cfg.dist.batch_per_process or saved_world == processes(cfg):
        return []
    world = processes(cfg)
    n, rule = cfg.dist.batch_per_process, cfg.dist.lr_scaling
    then = scaled(rule, saved_world)
    return [f"dist.batch_per_process={n} on {world} processes where the checkpoint's run had {saved_world}: the global "
            f"batch is {n * world} instead of {n * saved_world} and the lrs x{lr_factor(cfg):.3g} instead of "
            f"x{then:.3g} (dist.lr_scaling={rule}); the run is not the one an uninterrupted run would be"]
