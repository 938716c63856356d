"""Pictures of a run, refreshed at every sample step and at the end (rank 0): the curves in plots/
(matplotlib, the field's convention, headless) and samples/progress.gif, the fixed-noise grids over
training as an animation.  Every file is replaced atomically, so a viewer never sees half of one."""
from __future__ import annotations

from pathlib import Path

# matplotlib's Figure without pyplot: no GUI backend and no global figure state, so it draws on cluster
# nodes without a display and never leaks figures.
from matplotlib.figure import Figure
from PIL import Image

from gandist.training import run_dir as layout
from gandist.utils.files import atomic_path

GIF_FRAMES = 100  # at most this many grids in progress.gif, evenly thinned


def smooth(values: list[float]) -> list[float]:
    """TensorBoard-style exponential smoothing with its bias correction for the first points; the weight
    grows with the number of points (0 below 10 rows, 0.95 from 200), so a short run is not flattened."""
    weight = min(0.95, max(0.0, 1.0 - 10.0 / max(len(values), 1)))
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight ** i) if weight else v)
    return out


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if key in r and r[key] == r[key] and abs(r[key]) < 1e30]
    return [s for s, _ in pts], [v for _, v in pts]


def _curve(ax, rows, key: str, label: str, colour: str):
    steps, values = _series(rows, key)
    if not steps:
        return False
    ax.plot(steps, values, color=colour, alpha=0.3, linewidth=0.8)
    ax.plot(steps, smooth(values), color=colour, linewidth=1.8, label=f"{label} (smoothed)")
    return True


def _save(fig, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def plot_losses(rows: list[dict], path: Path, title: str):
    """D and G losses (raw, faint, and smoothed); for Wasserstein variants a second panel with the
    Wasserstein estimate and the penalty."""
    critic = any("wasserstein" in r for r in rows)
    penalty = next((k for k in ("gp", "r1") if any(k in r for r in rows)), None)
    panels = 2 if critic or penalty else 1
    fig = Figure(figsize=(9, 3.6 * panels))
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)
    ax = axes[0][0]
    _curve(ax, rows, "loss_d", "D loss", "tab:blue")
    _curve(ax, rows, "loss_g", "G loss", "tab:red")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if panels == 2:
        ax2 = axes[1][0]
        if critic:
            _curve(ax2, rows, "wasserstein", "Wasserstein estimate E[D(real)] - E[D(fake)]", "tab:green")
        if penalty:
            _curve(ax2, rows, penalty, {"gp": "gradient penalty", "r1": "R1 penalty"}[penalty], "tab:purple")
        ax2.set_ylabel("critic")
    for (a,) in axes:
        a.grid(True, alpha=0.3)
        a.legend(loc="best", fontsize=8)
    axes[-1][0].set_xlabel("step")
    fig.tight_layout()
    _save(fig, path)


# The scores panel: one axis per score (or group of like scores), with which way is better.
SCORE_PANELS = (
    (("fid",), "FID (lower is better)"),
    (("kid",), "KID (lower is better)"),
    (("isc",), "IS (higher is better)"),
    (("judge_fd_ratio",), "judge FD / real-vs-real floor\n(lower is better; 1 = real)"),
    (("judge_fd",), "judge FD (lower is better)"),  # where the judge has no floor
    (("judge_acc",), "judge accuracy on the\nclass asked for (higher is better)"),
    (("judge_mix",), "judge class mix against the\nreal images' (lower is better; 0 = real)"),
    (("precision", "recall", "density", "coverage"), "judge features\n(higher is better; ~1 = real)"),
)
SCORES = tuple(k for keys, _ in SCORE_PANELS for k in keys)


def plot_scores(rows: list[dict], path: Path, title: str):
    """One panel per evaluation score (SCORE_PANELS) against the step; judge FD as its ratio to the floor
    where there is one."""
    have = {k for r in rows for k in r}
    panels = [(keys, label) for keys, label in SCORE_PANELS if have & set(keys)
              and not (keys == ("judge_fd",) and "judge_fd_ratio" in have)]
    fig = Figure(figsize=(9, 3 * len(panels)))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)
    for (ax,), (keys, label) in zip(axes, panels):
        for k, colour in zip((k for k in keys if k in have), ("tab:orange", "tab:blue", "tab:green", "tab:red")):
            steps, values = _series(rows, k)
            ax.plot(steps, values, marker="o", color=colour, label=k)
        if len(keys) > 1:
            ax.legend(loc="best", fontsize=8)
        if keys == ("judge_fd_ratio",):
            ax.set_yscale("log")  # from thousands early on down to about 1
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0][0].set_title(title)
    axes[-1][0].set_xlabel("step")
    fig.tight_layout()
    _save(fig, path)


def plot_throughput(rows: list[dict], path: Path, title: str):
    steps, values = _series(rows, "images_per_sec")
    fig = Figure(figsize=(9, 3.2))
    ax = fig.subplots()
    ax.plot(steps, values, color="tab:gray", alpha=0.4, linewidth=0.8)
    ax.plot(steps, smooth(values), color="tab:gray", linewidth=1.8, label="smoothed")
    ax.set_xlabel("step")
    ax.set_ylabel("images / s (all ranks)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def refresh(run_dir: Path, title: str) -> list[Path]:
    """Redraw plots/losses.png, plots/throughput.png, plots/fid.png (the scores, when the run evaluates) from
    metrics.jsonl and samples/progress.gif from the grids; returns what was written."""
    train, evals = layout.read_metrics(run_dir)
    drawn = []
    if train:
        drawn += [(plot_losses, train, "losses"), (plot_throughput, train, "throughput")]
    if any(k in r for r in evals for k in SCORES):
        drawn.append((plot_scores, evals, "fid"))
    for plot, rows, name in drawn:
        plot(rows, layout.plot_path(run_dir, name), title)
    gif = progress_gif(run_dir)
    return [layout.plot_path(run_dir, name) for _, _, name in drawn] + ([gif] if gif else [])


def gif_frames(grids: list[Path], limit: int = GIF_FRAMES) -> list[Path]:
    """At most `limit` of the grids, evenly spread, always with the first and the last."""
    if len(grids) <= limit:
        return grids
    picks = sorted({round(i * (len(grids) - 1) / (limit - 1)) for i in range(limit)})
    return [grids[i] for i in picks]


def progress_gif(run_dir: Path, seconds_per_frame: float = 0.25) -> Path | None:
    """samples/progress.gif from the sample grids (the last frame held longer)."""
    grids = layout.grids(run_dir)
    if not grids:
        return None
    frames = [Image.open(p).convert("RGB") for p in gif_frames(grids)]
    ms = int(seconds_per_frame * 1000)
    out = layout.progress_gif(run_dir)
    with atomic_path(out) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], loop=0,
                       duration=[ms] * (len(frames) - 1) + [ms * 8], optimize=False)
    return out
