"""ADA (Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data"): every image D sees,
real or fake, in D's step and in G's, is augmented with probability p per operation, and p follows D's
overfitting heuristic r_t = E[sign(D(real))] toward a target.

The pipeline is a subset of the paper's "bgc": x-flip, 90-degree rotations, integer translation (by up to
1/8 of the size, reflecting at the border), and colour (brightness, contrast, saturation).  Each operation
is applied to a sample with probability p and then draws its parameter from a distribution that holds the
identity and is symmetric, so that D's view of the data is not "leaky" at p < 0.8 (section 2.2).  Every
random number is this rank's rows of a world-size invariant draw (draws.Draws), and everything is
differentiable in the images, so G learns through it.

The controller: D's steps add sign(D(real)) of their reals, on the device; at log steps the sums of all
ranks arrive with the logged values' all-reduce (tally.Tally.means), and p moves by
sign(r_t - target) x (real images seen since the last adjustment) / (augment.kimg x 1000), clamped to
[0, augment.p_max]: from 0 to 1 in kimg thousand images at most.  p is a host float, the same on every rank.
"""
from __future__ import annotations

import math

import torch

from gandist.objective.augment import int_shift

PIPELINE = ("xflip", "rotate90", "translation", "color")
_NUMBERS = {"xflip": 2, "rotate90": 2, "translation": 3, "color": 6}  # a gate, then the parameters, per sample
SIGNS = "ada_signs"  # the summed counter's name in tally.Tally.means: (sum of sign(D(real)), reals seen)


def ada_augment(x: torch.Tensor, ops: tuple[str, ...], p: float, rand) -> torch.Tensor:
    """x with each of `ops` applied per sample with probability p; rand(n) gives this rank's (b, n) uniforms
    in [0, 1), called once for all the operations (a Draws stream gives the same numbers to every call)."""
    used = [o for o in PIPELINE if o in ops]
    if not used or p <= 0:
        return x
    r = rand(sum(_NUMBERS[o] for o in used)).to(x.device)
    k = 0
    for o in used:
        cols = r[:, k:k + _NUMBERS[o]]
        k += _NUMBERS[o]
        gate = (cols[:, 0] < p)[:, None, None, None]
        x = torch.where(gate, _OPS[o](x, cols[:, 1:]), x)
    return x


def _xflip(x, r):
    return torch.where((r[:, 0] < 0.5)[:, None, None, None], x.flip(3), x)


def _rotate90(x, r):
    k = (r[:, 0] * 4).floor().clamp(max=3)[:, None, None, None]
    out = x
    for turns in (1, 2, 3):
        out = torch.where(k == turns, torch.rot90(x, turns, (2, 3)), out)
    return out


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Indices reflected into [0, n) (mirror without repeating the edge: -1 -> 1, n -> n - 2)."""
    period = 2 * (n - 1)
    i = i.remainder(period)
    return torch.where(i >= n, period - i, i)


def _translation(x, r):
    b, _, h, w = x.shape
    dev = x.device
    gy = _reflect(torch.arange(h, device=dev)[None, :, None] - int_shift(r[:, 0], h)[:, None, None], h)
    gx = _reflect(torch.arange(w, device=dev)[None, None, :] - int_shift(r[:, 1], w)[:, None, None], w)
    bi = torch.arange(b, device=dev)[:, None, None]
    return x[bi, :, gy.expand(b, h, w), gx.expand(b, h, w)].permute(0, 3, 1, 2)


def _normal(u: torch.Tensor) -> torch.Tensor:
    """Standard normals from uniforms in [0, 1) (kept off 0, where the inverse CDF is infinite)."""
    return torch.special.ndtri(u.to(torch.float64).clamp(1e-12, 1 - 1e-12))


def _color(x, r):
    """The paper's brightness (+N(0, 0.2)), contrast (x lognormal(0, 0.5 ln 2)) and saturation (x lognormal(0,
    ln 2)), each gated again by half of the colour columns' spare numbers so that they vary independently."""
    dt = x.dtype
    brightness = (0.2 * _normal(r[:, 0])).to(dt)[:, None, None, None]
    contrast = torch.exp2(0.5 * _normal(r[:, 1])).to(dt)[:, None, None, None]
    saturation = torch.exp2(_normal(r[:, 2])).to(dt)[:, None, None, None]
    on = (r[:, 3:5] < 0.5).to(dt)  # contrast and saturation each on half the time the colour gate opens
    x = x + brightness
    m = x.mean((1, 2, 3), keepdim=True)
    x = (x - m) * (1 + on[:, 0, None, None, None] * (contrast - 1)) + m
    m = x.mean(1, keepdim=True)
    return (x - m) * (1 + on[:, 1, None, None, None] * (saturation - 1)) + m


_OPS = {"xflip": _xflip, "rotate90": _rotate90, "translation": _translation, "color": _color}


class ADA:
    """p, its controller, and the signs counted since the last adjustment (this rank's, on the device)."""

    def __init__(self, aug_cfg, device):
        self.cfg, self.adaptive, self.ops = aug_cfg, aug_cfg.ada, tuple(aug_cfg.pipeline)
        self.p = float(aug_cfg.p)
        self.pending = torch.zeros(2, dtype=torch.float64, device=device)  # sum of sign(D(real)), reals seen
        self.r_t = math.nan  # the last adjustment's

    @property
    def on(self) -> bool:
        return self.adaptive or self.p > 0

    def augment(self, x: torch.Tensor, rand) -> torch.Tensor:
        return ada_augment(x, self.ops, self.p, rand)

    def observe(self, d_real: torch.Tensor) -> None:
        """A D step's outputs on its (augmented) reals: device work only."""
        if self.adaptive:
            self.pending[0] += torch.sign(d_real.detach()).sum().to(torch.float64)
            self.pending[1] += d_real.numel()

    def totals(self) -> dict[str, torch.Tensor]:
        """What tally.Tally.means sums over the ranks with the logged values (nothing without the controller)."""
        return {SIGNS: self.pending} if self.adaptive else {}

    def adjust(self, summed: list[float]) -> dict[str, float]:
        """At a log step, with the pending signs summed over the ranks: move p; its logged values."""
        signs, seen = summed
        self.pending.zero_()
        if seen > 0:
            self.r_t = signs / seen
            step = math.copysign(seen / (self.cfg.kimg * 1000), self.r_t - self.cfg.target)
            self.p = min(self.cfg.p_max, max(0.0, self.p + (step if self.r_t != self.cfg.target else 0.0)))
        return {"ada_p": self.p}

    def state_dict(self, summed_pending: list[float]) -> dict:
        """p, and the signs of all ranks since the last adjustment (summed by the caller: a checkpoint
        between log steps must give a resumed run the same next adjustment)."""
        return {"p": self.p, "pending": list(summed_pending)}

    def load_state_dict(self, state: dict, rank: int) -> None:
        self.p = float(state["p"])
        # the sums of all ranks, held by rank 0 alone: their sum at the next log step is the same
        self.pending.copy_(torch.tensor(state["pending"] if rank == 0 else [0.0, 0.0], dtype=torch.float64))
