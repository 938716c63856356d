"""Health: what the logged values say about how training goes, as warnings that name the config keys to try.

Every check reads the values a log step already brings to the host (tally.Tally.means, cross-rank and the
same on every rank), so it costs no host sync of its own:

- D overpowering G: D classifies real and fake almost perfectly (accuracy from r_t and d_fake_caught) while
  G's loss climbs;
- D overfitting: ADA's r_t = E[sign(D(real))] on the training reals stays near 1, or D scores held-out reals
  (health.heldout_urls) well below the training reals (the gap of their r_t);
- mode collapse: the fakes of a D step are much less diverse than its reals (`diversity`: the ratio of their
  mean pairwise pixel distances, measured at log steps; see `diversity`);
- divergence: the non-finite guard skipped steps (train.max_bad_steps in a row stop the run).

The two sign-based checks are for losses whose D output has a meaning at 0 (bce, hinge), not for a critic.
A condition must hold at health.patience log steps in a row, after health.warmup steps, to be reported:
the first hundred steps of a GAN look alarming and are not.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from gandist.objective.losses import lookup


@dataclass
class Finding:
    name: str
    what: str  # the figures that showed it, at the last step it held
    keys: str  # the config keys to try
    first: int = 0
    last: int = 0
    times: int = 0  # log steps it held at


TAGS = {"D overpowering G": "overpowering", "D overfitting": "overfitting", "mode collapse": "collapse",
        "divergence": "divergence"}  # the logged flags' names: warn_<tag>
KEYS = {
    "D overpowering G": "optim.lr_d (lower, or optim.lr_g higher: TTUR), optim.g_steps=2, model.spectral_norm=true, "
                        "loss.regularizer=r1 (loss.r1_gamma), augment.ada=true",
    "D overfitting": "augment.ada=true (augment.target), loss.diffaugment=color,translation, loss.regularizer=r1 "
                     "(loss.r1_gamma), optim.lr_d (lower), more training images",
    "mode collapse": "loss.adversarial=hinge, model.spectral_norm=true, optim.lr_g (lower), optim.n_critic, "
                     "loss.regularizer=r1, optim.ema",
    "divergence": "optim.lr_d / optim.lr_g (lower), loss.regularizer=r1 or gp, model.spectral_norm=true, "
                  "train.mixed_precision=no",
}


@torch.no_grad()
def diversity(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """The mean pairwise pixel distance of the fakes over that of the reals (0-dim, on the device): about 1 for
    a G as varied as the data, 0 for a G that gives one image.  In pixels rather than D's features: it needs
    no hook in any architecture, and D's features move as D trains, a yardstick that changes under the check."""
    f, r = fake.detach().flatten(1).float(), real.detach().flatten(1).float()
    if len(f) < 2:
        return torch.ones((), device=f.device)
    return torch.pdist(f).mean() / torch.pdist(r).mean().clamp_min(1e-12)


class Health:
    def __init__(self, cfg, resumed: bool = False):
        self.cfg, self.h = cfg, cfg.health
        self.signs = not lookup(cfg.loss.adversarial).wasserstein
        self.found: dict[str, Finding] = {}
        self.streak: dict[str, int] = {}
        self.loss_g: list[float] = []  # G's loss at the log steps so far
        self.bad_total = None if resumed else 0  # a resumed run's first interval is compared with nothing

    def check(self, step: int, stats: dict, bad_total: int) -> tuple[dict[str, float], list[Finding]]:
        """At a log step: the health values to log (1 for each condition that holds now, else 0) and the
        findings that have just reached health.patience log steps in a row (to print)."""
        h, now = self.h, {}
        loss_g = stats.get("loss_g")
        climbing = False
        if loss_g is not None:
            before = self.loss_g[-h.patience:]
            climbing = len(before) == h.patience and loss_g > sum(before) / len(before)
            self.loss_g.append(float(loss_g))
        warm = step > h.warmup
        if self.signs and "r_t" in stats:
            accuracy = ((1 + stats["r_t"]) / 2 + stats["d_fake_caught"]) / 2
            now["d_accuracy"] = accuracy
            if warm and accuracy >= h.d_accuracy and climbing:
                now["D overpowering G"] = (f"D accuracy {accuracy:.3f} >= health.d_accuracy={h.d_accuracy}"
                                                    f" while loss_g climbs ({loss_g:.3f})")
            if warm and stats["r_t"] >= h.r_t_max:
                now["D overfitting"] = (f"r_t {stats['r_t']:.3f} >= health.r_t_max={h.r_t_max}")
            if warm and "r_heldout" in stats and stats["r_t"] - stats["r_heldout"] >= h.gap_max:
                now["D overfitting"] = (f"r_t {stats['r_t']:.3f} on training reals, {stats['r_heldout']:.3f}"
                                                 f" on held-out reals (gap >= health.gap_max={h.gap_max})")
        if warm and "diversity" in stats and stats["diversity"] < h.diversity_min:
            now["mode collapse"] = (f"diversity {stats['diversity']:.3f} (fakes' mean pairwise distance "
                                             f"over the reals') < health.diversity_min={h.diversity_min}")
        if self.bad_total is not None and bad_total > self.bad_total:
            now["divergence"] = (f"{bad_total - self.bad_total} non-finite step(s) skipped since the last "
                                          f"log step ({bad_total} in all; train.max_bad_steps="
                                          f"{self.cfg.train.max_bad_steps} in a row stop the run)")
        self.bad_total = bad_total
        new = []
        values = {"d_accuracy": now.pop("d_accuracy")} if "d_accuracy" in now else {}
        for name, tag in TAGS.items():
            self.streak[name] = self.streak.get(name, 0) + 1 if name in now else 0
            needed = 1 if name == "divergence" else h.patience  # a skipped step is news at once
            held = self.streak[name] >= needed
            values[f"warn_{tag}"] = float(held)
            if held:
                f = self.found.setdefault(name, Finding(name, "", KEYS[name], first=step))
                f.what, f.last, f.times = now[name], step, f.times + 1
                if self.streak[name] == needed:  # each episode is printed once, when it starts
                    new.append(f)
        return values, new

    def summary_rows(self) -> list[tuple[str, str]]:
        """The end summary's rows: each finding with its steps and what to try; one row if none."""
        if not self.found:
            return [("health", "no warnings")]
        return [(f"health: {f.name}", f"at {f.times} log step(s), steps {f.first}..{f.last} (last: {f.what}); "
                                      f"try {f.keys}") for f in self.found.values()]


def line(f: Finding, step: int) -> str:
    """The progress output's warning for a finding."""
    return f"[yellow]health, step {step}: {f.name}: {f.what}; try {f.keys}"
