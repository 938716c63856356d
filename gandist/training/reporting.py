"""What a run reports, and when: the start-up panel's facts, each log step's values with throughput and the
health findings, the evaluation scores, the fixed-noise sample grids with the plots and the progress GIF
refreshed beside them, and the closing summary.  Where the values go is training/sinks.py's business.

Every rank calls `log_round` and `scores` at the same steps (their values are already cross-rank); only
rank 0 writes.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from gandist import __version__
from gandist.backends.ddp import levers
from gandist.config.world import describe
from gandist.distributed import generator, on_gpu
from gandist.metrics.inception import quantise
from gandist.training import plots
from gandist.training import run_dir as layout
from gandist.training.disk import writing
from gandist.training.health import KEYS, Health, line
from gandist.training.sinks import TENSORBOARD, Sinks
from gandist.training.step import optimizer_impl
from gandist.training.tally import NonFiniteLoss
from gandist.utils.files import atomic_path
from gandist.variants import VARIANTS

PLOTS_BYTES = 2 << 20  # about what plots/ and progress.gif take when redrawn: the room a redraw needs


class Throughput:
    """Images through D per second: this rank's since the last log step (the log step's all-reduce sums the
    ranks'), and the run's mean over the logged intervals, for the summary."""

    def __init__(self, cfg, world: int, start_step: int):
        self.images_per_round = cfg.optim.n_critic * (cfg.train.batch_size // world)
        self.t_last, self.n_last = time.perf_counter(), start_step
        self.images, self.seconds = 0.0, 0.0

    def since_last(self, done: int) -> tuple[float, float]:
        """(this rank's images/s, seconds) since the last call."""
        now = time.perf_counter()
        seconds = max(now - self.t_last, 1e-9)
        rate = (done - self.n_last) * self.images_per_round / seconds
        self.t_last, self.n_last = now, done
        return rate, seconds

    def add(self, rate_all_ranks: float, seconds: float):
        self.images += rate_all_ranks * seconds
        self.seconds += seconds

    def mean(self) -> float:
        return self.images / max(self.seconds, 1e-9)


class Reporter:
    def __init__(self, cfg, accelerator, run_dir: Path, start_step: int):
        self.cfg, self.acc, self.run_dir = cfg, accelerator, run_dir
        self.out = Sinks(cfg, accelerator, run_dir, start_step)
        self.print, self.panel = self.out.print, self.out.panel
        self.throughput = Throughput(cfg, accelerator.num_processes, start_step)
        self.health = Health(cfg, resumed=start_step > 0)
        self.t0, self.start_step = time.perf_counter(), start_step
        self.last_stats, self.last_scores = {}, {}
        self.info = ""  # the progress bar's figures: the last log step's
        self.z_fixed, self.y_fixed, self.nrow = fixed_inputs(cfg, accelerator.device)

    def start(self, rows: list[tuple[str, str]]):
        """The start-up line and panel (rows: startup_rows')."""
        self.print(f"gandist {__version__}: {self.cfg.variant} on {self.acc.num_processes} process(es), "
                   f"{self.acc.device.type}")
        self.panel(f"gandist: {self.cfg.variant}", rows)

    def log_round(self, done: int, stats: dict, counters, seconds: float):
        """Every rank, on log steps: the round's cross-rank means and rates (over the last `seconds`), with
        the guard's counters and the health findings."""
        self.throughput.add(stats["images_per_sec"], seconds)
        stats["bad_steps"] = counters.bad_total
        stats["world_size"] = self.acc.num_processes  # an elastic run changes it; a row says what it trained at
        if self.cfg.train.mixed_precision == "fp16":
            stats["skipped_steps"] = counters.skipped_by_scaler
        values, new = self.health.check(done, stats, counters.bad_total)
        stats.update(values)
        self.last_stats.update(stats)
        self.out.record(done, stats)
        for finding in new:
            self.print(line(finding, done))
            self.out.text("health", line(finding, done).removeprefix("[yellow]"), done)
        info = " ".join(f"{k} {stats[k]:.3f}" for k in ("loss_d", "loss_g") if k in stats)
        self.info = f"{info} {stats['images_per_sec']:.0f} img/s"

    def advance(self, done: int):
        self.out.advance(done, self.info)

    def scores(self, step: int, scores: dict):
        self.last_scores.update(scores)
        self.out.record(step, scores)
        self.print(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in scores.items()))

    @torch.no_grad()
    def grid(self, step: int, G):
        """Rank 0: the fixed-noise sample grid of `step` from generator G (eval mode, restored after)."""
        z, y = self.z_fixed, self.y_fixed
        was = G.training
        G.eval()
        images = torch.cat([G(z[i:i + 256], None if y is None else y[i:i + 256]) for i in range(0, len(z), 256)])
        G.train(was)
        path = layout.grid_path(self.run_dir, step)
        with writing("the sample grid", path, images.numel(), self.cfg.checkpoint.keep, self.run_dir):
            grid = save_grid(images, path, self.nrow)
        self.out.image(step, grid)
        self.refresh()

    def refresh(self):
        """Rank 0: redraw the plots and the progress GIF from what is on disk now."""
        with writing("the plots", self.run_dir / layout.PLOTS, PLOTS_BYTES, self.cfg.checkpoint.keep, self.run_dir):
            plots.refresh(self.run_dir, f"{self.cfg.variant}: {self.run_dir.name}")

    def summary(self, done: int, rows: list[tuple[str, str]]):
        """Rank 0, at the end: time, mean throughput, the last losses and scores, and where things are."""
        elapsed = time.perf_counter() - self.t0
        last = ", ".join(f"{k} {self.last_stats[k]:.4g}" for k in ("loss_d", "loss_g", "wasserstein", "gp", "r1")
                         if k in self.last_stats)
        scores = ", ".join(f"{k} {v:.4g}" for k, v in self.last_scores.items())
        took = f"{elapsed:.0f} s" if elapsed < 120 else f"{elapsed / 60:.1f} min"
        head = [("time", f"{took} for steps {self.start_step}->{done} (with sampling, evaluation, checkpoints)"),
                ("throughput", f"{self.throughput.mean():.0f} images/s on average over the logged intervals "
                               f"(D's inputs, all ranks)"),
                ("last losses", last or "-")] + ([("last scores", scores)] if scores else [])
        self.panel("gandist: done", head + self.health.summary_rows() + rows, style="bold green")

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, trace):
        if isinstance(exc, NonFiniteLoss):  # the guard's stop is the divergence finding's last word
            self.print(f"[red]health: divergence: {exc}; try {KEYS['divergence']}")
        self.close()

    def close(self):
        self.out.close()


def fixed_inputs(cfg, device):
    """The noise and labels behind every sample grid (the same for the whole run), and images per row.
    A class-conditional grid has one class per row and whole rows (log.grid_size is rounded up to a
    multiple of the classes); an unconditional InfoGAN's, one code per row."""
    n, nrow = cfg.log.grid_size, None
    ld, k = cfg.label_dim, cfg.model.info_codes
    if ld and not cfg.data.attributes:
        nrow = cfg.data.num_classes
    elif k:  # an unconditional InfoGAN: one code per row instead, to show what each code has come to draw
        nrow = k
    if nrow:
        n = math.ceil(n / nrow) * nrow
    z = torch.randn(n, cfg.model.z_dim, generator=generator(cfg.train.seed, 0, "fixed"))
    if k and nrow == k:  # row r's code is r: its noise value r is raised above the code's other values
        rows = (torch.arange(n) // nrow) % k
        z[torch.arange(n), rows] = z[:, :k].max(1).values + 1
    y = None
    if ld and not cfg.data.attributes:  # one class per row
        y = torch.nn.functional.one_hot((torch.arange(n) // nrow) % ld, ld).float()
    elif ld:
        y = (torch.rand(n, ld, generator=generator(cfg.train.seed, 1, "fixed")) > 0.5).float()
    return z.to(device), (y.to(device) if y is not None else None), nrow or max(1, int(math.sqrt(n)))


def save_grid(images: torch.Tensor, path: Path, nrow: int) -> np.ndarray:
    """Write images in [-1, 1] as one PNG grid, quantised as Inception sees them (metrics.inception.quantise,
    the rounding of torchvision's save_image); returns the grid as uint8 (H, W, 3)."""
    u8 = make_grid(quantise(images).cpu(), nrow=nrow, padding=2).permute(1, 2, 0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(u8).save(tmp, format="PNG")
    return u8


def parameters(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def fast_paths(cfg, device) -> str:
    """The perf section as it resolved on this device, in a line."""
    p = cfg.perf
    on = [f"{optimizer_impl(cfg)} {cfg.optim.name}"]
    on += [name for name, flag in (("channels_last", on_gpu(p.channels_last, device)),
                                   ("noise on the device", on_gpu(p.noise_on_device, device)),
                                   ("pinned memory", on_gpu(p.pin_memory, device) and cfg.data.source == "shards"),
                                   ("G reuses D's fakes", cfg.reuses_fakes),
                                   ("torch.compile", p.compile)) if flag]
    return ", ".join(on)


def resumed_words(resumed, world: int) -> str:
    """' (resumed from PATH[ (written by N processes)][; warning: ...])' for the steps row; '' for a fresh start."""
    if resumed is None:
        return ""
    by = f" (written by {resumed.world_size} processes)" if resumed.world_size != world else ""
    return f" (resumed from {resumed.path}{by}" + "".join(f"; warning: {w}" for w in resumed.changes) + ")"


def startup_rows(cfg, acc, models, feed, ranks: list[dict], resumed, saves) -> list[tuple]:
    """What the start-up panel shows (rank 0 builds it; `ranks` as run.json lists them)."""
    hosts = sorted({r["host"] for r in ranks})
    devices = sorted({r["device"] for r in ranks})
    world = acc.num_processes
    precision = "fp64 (train.fp64)" if cfg.train.fp64 else {"no": "fp32", "bf16": "bf16 autocast",
                                                              "fp16": "fp16 autocast + loss scaling"}[
        cfg.train.mixed_precision]
    rows = [("variant", f"{cfg.variant}: {VARIANTS[cfg.variant].source}"),
            ("networks", f"{cfg.model.arch}: G {parameters(models.G_raw):,} parameters, D {parameters(models.D_raw):,}"
                         + (f", EMA of G ({cfg.optim.ema})" if models.ema is not None else "")),
            ("processes", f"{world} on {len(hosts)} node(s) ({', '.join(hosts[:4])}{', ...' if len(hosts) > 4 else ''})"
                          f", {', '.join(devices[:4])}{', ...' if len(devices) > 4 else ''}"),
            ("backend", "ddp (accelerate)" if models.engines is None else
             f"deepspeed ZeRO-{models.update_g.stage}, one engine each for G and D"
             + (f" ({cfg.deepspeed.config})" if cfg.deepspeed.config else "")),
            ("precision", precision),
            ("batch", describe(cfg, world)),
            ("communication", levers(cfg) + ": not world-size invariant" if levers(cfg) else "exact (fp32 all-reduce)"),
            ("fast paths", fast_paths(cfg, acc.device)),
            ("data", feed.description),
            ("steps", f"{resumed.step if resumed else 0}->{cfg.train.steps}{resumed_words(resumed, world)}"),
            ("run dir", str(saves.run_dir))]
    if TENSORBOARD in cfg.log.trackers:
        rows.append(("tensorboard", f"{saves.run_dir}   (tensorboard --logdir {saves.run_dir.parent})"))
    return rows + [("a failure costs", saves.at_most_lost())]
