"""The runs a comparison covers, each read back from its run directory: its config (flattened to dotted keys),
its status, its metrics rows, and the figures the table shows (throughput, last losses, final and best scores).

An argument is a run directory (config.yaml, metrics.jsonl or lock.json in it), a sweep (sweep.json: its
members in order, those not started yet included) or a folder whose subfolders are runs.
"""
from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from gandist.cli import UsageError
from gandist.compare import manifest, status
from gandist.training import run_dir as layout

# Evaluation scores, and which way is better (FID, KID and the judge's FD are distances to the data; IS, the
# judge's accuracy on the classes asked for, precision and recall grow with quality).
SCORES = {"fid": min, "kid": min, "isc": max, "judge_fd_ratio": min, "judge_acc": max, "precision": max,
          "recall": max}
LOSSES = ("loss_d", "loss_g")
IGNORED = ("output.",)  # every run has its own directory: not a difference worth a column


@dataclass
class Run:
    name: str
    path: Path
    config: dict  # dotted key -> value
    status: status.Status
    train: list[dict] = field(default_factory=list)  # metrics.jsonl's training rows
    evals: list[dict] = field(default_factory=list)  # and its evaluation rows

    @property
    def images_per_sec(self) -> float | None:
        """The median over the logged intervals: a few slow ones (start-up, evaluation) do not move it."""
        values = [r["images_per_sec"] for r in self.train if math.isfinite(r.get("images_per_sec", math.nan))]
        return statistics.median(values) if values else None

    def last(self, key: str) -> float | None:
        """The value of `key` in the last training row (NaN when that is what the run logged)."""
        return self.train[-1].get(key) if self.train else None

    def score(self, key: str) -> tuple[float, float, int] | None:
        """(final, best, step of the best) of an evaluation score, or None when the run has none."""
        points = [(r["step"], r[key]) for r in self.evals if key in r and math.isfinite(r[key])]
        if not points:
            return None
        best_step, best = SCORES[key](points, key=lambda p: p[1])
        return points[-1][1], best, best_step


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _places(arg: str) -> list[tuple[Path, dict | None, int | None]]:
    """(run directory, the config a sweep resolved for it, the steps the sweep asks of it) for each run of one
    argument."""
    p = Path(arg)
    if not p.is_dir():
        raise UsageError(f"{arg}: no such directory (give run directories, sweep directories or folders of runs)")
    if manifest.is_sweep(p):
        return [(p / m["name"], m.get("config"), m.get("steps")) for m in manifest.read(p)["members"]]
    if layout.is_run(p):
        return [(p, None, None)]
    runs = sorted(c for c in p.iterdir() if c.is_dir() and layout.is_run(c))
    if not runs:
        raise UsageError(f"{arg}: neither a run directory (config.yaml, metrics.jsonl), a sweep (sweep.json) "
                         f"nor a folder of run directories")
    return [(c, None, None) for c in runs]


def read_run(path: Path, name: str, resolved: dict | None = None, steps: int | None = None) -> Run:
    """One run from its files; `resolved`: a sweep member's config, for a member with no config.yaml yet."""
    rows = layout.read_metrics(path)
    config = flatten(layout.read_config(path)) or dict(resolved or {})
    return Run(name, path, config, status.of(path, steps, rows), *rows)


def collect(args: list[str]) -> list[Run]:
    places, seen = [], set()
    for arg in args:
        for place in _places(arg):
            if place[0].resolve() not in seen:
                seen.add(place[0].resolve())
                places.append(place)
    paths = [p.resolve() for p, _, _ in places]
    # named by their path below what they share: a sweep's members by their own names
    common = Path(os.path.commonpath(paths)) if len(paths) > 1 else paths[0].parent
    return [read_run(p, str(q.relative_to(common)), resolved, steps)
            for (p, resolved, steps), q in zip(places, paths)]


def differing(runs: list[Run]) -> list[str]:
    """The config keys whose values are not the same in every run, in the config's own order."""
    keys = list(dict.fromkeys(k for r in runs for k in r.config))
    return [k for k in keys if not k.startswith(IGNORED)
            and len({json.dumps(r.config.get(k), sort_keys=True) for r in runs}) > 1]


def short_names(keys: list[str]) -> dict[str, str]:
    """Each key by its last part (optim.lr_d -> lr_d), unless two keys share it."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: s if last.count(s) == 1 else k for k, s in zip(keys, last)}


def value_text(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    return v if isinstance(v, str) else json.dumps(v)


def label(run: Run, keys: list[str]) -> str:
    """What tells the run apart: its values of the differing keys (its name when none differ)."""
    names = short_names(keys)
    return ", ".join(f"{names[k]}={value_text(run.config.get(k))}" for k in keys) or run.name
