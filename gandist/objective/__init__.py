"""The objective: everything D and G minimise, built once from the config's `loss` section.

It owns the adversarial term (gandist.objective.losses' registry), InfoGAN's code term, D's regulariser (a penalty added to D's loss,
or a constraint on D's weights after its step: gandist.objective.regularizers' registry), and what D sees of
an image: ADA's augmentations (gandist.objective.ada), DiffAugment (gandist.objective.augment) and annealed
instance noise.  The D and G steps
(gandist.training.step) only call it; they never branch on the config.

Every random number (augmentation, noise, the penalty's alpha) comes from the step's world-size
invariant draws (draws.Draws) by a purpose name, so the objective is the same for any number of
processes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from gandist.draws import Draws
from gandist.objective import losses, regularizers
from gandist.objective.ada import ADA
from gandist.objective.augment import diff_augment, parse_policy
from gandist.objective.regularizers import CriticInputs
from gandist.utils.precision import wide


class Objective:
    def __init__(self, loss_cfg, total_steps: int, draws: Draws, scaler=None, ada: ADA | None = None,
                 info_codes: int = 0):
        self.cfg, self.draws, self.scaler, self.ada = loss_cfg, draws, scaler, ada
        self.info_codes = info_codes
        self.adversarial = losses.lookup(loss_cfg.adversarial)
        self.regularizer = regularizers.lookup(loss_cfg.regularizer)
        self.policy = parse_policy(loss_cfg.diffaugment)
        self.noise_horizon = loss_cfg.instance_noise_steps or total_steps
        # The loss whose finiteness decides whether D's step is taken: under fp16 the penalty is computed
        # from scaled gradients and may overflow on purpose (the scaler then skips the step itself).
        self.d_guard = "loss_d_adv" if scaler is not None else "loss_d"

    # -- what D sees ---------------------------------------------------------------------------------
    def instance_noise(self, step: int) -> float:
        """Std of the Gaussian noise on D's inputs at `step`: linear from loss.instance_noise to 0."""
        s0 = self.cfg.instance_noise
        return s0 * max(0.0, 1.0 - step / self.noise_horizon) if s0 > 0 else 0.0

    def d_view(self, x: torch.Tensor, draw: int, purpose: str, step: int) -> torch.Tensor:
        """x as D sees it: augmented, plus instance noise; `draw` indexes the random draws, `purpose`
        keeps real, fake and G's images on independent streams."""
        if self.ada is not None and self.ada.on:
            x = self.ada.augment(x, lambda n: self.draws.rand(draw, "ada_" + purpose, n))
        if self.policy:
            x = diff_augment(x, self.policy, lambda n: self.draws.rand(draw, "augment_" + purpose, n))
        sigma = self.instance_noise(step)
        if sigma > 0:
            x = x + sigma * self.draws.randn(draw, "noise_" + purpose, *x.shape[1:]).to(x.dtype)
        return x

    # -- what D and G minimise -----------------------------------------------------------------------
    def split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's output as (the adversarial logits, InfoGAN's code logits or None)."""
        return (out[:, 0], out[:, 1:]) if self.info_codes else (out, None)

    def adversarial_d(self, D):
        """D as the adversarial term and the penalties see it: its logit alone."""
        return (lambda x, y: self.split(D(x, y))[0]) if self.info_codes else D

    def info_term(self, q: torch.Tensor | None, codes: torch.Tensor | None) -> torch.Tensor | None:
        """InfoGAN's mutual-information bound as a loss: the cross-entropy of D's code logits on the fakes
        against the code G was given (0 terms without a code)."""
        if q is None:
            return None
        if codes is None:
            raise ValueError("model.info_codes is set, but the fakes came without their codes")
        return F.cross_entropy(wide(q), codes)

    def d_loss(self, D, real: torch.Tensor, fake: torch.Tensor, y, j: int, step: int,
               D_penalty=None, codes: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """D's loss for D-step j and the (detached, this rank's) values to log.  A penalty differentiates
        through `D_penalty` when given: the uncompiled D, when D is compiled (a compiled graph has no
        double backward).  `codes`: the fakes' InfoGAN codes (model.info_codes)."""
        real_in, fake_in = self.d_view(real, j, "d_real", step), self.d_view(fake, j, "d_fake", step)
        out_r = self.split(D(real_in, y))[0]
        out_f, q_f = self.split(D(fake_in, y))
        adv = losses.d_loss(self.adversarial.name, out_r, out_f)
        # r_t (ADA's overfitting heuristic) and the share of fakes D calls fake: the health checks' inputs
        stats = {"loss_d_adv": adv.detach(), "d_real": out_r.mean().detach(), "d_fake": out_f.mean().detach(),
                 "r_t": torch.sign(out_r.detach()).mean(), "d_fake_caught": (out_f.detach() < 0).to(out_f.dtype).mean()}
        if self.ada is not None:
            self.ada.observe(out_r)
        loss = adv
        info = self.info_term(q_f, codes)
        if info is not None:
            loss = loss + self.cfg.info_weight * info
            stats["loss_info"] = info.detach()
            stats["info_acc"] = (q_f.detach().argmax(1) == codes).to(out_f.dtype).mean()
        reg = self.regularizer
        if reg.penalty is not None:
            critic = self.adversarial_d(D if D_penalty is None else D_penalty)
            value = reg.penalty(CriticInputs(critic, real_in, fake_in, y, lambda purpose, n: self.draws.rand(j, purpose, n),
                                             self.scaler))
            loss = loss + reg.weight(self.cfg) * value
            stats[reg.name] = value.detach()
        stats["loss_d"] = loss.detach()
        if self.adversarial.wasserstein:
            stats["wasserstein"] = stats["d_real"] - stats["d_fake"]
        return loss, stats

    def g_loss(self, D, fake: torch.Tensor, y, i: int, step: int,
               codes: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """G's loss for G-step i (D is a fixed function here: the caller freezes it); `codes` as in d_loss."""
        out, q = self.split(D(self.d_view(fake, i, "g", step), y))
        loss = losses.g_loss(self.adversarial.name, out)
        info = self.info_term(q, codes)
        if info is not None:
            loss = loss + self.cfg.info_weight * info
        return loss, {"loss_g": loss.detach()}

    def after_d_step(self, D_raw) -> bool:
        """A constraint on D's weights (WGAN's clipping), after every D step that was taken; True when there
        is one (D's weights were written in place)."""
        if self.regularizer.constraint is None:
            return False
        self.regularizer.constraint(D_raw, self.cfg)
        return True
