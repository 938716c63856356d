"""The D step and the G step, and the loop that schedules them.  Nothing else.

It reads like Algorithm 1 of the papers: the step never mentions ranks, because every random draw
is a slice of a global draw (distributed.Draws) and DDP / synchronised BatchNorm are already inside
the prepared models.  D's gradients are averaged across ranks by DDP, so a loss that is a mean
over this rank's samples becomes the mean over the global batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from gandist import losses, regularizers
from gandist.augment import diff_augment, parse_policy


@dataclass
class Models:
    G: torch.nn.Module  # prepared (DDP-wrapped when distributed)
    D: torch.nn.Module
    G_raw: torch.nn.Module  # the same modules, unwrapped
    D_raw: torch.nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    ema: object = None


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

    def __init__(self, cfg, accelerator, models: Models, data, draws):
        self.cfg, self.acc, self.m, self.data, self.draws = cfg, accelerator, models, data, draws
        self.policy = parse_policy(cfg.loss.diffaugment)
        self.scaler = accelerator.scaler if cfg.train.mixed_precision == "fp16" else None
        self.counters = Counters()
        self.last_y = None

    # -- what D sees ------------------------------------------------------------------------
    def _d_input(self, x, draw: int, purpose: str, step: int):
        """x as D sees it: augmented, plus annealed instance noise; `draw` indexes the random draws."""
        if self.policy:
            x = diff_augment(x, self.policy, lambda n: self.draws.rand(draw, "augment_" + purpose, n))
        sigma = self._instance_noise(step)
        if sigma > 0:
            x = x + sigma * self.draws.randn(draw, "noise_" + purpose, *x.shape[1:]).to(x.dtype)
        return x

    def _instance_noise(self, step: int) -> float:
        s0 = self.cfg.loss.instance_noise
        if s0 <= 0:
            return 0.0
        horizon = self.cfg.loss.instance_noise_steps or self.cfg.train.steps
        return s0 * max(0.0, 1.0 - step / horizon)

    # -- the two steps --------------------------------------------------------------------
    def d_step(self, j: int, step: int) -> dict:
        cfg, m = self.cfg, self.m
        real, y = self.data.batch(j)
        self.last_y = y
        with self.acc.autocast():
            z = self.draws.randn(j, "z_d", cfg.model.z_dim)
            with torch.no_grad():
                fake = m.G(z, y)
            # Independent augmentation and noise for the real and the fake half, as in the papers.
            real_in, fake_in = self._d_input(real, j, "d_real", step), self._d_input(fake, j, "d_fake", step)
            out_r, out_f = m.D(real_in, y), m.D(fake_in, y)
            adv = losses.d_loss(cfg.loss.adversarial, out_r, out_f)
            stats = {"loss_d_adv": adv.detach(), "d_real": out_r.mean().detach(),
                     "d_fake": out_f.mean().detach()}
            loss = adv
            if cfg.loss.regularizer == "gp":
                alpha = self.draws.rand(j, "alpha", 1).squeeze(1)
                gp = regularizers.gradient_penalty(m.D, real_in, fake_in, y, alpha, self.scaler)
                loss = loss + cfg.loss.gp_weight * gp
                stats["gp"] = gp.detach()
            elif cfg.loss.regularizer == "r1":
                r1 = regularizers.r1_penalty(m.D, real_in, y, self.scaler)
                loss = loss + 0.5 * cfg.loss.r1_gamma * r1
                stats["r1"] = r1.detach()
        self.acc.backward(loss)
        stats["loss_d"] = loss.detach()
        if cfg.loss.adversarial == "wasserstein":
            stats["wasserstein"] = stats["d_real"] - stats["d_fake"]
        stats = self._reduce(stats)
        if self._apply(m.opt_d, stats, "loss_d_adv" if self.scaler else "loss_d") and cfg.loss.regularizer == "clip":
            regularizers.clip_weights_(m.D_raw, cfg.loss.clip)
        return stats

    def g_step(self, i: int, step: int) -> dict:
        cfg, m = self.cfg, self.m
        # D is a fixed function here: its parameters need no gradient, and calling it unwrapped
        # keeps DDP's reducer from waiting for D gradients that never come.
        m.D_raw.requires_grad_(False)
        try:
            with self.acc.autocast():
                z = self.draws.randn(i, "z_g", cfg.model.z_dim)
                fake = m.G(z, self.last_y)
                out = m.D_raw(self._d_input(fake, i, "g", step), self.last_y)
                loss = losses.g_loss(cfg.loss.adversarial, out)
            self.acc.backward(loss)
        finally:
            m.D_raw.requires_grad_(True)
        stats = self._reduce({"loss_g": loss.detach()})
        self._apply(m.opt_g, stats, "loss_g")
        return stats

    def _reduce(self, stats: dict) -> dict:
        from gandist.distributed import mean_over_ranks

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
        """One training step: n_critic D steps, then g_steps G steps, then the EMA."""
        o = self.cfg.optim
        self.set_lr(step)
        stats = {}
        for k in range(o.n_critic):
            stats = self.d_step(step * o.n_critic + k, step)
        for k in range(o.g_steps):
            stats.update(self.g_step(step * o.g_steps + k, step))
        if self.m.ema is not None:
            self.m.ema.update(self.m.G_raw, step)
        return stats
