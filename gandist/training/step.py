"""The D step, the G step and the round that schedules them; the models and optimizers they update.

It reads like Algorithm 1 of the papers: what is minimised is the objective's (gandist.objective),
and the step never mentions ranks, because every random draw is this rank's rows of a world-size
invariant draw (draws.Draws) and DDP / synchronised BatchNorm are already inside the prepared models.
D's gradients are averaged across ranks by DDP, so a loss that is a mean over this rank's samples
becomes the mean over the global batch.

A round never waits for the device (gandist.training.tally): the logged values are summed there, and the
non-finite guard decides there.  The guard looks at the gradients after DDP has averaged them, so every
rank reaches the same verdict without a collective; a fused optimizer takes the verdict as its
`found_inf` and leaves every weight and moment untouched on a bad step, as it does for fp16's loss scaler.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from gandist import nets
from gandist.backends.ddp import DdpUpdate
from gandist.backends.zero.update import zero_models
from gandist.config.world import lr_factor
from gandist.data.feed import make_feed
from gandist.distributed import on_gpu
from gandist.liveness import Progress
from gandist.nets.conditioning import info_code
from gandist.nets.layers import convert_sync_batchnorm
from gandist.objective import Objective
from gandist.objective.ada import ADA, SIGNS
from gandist.training.ema import EMA
from gandist.training.health import diversity
from gandist.training.tally import Tally


@dataclass
class Models:
    G: torch.nn.Module  # prepared (DDP-wrapped when distributed)
    D: torch.nn.Module
    G_raw: torch.nn.Module  # the same modules, unwrapped
    D_raw: torch.nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    ema: EMA | None = None
    # What the steps call: with perf.compile, compiled forwards of G, D and the frozen D of G's step; else
    # the modules themselves.
    G_fwd: Callable | None = None
    D_fwd: Callable | None = None
    D_frozen_fwd: Callable | None = None
    # Each network's backward and guarded optimizer step: backends/ddp.py's DdpUpdate, or backends/zero/update.py's
    # ZeroUpdate on the deepspeed backend, so that Stepper's D and G steps are the same code on both backends.
    update_g: "DdpUpdate | None" = None
    update_d: "DdpUpdate | None" = None
    engines: object = None  # gandist.backends.zero.engines.Engines on the deepspeed backend
    ada: ADA | None = None  # what D sees through (p and its controller): set by Stepper, saved with the weights

    def __post_init__(self):
        self.G_fwd = self.G if self.G_fwd is None else self.G_fwd
        self.D_fwd = self.D if self.D_fwd is None else self.D_fwd
        self.D_frozen_fwd = self.D_raw if self.D_frozen_fwd is None else self.D_frozen_fwd


def optimizer_impl(cfg) -> str:
    """perf.optimizer, with null resolved: fused where torch has a fused kernel (Adam), else foreach."""
    return cfg.perf.optimizer or ("fused" if cfg.optim.name == "adam" else "foreach")


def make_optimizer(cfg, params, lr: float) -> torch.optim.Optimizer:
    o, impl = cfg.optim, optimizer_impl(cfg)
    flags = {"fused": True} if impl == "fused" else {"foreach": impl == "foreach"}
    if o.name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(o.beta1, o.beta2), **flags)
    return torch.optim.RMSprop(params, lr=lr, **flags)


def build_models(cfg, acc) -> Models:
    """G and D with identical initial weights on every rank and world size, the EMA copy, synchronised
    BatchNorm where asked, the optimizers, all prepared by accelerate (or, on the deepspeed backend, made into
    one engine each, gandist/backends/zero/update.py's zero_models); compiled forwards with perf.compile."""
    world = acc.num_processes
    torch.manual_seed(cfg.train.seed)
    G, D = nets.build(cfg)
    # Not for ZeRO's engines: they flatten the weights into one buffer through views, which needs the default
    # (contiguous) layout ("self.stride(-1) must be 1 to view Float as Byte"); the images stay channels_last.
    if on_gpu(cfg.perf.channels_last, acc.device) and cfg.train.backend != "deepspeed":
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    # The EMA copy is made before BatchNorm is synchronised: calibrating it needs no collective.
    ema = EMA(G, cfg.optim.ema, cfg.optim.ema_start) if cfg.optim.ema > 0 else None
    if cfg.model.sync_bn or (cfg.model.sync_bn is None and world > 1):
        G = convert_sync_batchnorm(G, acc.device.type)
        D = convert_sync_batchnorm(D, acc.device.type)
    opt_g = make_optimizer(cfg, G.parameters(), cfg.optim.lr_g * lr_factor(cfg))  # dist.lr_scaling
    opt_d = make_optimizer(cfg, D.parameters(), cfg.optim.lr_d * lr_factor(cfg))
    if ema is not None:
        ema.model.to(acc.device)
    if cfg.train.backend == "deepspeed":
        return zero_models(cfg, acc, G.to(acc.device), D.to(acc.device), opt_g, opt_d, ema, Models)
    G, D, opt_g, opt_d = acc.prepare(G, D, opt_g, opt_d)
    G_raw, D_raw = acc.unwrap_model(G), acc.unwrap_model(D)
    compiled = {}
    if cfg.perf.compile:
        # The penalty's double backward cannot go through an inductor graph (pytorch/pytorch#91469), so the
        # objective is also given the uncompiled D for it (Stepper.d_step); everything else is compiled.
        compiled = {"G_fwd": torch.compile(G), "D_fwd": torch.compile(D), "D_frozen_fwd": torch.compile(D_raw)}
    return Models(G, D, G_raw, D_raw, opt_g, opt_d, ema, **compiled, update_g=DdpUpdate(acc, opt_g),
                  update_d=DdpUpdate(acc, opt_d))


class Stepper:
    """Holds what the two steps need; `round(step)` runs n_critic D steps and g_steps G steps."""

    def __init__(self, cfg, accelerator, models: Models, feed, draws, progress: Progress | None = None):
        self.cfg, self.acc, self.m, self.feed, self.draws = cfg, accelerator, models, feed, draws
        # where a round is, for the watchdog (gandist.liveness): a data wait, and the forwards and backwards that
        # wait for the other ranks, are told apart from the rest of the step
        self.progress = progress or Progress()
        if models.update_g is None:  # Models made by hand (tests, benches): the ddp backend's
            models.update_g, models.update_d = DdpUpdate(accelerator, models.opt_g), DdpUpdate(accelerator, models.opt_d)
        self.scaler = accelerator.scaler if cfg.train.mixed_precision == "fp16" else None
        self.ada = models.ada = ADA(cfg.augment, accelerator.device)
        self.objective = Objective(cfg.loss, cfg.train.steps, draws, self.scaler, self.ada, cfg.model.info_codes)
        self.tally = Tally(accelerator.device, cfg.train.max_bad_steps)
        self.heldout = None  # real images D never trains on, for the overfitting check
        if cfg.health.heldout_urls:
            held = replace(cfg, data=replace(cfg.data, source="shards", urls=cfg.health.heldout_urls, workers=0))
            self.heldout = make_feed(held, accelerator.process_index, accelerator.num_processes, accelerator.device)
        self.channels_last = on_gpu(cfg.perf.channels_last, accelerator.device)
        self.reuse_fakes = cfg.reuses_fakes  # the D step's fakes keep their graph through G until G's step

    @property
    def counters(self):
        return self.tally.counters

    def log_values(self, rates: dict[str, float]) -> dict:
        """Collective, at log steps: the logged values (tally.Tally.means, with `rates` summed), and ADA's p
        adjusted from the sign counts of all ranks, which ride the same all-reduce."""
        values = self.tally.means(rates, self.ada.totals())
        if SIGNS in values:
            values.update(self.ada.adjust(values.pop(SIGNS)))
        elif self.ada.on:
            values["ada_p"] = self.ada.p
        return values

    def codes(self, z: torch.Tensor) -> torch.Tensor | None:
        """The InfoGAN codes G reads from noise z (model.info_codes), or None."""
        k = self.cfg.model.info_codes
        return info_code(z, k) if k else None

    def d_step(self, j: int, step: int, measure: bool = False
               ) -> tuple[dict, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """D-step j: its logged values (this rank's, on the device), its fakes (with G's graph when they are
        to be reused), the labels of its batch and the fakes' InfoGAN codes.  `measure` (the last D step
        before a log step): also the health checks' values that cost more than a step's
        (gandist.training.health)."""
        m = self.m
        self.progress.within("data wait")
        real, y = self.feed.batch(j)
        # the forward (synchronised BatchNorm) and backward (DDP's all-reduce) wait for the other ranks: a stall in
        # them is the others' to name (gandist.liveness)
        with self.progress.waiting("step"):
            if self.channels_last:
                real = real.contiguous(memory_format=torch.channels_last)
            with self.acc.autocast():
                z = self.draws.randn(j, "z_d", self.cfg.model.z_dim)
                with torch.set_grad_enabled(self.reuse_fakes):
                    fake = m.G_fwd(z, y)
                codes = self.codes(z)
                loss, stats = self.objective.d_loss(m.D_fwd, real, fake.detach(), y, j, step, D_penalty=m.D,
                                                    codes=codes)
            m.update_d.backward(loss)
        self._step(m.update_d, "loss_d", stats[self.objective.d_guard])
        if self.objective.after_d_step(m.D_raw):  # a constraint: a no-op on weights a skipped step left as they were
            m.update_d.weights_changed()
        self.tally.add(stats)
        if measure:
            self.tally.add({"diversity": diversity(fake, real)})
            if self.heldout is not None:
                self.tally.add(self.heldout_signs(step))
        return stats, fake, y, codes

    @torch.no_grad()
    def heldout_signs(self, step: int) -> dict:
        """D's r_t on a batch of held-out reals (health.heldout_urls), seen as D sees its training reals; D's
        BatchNorm statistics are left as they were."""
        real, y = self.heldout.batch(step // self.cfg.train.log_every)
        D = self.m.D_raw
        kept = [b.clone() for b in D.buffers()]
        with self.acc.autocast():
            out = self.objective.split(D(self.objective.d_view(real, step, "heldout", step), y))[0]
        for b, k in zip(D.buffers(), kept):
            b.copy_(k)
        return {"r_heldout": torch.sign(out).mean()}

    def g_step(self, i: int, step: int, y: torch.Tensor | None, fake: torch.Tensor | None = None,
               codes: torch.Tensor | None = None) -> dict:
        """G-step i, for the labels y (those of the round's last D batch, as the data gives them), on `fake`
        (with its InfoGAN `codes`) if given (the D step's, still attached to G's graph), else on fakes of its
        own draw."""
        m = self.m
        # D is a fixed function here: its parameters need no gradient, and calling it unwrapped
        # keeps DDP's reducer from waiting for D gradients that never come.
        m.D_raw.requires_grad_(False)
        try:
            with self.progress.waiting("step"):
                with self.acc.autocast():
                    if fake is None:
                        z = self.draws.randn(i, "z_g", self.cfg.model.z_dim)
                        fake, codes = m.G_fwd(z, y), self.codes(z)
                    loss, stats = self.objective.g_loss(m.D_frozen_fwd, fake, y, i, step, codes)
                m.update_g.backward(loss)
        finally:
            m.D_raw.requires_grad_(True)
        self._step(m.update_g, "loss_g", stats["loss_g"])
        self.tally.add(stats)
        return stats

    def _step(self, update, name: str, guard_loss: torch.Tensor) -> None:
        """Step one network unless its gradients (averaged over the ranks, so the same everywhere) hold a
        non-finite value (update.step decides); count the verdict.  Under fp16 (ddp backend only) the loss
        scaler owns the skipping (an overflow is its business) and a non-finite loss is what counts as bad."""
        if self.scaler is not None:
            opt = update.opt
            scale = self.scaler._get_scale_async().clone()
            opt.step()
            # the scaler halves its scale exactly when it skipped the step: known without a host read
            skipped = (self.scaler._get_scale_async() < scale).to(torch.float64).squeeze()
            self.tally.count(name, (~torch.isfinite(guard_loss)).to(torch.float64), skipped)
            opt.zero_grad(set_to_none=True)
        else:
            self.tally.count(name, update.step().to(torch.float64))

    def set_lr(self, step: int):
        """The lrs for `step`: a function of the step alone, so a resumed run needs no scheduler state."""
        o = self.cfg.optim
        f = max(0.0, 1.0 - step / self.cfg.train.steps) if o.lr_decay == "linear" else 1.0
        f *= lr_factor(self.cfg)  # dist.lr_scaling, with dist.batch_per_process
        for update, lr in ((self.m.update_g, o.lr_g), (self.m.update_d, o.lr_d)):
            for group in update.param_groups:
                group["lr"] = lr * f

    def round(self, step: int) -> None:
        """One training step: n_critic D steps, then g_steps G steps on the last D batch's labels, then
        the EMA."""
        o, t = self.cfg.optim, self.cfg.train
        self.set_lr(step)
        fake, y, codes = None, None, None
        logged = (step + 1) % t.log_every == 0 or step + 1 == t.steps
        for k in range(o.n_critic):
            _, fake, y, codes = self.d_step(step * o.n_critic + k, step, logged and k == o.n_critic - 1)
        for k in range(o.g_steps):
            if self.reuse_fakes:
                self.g_step(step * o.g_steps + k, step, y, fake, codes)
            else:
                self.g_step(step * o.g_steps + k, step, y)
        if self.m.ema is not None:
            self.m.ema.update(self.m.G_raw, step)
