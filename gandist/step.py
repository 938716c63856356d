"""The D step, the G step and the round that schedules them; the models and optimizers they update.

It reads like Algorithm 1 of the papers: what is minimised is the objective's (gandist.objective),
and the step never mentions ranks, because every random draw is this rank's rows of a world-size
invariant draw (distributed.Draws) and DDP / synchronised BatchNorm are already inside the prepared
models.  D's
gradients are averaged across ranks by DDP, so a loss that is a mean over this rank's samples
becomes the mean over the global batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from gandist import nets
from gandist.distributed import mean_over_ranks
from gandist.ema import EMA
from gandist.nets.layers import convert_sync_batchnorm
from gandist.objective import Objective


@dataclass
class Models:
    G: torch.nn.Module  # prepared (DDP-wrapped when distributed)
    D: torch.nn.Module
    G_raw: torch.nn.Module  # the same modules, unwrapped
    D_raw: torch.nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    ema: EMA | None = None


def make_optimizer(o, params, lr: float) -> torch.optim.Optimizer:
    if o.name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(o.beta1, o.beta2))
    return torch.optim.RMSprop(params, lr=lr)


def build_models(cfg, acc) -> Models:
    """G and D with identical initial weights on every rank and world size, the EMA copy, synchronised
    BatchNorm where asked, the optimizers, all prepared by accelerate."""
    world = acc.num_processes
    torch.manual_seed(cfg.train.seed)
    G, D = nets.build(cfg)
    # The EMA copy is made before BatchNorm is synchronised: calibrating it needs no collective.
    ema = EMA(G, cfg.optim.ema, cfg.optim.ema_start) if cfg.optim.ema > 0 else None
    if cfg.model.sync_bn or (cfg.model.sync_bn is None and world > 1):
        G = convert_sync_batchnorm(G, acc.device.type)
        D = convert_sync_batchnorm(D, acc.device.type)
    opt_g = make_optimizer(cfg.optim, G.parameters(), cfg.optim.lr_g)
    opt_d = make_optimizer(cfg.optim, D.parameters(), cfg.optim.lr_d)
    G, D, opt_g, opt_d = acc.prepare(G, D, opt_g, opt_d)
    if ema is not None:
        ema.model.to(acc.device)
    return Models(G, D, acc.unwrap_model(G), acc.unwrap_model(D), opt_g, opt_d, ema)


@dataclass
class Counters:
    """What the loop counts besides the step; saved in checkpoints."""
    bad_total: int = 0
    skipped_by_scaler: int = 0
    bad_streaks: dict = field(default_factory=dict)  # per loss (D's, G's): non-finite steps in a row


class NonFiniteLoss(RuntimeError):
    pass


class Stepper:
    """Holds what the two steps need; `round(step)` runs n_critic D steps and g_steps G steps."""

    def __init__(self, cfg, accelerator, models: Models, feed, draws):
        self.cfg, self.acc, self.m, self.feed, self.draws = cfg, accelerator, models, feed, draws
        self.scaler = accelerator.scaler if cfg.train.mixed_precision == "fp16" else None
        self.objective = Objective(cfg.loss, cfg.train.steps, draws, self.scaler)
        self.counters = Counters()

    def d_step(self, j: int, step: int) -> tuple[dict, torch.Tensor | None]:
        """D-step j: (cross-rank stats, the labels of its batch)."""
        m = self.m
        real, y = self.feed.batch(j)
        with self.acc.autocast():
            z = self.draws.randn(j, "z_d", self.cfg.model.z_dim)
            with torch.no_grad():
                fake = m.G(z, y)
            loss, stats = self.objective.d_loss(m.D, real, fake, y, j, step)
        self.acc.backward(loss)
        stats = self._reduce(stats)
        if self._apply(m.opt_d, stats, self.objective.d_guard):
            self.objective.after_d_step(m.D_raw)
        return stats, y

    def g_step(self, i: int, step: int, y: torch.Tensor | None) -> dict:
        """G-step i, for the labels y (those of the round's last D batch, as the data gives them)."""
        m = self.m
        # D is a fixed function here: its parameters need no gradient, and calling it unwrapped
        # keeps DDP's reducer from waiting for D gradients that never come.
        m.D_raw.requires_grad_(False)
        try:
            with self.acc.autocast():
                fake = m.G(self.draws.randn(i, "z_g", self.cfg.model.z_dim), y)
                loss, stats = self.objective.g_loss(m.D_raw, fake, y, i, step)
            self.acc.backward(loss)
        finally:
            m.D_raw.requires_grad_(True)
        stats = self._reduce(stats)
        self._apply(m.opt_g, stats, "loss_g")
        return stats

    def _reduce(self, stats: dict) -> dict:
        return mean_over_ranks({k: float(v) for k, v in stats.items()}, self.acc.device)

    def _apply(self, opt, stats: dict, key: str) -> bool:
        """Step the optimizer unless the (cross-rank) loss is non-finite; True if it stepped."""
        c = self.counters
        # Streaks are per network: a finite D loss must not hide a G that never steps again.
        finite = math.isfinite(stats[key])
        c.bad_streaks[key] = 0 if finite else c.bad_streaks.get(key, 0) + 1
        if not finite:
            opt.zero_grad(set_to_none=True)
            c.bad_total += 1
            if c.bad_streaks[key] >= self.cfg.train.max_bad_steps:
                raise NonFiniteLoss(f"{key} was non-finite for {c.bad_streaks[key]} steps in a row "
                                    f"(train.max_bad_steps={self.cfg.train.max_bad_steps})")
            return False
        opt.step()
        opt.zero_grad(set_to_none=True)
        if self.scaler is not None and self.acc.optimizer_step_was_skipped:
            c.skipped_by_scaler += 1
            return False
        return True

    def set_lr(self, step: int):
        """The lrs for `step`: a function of the step alone, so a resumed run needs no scheduler state."""
        o = self.cfg.optim
        f = max(0.0, 1.0 - step / self.cfg.train.steps) if o.lr_decay == "linear" else 1.0
        for opt, lr in ((self.m.opt_g, o.lr_g), (self.m.opt_d, o.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * f

    def round(self, step: int) -> dict:
        """One training step: n_critic D steps, then g_steps G steps on the last D batch's labels, then
        the EMA."""
        o = self.cfg.optim
        self.set_lr(step)
        stats, y = {}, None
        for k in range(o.n_critic):
            stats, y = self.d_step(step * o.n_critic + k, step)
        for k in range(o.g_steps):
            stats.update(self.g_step(step * o.g_steps + k, step, y))
        if self.m.ema is not None:
            self.m.ema.update(self.m.G_raw, step)
        return stats
