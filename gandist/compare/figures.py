"""The runs' curves overlaid, one line (one colour) per run labelled by its differing config keys: losses.png
(D's and G's losses, smoothed as in the runs' own plots) and scores.png (each evaluation score against the
step, when the runs evaluate).  matplotlib without pyplot, as in gandist.training.plots."""
from __future__ import annotations

import math
from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure

from gandist.compare.runs import LOSSES, SCORES, Run, differing, label
from gandist.training.plots import smooth
from gandist.utils.files import atomic_path

TITLES = {"loss_d": "D loss", "loss_g": "G loss", "fid": "FID (lower is better)", "kid": "KID (lower is better)",
          "isc": "IS (higher is better)", "judge_fd_ratio": "judge FD / real-vs-real floor (lower is better)",
          "judge_acc": "judge accuracy on the asked-for class", "precision": "precision (fidelity)",
          "recall": "recall (diversity)"}


def _points(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """A diverged run's NaN and inf rows are left out (its line ends where its values stop being finite)."""
    pts = [(r["step"], r[key]) for r in rows if key in r and math.isfinite(r[key])]
    return [s for s, _ in pts], [v for _, v in pts]


def _colours(n: int) -> list:
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _save(fig: Figure, path: Path):
    with atomic_path(path) as tmp:
        # "tight" grows the canvas to hold the legend under the panels
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")


def _draw(runs: list[Run], keys: list[str], rows_of, path: Path, title: str, smoothed: bool) -> Path | None:
    """One panel per key, one line per run; None (nothing written) when no run has any of the keys."""
    keys = [k for k in keys if any(_points(rows_of(r), k)[0] for r in runs)]
    if not keys:
        return None
    names = differing(runs)
    fig = Figure(figsize=(10, 3.4 * len(keys)), layout="tight")
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)
    for (ax,), key in zip(axes, keys):
        for run, colour in zip(runs, _colours(len(runs))):
            steps, values = _points(rows_of(run), key)
            if steps:  # a marker per point where there are few (a run that stopped at once is one point)
                ax.plot(steps, smooth(values) if smoothed else values, color=colour, linewidth=1.6,
                        marker="o" if len(steps) < 20 or not smoothed else None, markersize=4,
                        label=label(run, names))
        ax.set_ylabel(TITLES.get(key, key) + (" (smoothed)" if smoothed else ""))
        ax.grid(True, alpha=0.3)
    axes[0][0].set_title(title)
    axes[-1][0].set_xlabel("step")
    # one legend, under the panels: a label per run would cover the curves inside a panel
    handles = {lab: h for (ax,) in axes for h, lab in zip(*ax.get_legend_handles_labels())}
    axes[-1][0].legend(handles.values(), handles.keys(), loc="upper center", bbox_to_anchor=(0.5, -0.18),
                       ncol=2 if len(handles) > 6 else 1, fontsize=9, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(fig, path)
    return path


def draw(runs: list[Run], out: Path, title: str) -> list[Path]:
    """out/losses.png and out/scores.png (when some run has scores); returns what was written."""
    written = [_draw(runs, list(LOSSES), lambda r: r.train, out / "losses.png", f"{title}: losses", True),
               _draw(runs, list(SCORES), lambda r: r.evals, out / "scores.png", f"{title}: scores", False)]
    return [p for p in written if p is not None]
