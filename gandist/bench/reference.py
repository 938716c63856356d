"""The reference loop of `python -m gandist.bench train`: a training round written the way the classic
scripts are (PyTorch's DCGAN example, Arjovsky et al.'s WGAN, the WGAN-GP PyTorch ports): one process,
no framework, no cross-rank reductions, no logging, no non-finite checks, noise from torch.randn on the
device.  It trains the same networks as gandist (nets.build, same seed) with the same optimizer, loss,
penalty or clipping, n_critic, batch and precision; what it leaves out (EMA, lr schedule, DDP, the
world-size invariant draws, the non-finite guard) is what the benchmark puts a price on.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from gandist import nets


def autocast(device: torch.device, precision: str):
    """torch.autocast for bf16 / fp16, as accelerate enters it; nothing for full precision."""
    if precision == "no":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def d_adversarial(name: str, out_r: torch.Tensor, out_f: torch.Tensor) -> torch.Tensor:
    out_r, out_f = out_r.float(), out_f.float()
    if name == "bce":  # D outputs logits, so BCE-with-logits is the script's Sigmoid + BCELoss
        return (F.binary_cross_entropy_with_logits(out_r, torch.ones_like(out_r))
                + F.binary_cross_entropy_with_logits(out_f, torch.zeros_like(out_f)))
    if name == "hinge":
        return F.relu(1.0 - out_r).mean() + F.relu(1.0 + out_f).mean()
    if name == "wasserstein":
        return out_f.mean() - out_r.mean()
    raise SystemExit(f"gandist.bench: the reference loop has no adversarial loss {name!r}")


def g_adversarial(name: str, out: torch.Tensor) -> torch.Tensor:
    out = out.float()
    if name == "bce":  # the non-saturating G loss: fake labelled real
        return F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
    return -out.mean()


class Reference:
    """`round(r)`: n_critic D steps on pre-made device batches, then g_steps G steps."""

    def __init__(self, cfg, device: torch.device, batches: list):
        if cfg.loss.regularizer not in ("none", "gp", "clip") or cfg.loss.diffaugment or cfg.loss.instance_noise:
            raise SystemExit("gandist.bench: the reference loop covers the bce / hinge / wasserstein losses with "
                             "no regulariser, the gradient penalty or clipping, and no augmentation or instance "
                             "noise; this config asks for more")
        self.cfg, self.device, self.batches = cfg, device, batches
        torch.manual_seed(cfg.train.seed)
        G, D = nets.build(cfg)
        self.G, self.D = G.to(device), D.to(device)
        self.D_fwd = self.D  # what scores images; `compile` makes it a compiled forward (the penalty keeps self.D)
        o = cfg.optim
        if o.name == "adam":
            self.opt_g = torch.optim.Adam(self.G.parameters(), lr=o.lr_g, betas=(o.beta1, o.beta2))
            self.opt_d = torch.optim.Adam(self.D.parameters(), lr=o.lr_d, betas=(o.beta1, o.beta2))
        else:
            self.opt_g = torch.optim.RMSprop(self.G.parameters(), lr=o.lr_g)
            self.opt_d = torch.optim.RMSprop(self.D.parameters(), lr=o.lr_d)
        precision = cfg.train.mixed_precision
        self.autocast = lambda: autocast(device, precision)
        # fp16 needs loss scaling, as in PyTorch's AMP examples; bf16 and fp32 do not
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def _step(self, opt, loss):
        opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            opt.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(opt)
            self.scaler.update()

    def penalty(self, real, fake, y):
        """Gulrajani et al.'s gradient penalty on per-sample interpolates (the AMP recipe under fp16)."""
        alpha = torch.rand(real.size(0), 1, 1, 1, device=self.device)
        x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        out = self.D(x_hat, y).float().sum()
        if self.scaler is not None:
            out = self.scaler.scale(out)
        (grad,) = torch.autograd.grad(out, x_hat, create_graph=True)
        if self.scaler is not None:
            grad = grad / self.scaler.get_scale()
        return ((grad.float().flatten(1).norm(2, dim=1) - 1) ** 2).mean()

    def compile(self) -> None:
        """torch.compile G, and D's forward for everything but the penalty (its double backward needs eager D)."""
        self.G.compile()
        self.D_fwd = torch.compile(self.D)

    def round(self, r: int):
        cfg, o = self.cfg, self.cfg.optim
        adv, reg = cfg.loss.adversarial, cfg.loss.regularizer
        # PyTorch's DCGAN example scores the D step's fakes again in G's step (one G forward a round); the
        # WGAN scripts, with several D steps, draw G's own
        reuse = cfg.reuses_fakes
        y = fake = None
        for k in range(o.n_critic):
            real, y = self.batches[(r * o.n_critic + k) % len(self.batches)]
            z = torch.randn(real.size(0), cfg.model.z_dim, device=self.device)
            with self.autocast():
                with torch.set_grad_enabled(reuse):
                    fake = self.G(z, y)
                loss = d_adversarial(adv, self.D_fwd(real, y), self.D_fwd(fake.detach(), y))
                if reg == "gp":
                    loss = loss + cfg.loss.gp_weight * self.penalty(real, fake.detach(), y)
            self._step(self.opt_d, loss)
            if reg == "clip":
                for p in self.D.parameters():
                    p.data.clamp_(-cfg.loss.clip, cfg.loss.clip)
        self.D.requires_grad_(False)  # the scripts' "for p in netD.parameters(): p.requires_grad = False"
        for _ in range(o.g_steps):
            if not reuse:
                z = torch.randn(real.size(0), cfg.model.z_dim, device=self.device)
            with self.autocast():
                loss = g_adversarial(adv, self.D_fwd(fake if reuse else self.G(z, y), y))
            self._step(self.opt_g, loss)
        self.D.requires_grad_(True)
