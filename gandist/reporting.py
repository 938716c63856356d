"""What a run shows and writes, on rank 0 only: the progress bar, metrics.jsonl, trackers,
sample grids and, at the end, loss plots."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch


class Reporter:
    def __init__(self, cfg, accelerator, run_dir: Path, start_step: int):
        self.cfg, self.acc, self.run_dir = cfg, accelerator, run_dir
        self.main = accelerator.is_main_process
        self.progress = None
        if self.main:
            (run_dir / "samples").mkdir(parents=True, exist_ok=True)
            self.metrics_file = open(run_dir / "metrics.jsonl", "a", buffering=1)
            if cfg.log.progress:
                from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                           TimeElapsedColumn, TimeRemainingColumn)

                self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                         TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                         refresh_per_second=2)
                self.task = self.progress.add_task(cfg.variant, total=cfg.train.steps, completed=start_step, info="")
                self.progress.start()

    def print(self, *args):
        if self.main:
            (self.progress.console if self.progress else __import__("rich").get_console()).print(*args)

    def advance(self, step: int, stats: dict):
        if self.progress:
            info = " ".join(f"{k} {stats[k]:.3f}" for k in ("loss_d", "loss_g") if k in stats)
            if "images_per_sec" in stats:
                info += f" {stats['images_per_sec']:.0f} img/s"
            self.progress.update(self.task, completed=step, info=info)

    def log(self, step: int, stats: dict):
        """stats are already cross-rank values (identical on every rank)."""
        row = {"step": step, **{k: float(v) for k, v in stats.items()}, "time": time.time()}
        if self.main:
            self.metrics_file.write(json.dumps(row) + "\n")
        if self.cfg.log.trackers:
            self.acc.log({k: v for k, v in row.items() if k not in ("step", "time")}, step=step)

    def close(self):
        if self.progress:
            self.progress.stop()
        if self.main:
            self.metrics_file.close()


def save_grid(images: torch.Tensor, path: Path, nrow: int):
    from torchvision.utils import save_image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    save_image(images.float().clamp(-1, 1) * 0.5 + 0.5, tmp, nrow=nrow, padding=2)
    tmp.replace(path)


def plot_metrics(run_dir: Path):
    """losses.png from metrics.jsonl, drawn with PIL (no plotting library needed)."""
    from PIL import Image, ImageDraw

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    keys = [k for k in ("loss_d", "loss_g", "wasserstein", "gp") if any(k in r for r in rows)]
    if not rows or not keys:
        return
    W, H, pad = 800, 400, 40
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    steps = [r["step"] for r in rows]
    vals = [r[k] for r in rows for k in keys if k in r and abs(r[k]) < 1e6]
    lo, hi = min(vals), max(vals)
    hi = hi if hi > lo else lo + 1
    s0, s1 = min(steps), max(max(steps), min(steps) + 1)
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    d.rectangle([pad, pad, W - pad, H - pad], outline="black")
    for c, k in zip(colours, keys):
        pts = [(pad + (r["step"] - s0) / (s1 - s0) * (W - 2 * pad), H - pad - (r[k] - lo) / (hi - lo) * (H - 2 * pad))
               for r in rows if k in r and abs(r[k]) < 1e6]
        if len(pts) > 1:
            d.line(pts, fill=c, width=2)
        d.text((pad + 10 + 90 * keys.index(k), 10), k, fill=c)
    d.text((pad, H - pad + 8), f"step {s0}", fill="black")
    d.text((W - pad - 80, H - pad + 8), f"step {s1}", fill="black")
    d.text((4, pad), f"{hi:.3g}", fill="black")
    d.text((4, H - pad - 10), f"{lo:.3g}", fill="black")
    img.save(run_dir / "losses.png")
