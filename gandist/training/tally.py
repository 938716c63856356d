"""What the rounds count on the device, and the one place it reaches the host: `Tally.sync` and `Tally.means`.

A round reads nothing back from the device (no `.item()`, `float()`, `bool()` of a tensor, no collective
of its own): a host read waits for every queued kernel, which on a GPU empties the queue the CPU keeps
ahead of it.  So the logged values are summed on the device, and the non-finite guard's verdicts are
counted there too (totals, streaks in a row, the worst streak); the loop brings them to the host at log
and checkpoint steps only, in two all-reduces: the counters with the ranks' Verdict (a max), and the logged
values with throughput (a sum).  The Verdict is the one thing the ranks agree on to decide what the loop
does next (stop, save, give up the run directory); it never passes through the logged values.  A run whose guard saw train.max_bad_steps non-finite steps in a row
stops at the first such step after it: the steps in between changed no weight, because the guard
skips them on the device (gandist.training.step).
"""
from __future__ import annotations

from dataclasses import astuple, dataclass, field, fields

import torch

from gandist.distributed import reduce_max, reduce_sum, world_size

GUARDED = ("loss_d", "loss_g")  # the two guarded steps, D's and G's: streaks are counted for each


@dataclass
class Counters:
    """The host's copy of what the guard counted (saved in checkpoints); current after each sync."""
    bad_total: int = 0
    skipped_by_scaler: int = 0
    bad_streaks: dict = field(default_factory=dict)  # per guarded step: non-finite steps in a row


class NonFiniteLoss(RuntimeError):
    pass


@dataclass(frozen=True)
class Verdict:
    """What every rank does after a log or checkpoint step, agreed in Tally.sync's all-reduce: each field is
    the max over the ranks of each rank's own say (so any rank's True, or the highest signal, is everyone's).
    A new decision is one more field here (a number or a bool), read by the loop; nothing else changes."""
    stop: int = 0  # the stop signal a rank received (SIGTERM, SIGUSR1, SIGINT), else 0
    save_due: bool = False  # checkpoint.every_minutes have passed on a rank's clock
    lock_lost: bool = False  # rank 0 found the run directory's lock taken over: every rank stops, writing nothing

    def vector(self) -> list[float]:
        return [float(v) for v in astuple(self)]

    @classmethod
    def of(cls, values: list[float]) -> "Verdict":
        return cls(**{f.name: bool(v) if f.type == "bool" else int(v) for f, v in zip(fields(cls), values)})


# The device vector of counters: totals, then each guarded step's current streak, then its worst since the last sync.
BAD, SKIPPED, STREAK, WORST = 0, 1, 2, 2 + len(GUARDED)


class Tally:
    def __init__(self, device, max_bad_steps: int):
        self.device, self.max_bad_steps = device, max_bad_steps
        self.counters = Counters()
        self._counts = None  # made from `counters` at the first count, so a restored run starts from its checkpoint's
        self._sums: dict[tuple, torch.Tensor] = {}  # for each set of logged keys: their values summed over steps
        self._n: dict[tuple, int] = {}

    # -- in a round: device work only ------------------------------------------------------------------
    def add(self, stats: dict[str, torch.Tensor]) -> None:
        """Add one step's logged values (0-dim tensors, this rank's) to their sums."""
        keys = tuple(stats)
        v = torch.stack([t.detach().to(torch.float64) for t in stats.values()])
        self._sums[keys] = self._sums[keys] + v if keys in self._sums else v
        self._n[keys] = self._n.get(keys, 0) + 1

    def count(self, step_name: str, bad: torch.Tensor, skipped: torch.Tensor | None = None) -> None:
        """Count one guarded step: `bad` is 1 if the guard found it non-finite (so it was not taken), else 0;
        `skipped` is 1 if fp16's loss scaler skipped it."""
        c = self._device_counts()
        i = GUARDED.index(step_name)
        c[BAD].add_(bad)
        c[STREAK + i].add_(1).mul_(bad)  # one more in a row, or back to 0
        c[WORST + i].copy_(torch.maximum(c[WORST + i], c[STREAK + i]))
        if skipped is not None:
            c[SKIPPED].add_(skipped)

    def _device_counts(self) -> torch.Tensor:
        if self._counts is None:
            c = self.counters
            streaks = [c.bad_streaks.get(k, 0) for k in GUARDED]
            self._counts = torch.tensor([c.bad_total, c.skipped_by_scaler, *streaks, *streaks],
                                        dtype=torch.float64, device=self.device)
        return self._counts

    # -- at log and checkpoint steps: the host reads ---------------------------------------------------
    def sync(self, mine: Verdict = Verdict()) -> Verdict:
        """Collective: bring the counters to the host (the same on every rank) and agree on the Verdict (this
        rank's is `mine`) in the same all-reduce; returns the agreed one.  Raises NonFiniteLoss if a guarded
        step was non-finite train.max_bad_steps times in a row since the last sync."""
        c = self._device_counts()
        host = torch.tensor(mine.vector(), dtype=torch.float64, device=c.device)
        values = reduce_max(torch.cat([c, host]))
        verdict = Verdict.of(values[len(c):])
        n = len(GUARDED)
        streaks, worst = values[STREAK:STREAK + n], values[WORST:WORST + n]
        self.counters.bad_total, self.counters.skipped_by_scaler = int(values[BAD]), int(values[SKIPPED])
        self.counters.bad_streaks = {k: int(s) for k, s in zip(GUARDED, streaks)}
        c[WORST:WORST + n].copy_(c[STREAK:STREAK + n])
        for k, w in zip(GUARDED, worst):
            if w >= self.max_bad_steps:
                raise NonFiniteLoss(f"{k} was non-finite for {int(w)} steps in a row "
                                    f"(train.max_bad_steps={self.max_bad_steps})")
        return verdict

    def means(self, sums: dict[str, float], totals: dict[str, torch.Tensor] | None = None) -> dict:
        """Collective: the logged values' means over the steps since the last call and over the ranks, plus
        `sums` (host figures such as throughput) summed over the ranks, in one all-reduce.  `totals` (1-d
        float64 device tensors, e.g. ADA's sign counts) ride the same all-reduce: each comes back summed over
        the ranks, as a list."""
        keys = list(self._sums)
        flat = [k for ks in keys for k in ks]
        host = torch.tensor(list(sums.values()), dtype=torch.float64, device=self.device)
        extra = list((totals or {}).values())
        total = reduce_sum(torch.cat([*(self._sums[ks] for ks in keys), host, *extra]))
        world = world_size()
        counts = [self._n[ks] for ks in keys for _ in ks]
        out = {k: v / (n * world) for k, v, n in zip(flat, total, counts)}
        out.update(zip(sums, total[len(flat):]))
        at = len(flat) + len(sums)
        for name, t in (totals or {}).items():
            out[name], at = total[at:at + len(t)], at + len(t)
        self._sums.clear()
        self._n.clear()
        return out
