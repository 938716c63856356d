"""Exponential moving average of G's weights, used for samples, evaluation and the export when enabled."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from gandist.data.tensors import condition
from gandist.distributed import generator


class EMA:
    """Averages G's parameters; its BatchNorm statistics are recomputed for the averaged weights
    (`calibrate`) before each use, because G's own running statistics belong to G's current
    weights: paired with averaged ones they shrink or blow up every activation."""

    def __init__(self, G: nn.Module, decay: float, start: int = 0):
        # Made from G before G's BatchNorms are synchronised: calibrating draws the whole global
        # batch on every rank, so this copy needs no collective and gives every rank the same result.
        self.decay, self.start = decay, start
        self.model = copy.deepcopy(G).eval().requires_grad_(False)
        self.calibrated = False  # whether the BatchNorm statistics belong to the current weights

    @torch.no_grad()
    def update(self, G: nn.Module, step: int):
        d = self.decay if step >= self.start else 0.0
        for e, p in zip(self.model.parameters(), G.parameters()):
            e.lerp_(p.detach(), 1.0 - d)
        for e, b in zip(self.model.buffers(), G.buffers()):
            e.copy_(b)  # spectral-norm vectors follow G; BatchNorm statistics are redone by calibrate
        self.calibrated = False

    @torch.no_grad()
    def calibrate(self, z: torch.Tensor, y: torch.Tensor | None = None, chunk: int = 256) -> nn.Module:
        """Sets every BatchNorm's running statistics to the averages over G_ema(z, y) (BigGAN's
        "standing statistics"); returns the model, in eval mode."""
        bns = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if bns:
            momenta = [m.momentum for m in bns]
            for m in bns:
                m.reset_running_stats()
                m.momentum = None  # a cumulative average over the chunks
            self.model.train()
            for i in range(0, len(z), chunk):
                self.model(z[i:i + chunk], None if y is None else y[i:i + chunk])
            for m, momentum in zip(bns, momenta):
                m.momentum = momentum
        self.calibrated = True
        return self.model.eval()

    # what checkpoint.save and checkpoint.load store and restore
    def state_dict(self):
        return self.model.state_dict()

    def load_state_dict(self, state):
        self.model.load_state_dict(state)
        self.calibrated = False


def calibration_inputs(cfg, step: int, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The noise and labels whose statistics become the EMA generator's BatchNorm statistics at `step`:
    a draw of the whole set on every rank, so every rank and world size calibrates alike."""
    n, g = cfg.optim.ema_bn_samples, generator(cfg.train.seed, step, "ema_bn")
    z = torch.randn(n, cfg.model.z_dim, generator=g)
    ld, y = cfg.label_dim, None
    if ld:  # labels as the data gives them (classes, or 0/1 attributes), made into vectors as in training
        labels = torch.randint(2, (n, ld), generator=g) if cfg.data.attributes else torch.randint(ld, (n,), generator=g)
        y = condition(labels, cfg).to(device)
    return z.to(device), y


def calibrate_ema(cfg, models, step: int, device):
    """Recompute the EMA generator's BatchNorm statistics for its current weights (once after each update),
    before anything uses or stores it: its averaged weights never ran with the running statistics G kept."""
    if models.ema is not None and not models.ema.calibrated:
        models.ema.calibrate(*calibration_inputs(cfg, step, device))


def generator_for_use(cfg, models, step: int, device) -> nn.Module:
    """What samples and evaluation use: the EMA generator, calibrated (calibrate_ema), when there is one,
    else G."""
    calibrate_ema(cfg, models, step, device)
    return models.G_raw if models.ema is None else models.ema.model
