"""The deepspeed backend's side of gandist.training.step: each network's backward and guarded step through
its engine (ZeroUpdate, the counterpart of step.DdpUpdate), so the D and G steps are one code on both backends.

Why (DeepSpeed 0.19, checked by tests/integration/test_zero_engines.py):
- D is called as engine_d.module, never through the engine: a gradient penalty's inner autograd.grad through
  an engine's forward fires its bucket hooks and fails; the hooks sit on D's parameters, so one
  engine_d.backward of the whole D loss still reduces them once, as DDP does;
- D is frozen during G's step: otherwise ZeRO-1 carries G's D gradients into D's next step, and ZeRO-2 asserts;
- p.grad is gone after ZeRO's reduction, so the guard uses ZeRO's own overflow check (all-reduced, the same
  verdict on every rank; a skipped step changes nothing): one host read per step on this backend;
- ZeRO keeps an fp32 copy of each slice and copies it back after each step, so an in-place weight write
  (WGAN's clipping) must also go into that copy (weights_changed).
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from gandist.backends.guard import nonfinite
from gandist.backends.zero.engines import (Engines, ZeroSettings, build_config, load_user_config, make_engines,
                                           require_deepspeed)


class ZeroUpdate:
    """One network's backward and guarded optimizer step through its DeepSpeed engine."""

    def __init__(self, engine, stage: int, device):
        self.engine, self.stage, self.device = engine, stage, device
        if stage > 0:
            engine.optimizer.check_grad_overflow = True  # see the module's docstring: the guard

    @property
    def opt(self):
        return self.engine.optimizer

    @property
    def param_groups(self):
        # the wrapped torch optimizer's groups (ZeRO's flat fp32 slice of this rank): where the lr is set
        return self.engine.optimizer.param_groups

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self) -> torch.Tensor:
        """engine.step() unless some rank's reduced gradients hold a non-finite value; the verdict (0-d float)."""
        if self.stage == 0:
            # stage 0 is DeepSpeed's plain data parallel: the averaged gradients are in p.grad, as under DDP
            found = nonfinite([p.grad for p in self.engine.module.parameters() if p.grad is not None], self.device)
            if found.item():  # a host read per step on this backend
                self.engine.zero_grad()
            else:
                self.engine.step()
            return found
        self.engine.step()  # ZeRO's overflow check decides, the same on every rank, and skips the update
        return torch.tensor(float(bool(self.engine.optimizer.overflow)), device=self.device)

    def weights_changed(self) -> None:
        """The module's weights were written in place (WGAN's clipping): write them into ZeRO's fp32 copy too."""
        if self.stage == 0:
            return
        safe_set = require_deepspeed().utils.safe_set_full_fp32_param
        with torch.no_grad():
            for p in self.engine.module.parameters():
                safe_set(p, p.detach().clone())


def ds_config(cfg, world: int) -> dict:
    """The DeepSpeed config of the run: the user's file (deepspeed.config) or one built from the deepspeed keys."""
    micro = cfg.train.batch_size // world
    if cfg.deepspeed.config:
        return load_user_config(cfg.deepspeed.config, micro, world, cfg.train.mixed_precision)
    d = cfg.deepspeed
    return build_config(ZeroSettings(stage=d.zero_stage, precision=cfg.train.mixed_precision, micro_batch=micro,
                                     world_size=world, gradient_clipping=d.gradient_clipping,
                                     reduce_bucket_size=d.reduce_bucket_size,
                                     allgather_bucket_size=d.allgather_bucket_size, overlap_comm=d.overlap_comm))


def zero_models(cfg, acc, G, D, opt_g, opt_d, ema, models_cls):
    """step.Models for the deepspeed backend (models_cls passed in: step imports this module).  G is called
    through its engine, D only as engine_d.module."""
    config = ds_config(cfg, acc.num_processes)
    if acc.num_processes == 1 and not dist.is_initialized():
        # DeepSpeed works on a torch.distributed group, which accelerate makes only for several processes: a group of
        # one, on an in-process store (no port, no file: DeepSpeed makes new groups on it later), so a plain
        # `python -m gandist.train` runs too
        dist.init_process_group("nccl" if acc.device.type == "cuda" else "gloo", store=dist.HashStore(), rank=0,
                                world_size=1)
    stage = config.get("zero_optimization", {}).get("stage", 0)
    engines: Engines = make_engines(G, D, opt_g, opt_d, config)
    g, d = engines.G, engines.D
    return models_cls(G=g, D=d.module, G_raw=g.module, D_raw=d.module, opt_g=g.optimizer, opt_d=d.optimizer,
                      ema=ema, G_fwd=g, D_fwd=d.module, D_frozen_fwd=d.module,
                      update_g=ZeroUpdate(g, stage, acc.device), update_d=ZeroUpdate(d, stage, acc.device),
                      engines=engines)
