"""What a run shows and writes, on rank 0 only: the progress bar and messages, metrics.jsonl with
throughput and counters, trackers, sample grids and, at the end, loss plots.

Collectives: `after_round` (on log steps it sums throughput and skipped samples over the ranks) is
called by every rank; so is `log`, whose values are already cross-rank.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from rich import get_console
from torchvision.utils import save_image

from gandist import config
from gandist.console import progress_bar
from gandist.distributed import generator, sum_over_ranks
from gandist.run_dir import METRICS


class Reporter:
    def __init__(self, cfg, accelerator, run_dir: Path, start_step: int):
        self.cfg, self.acc, self.run_dir = cfg, accelerator, run_dir
        self.main = accelerator.is_main_process
        self.progress = None
        # images this rank pushes through D per round, for images_per_sec
        self.images_per_round = cfg.optim.n_critic * (cfg.train.batch_size // accelerator.num_processes)
        self.t_last, self.n_last = time.perf_counter(), start_step
        self.z_fixed, self.y_fixed, self.nrow = fixed_inputs(cfg, accelerator.device)
        if self.main:
            (run_dir / "samples").mkdir(parents=True, exist_ok=True)
            self.metrics_file = open(run_dir / METRICS, "a", buffering=1)
            if cfg.log.progress:
                self.progress = progress_bar(info=True)
                self.task = self.progress.add_task(cfg.variant, total=cfg.train.steps, completed=start_step, info="")
                self.progress.start()

    def print(self, *args):
        if self.main:
            (self.progress.console if self.progress else get_console()).print(*args)

    def after_round(self, done: int, stats: dict, counters, feed):
        """Every rank, after each round: on log steps, add throughput and counters to the round's stats
        and log them; then move the bar."""
        if done % self.cfg.train.log_every == 0 or done == self.cfg.train.steps:
            now = time.perf_counter()
            local_rate = (done - self.n_last) * self.images_per_round / max(now - self.t_last, 1e-9)
            stats["images_per_sec"] = sum_over_ranks(local_rate, self.acc.device)
            stats["bad_steps"] = counters.bad_total
            stats["data_skipped"] = sum_over_ranks(feed.skipped, self.acc.device)
            if self.cfg.train.mixed_precision == "fp16":
                stats["skipped_steps"] = counters.skipped_by_scaler
            self.log(done, stats)
            self.t_last, self.n_last = now, done
        if self.progress:
            info = " ".join(f"{k} {stats[k]:.3f}" for k in ("loss_d", "loss_g") if k in stats)
            if "images_per_sec" in stats:
                info += f" {stats['images_per_sec']:.0f} img/s"
            self.progress.update(self.task, completed=done, info=info)

    def log(self, step: int, stats: dict):
        """stats are already cross-rank values (identical on every rank)."""
        row = {"step": step, **{k: float(v) for k, v in stats.items()}, "time": time.time()}
        if self.main:
            self.metrics_file.write(json.dumps(row) + "\n")
        if self.cfg.log.trackers:
            self.acc.log({k: v for k, v in row.items() if k not in ("step", "time")}, step=step)

    def scores(self, step: int, scores: dict):
        self.log(step, scores)
        self.print(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in scores.items()))

    @torch.no_grad()
    def grid(self, step: int, G):
        """Rank 0: the fixed-noise sample grid of `step` from generator G (eval mode, restored after)."""
        z, y = self.z_fixed, self.y_fixed
        was = G.training
        G.eval()
        images = torch.cat([G(z[i:i + 256], None if y is None else y[i:i + 256]) for i in range(0, len(z), 256)])
        G.train(was)
        save_grid(images, self.run_dir / "samples" / f"step_{step:06d}.png", self.nrow)

    def close(self):
        if self.progress:
            self.progress.stop()
        if self.main:
            self.metrics_file.close()


def fixed_inputs(cfg, device):
    """The noise and labels behind every sample grid (the same for the whole run), and images per row.
    A class-conditional grid has one class per row and whole rows: log.grid_size is rounded up to a
    multiple of the classes."""
    n, nrow = cfg.log.grid_size, None
    ld = config.label_dim(cfg)
    if ld and not cfg.data.attributes:
        nrow = cfg.data.num_classes
        n = math.ceil(n / nrow) * nrow
    z = torch.randn(n, cfg.model.z_dim, generator=generator(cfg.train.seed, 0, "fixed"))
    y = None
    if ld and not cfg.data.attributes:  # one class per row
        y = torch.nn.functional.one_hot((torch.arange(n) // nrow) % ld, ld).float()
    elif ld:
        y = (torch.rand(n, ld, generator=generator(cfg.train.seed, 1, "fixed")) > 0.5).float()
    return z.to(device), (y.to(device) if y is not None else None), nrow or max(1, int(math.sqrt(n)))


def save_grid(images: torch.Tensor, path: Path, nrow: int):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    save_image(images.float().clamp(-1, 1) * 0.5 + 0.5, tmp, nrow=nrow, padding=2)
    tmp.replace(path)


def plot_metrics(run_dir: Path):
    """losses.png from metrics.jsonl, drawn with PIL (no plotting library needed)."""
    rows = [json.loads(line) for line in (run_dir / METRICS).read_text().splitlines() if line.strip()]
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
