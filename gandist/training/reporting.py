"""What a run shows and writes, on rank 0 only: the start-up panel, the progress bar and messages,
metrics.jsonl with throughput and counters, TensorBoard (by default: every logged value, grouped as in
`TB_GROUPS`, each sample grid and the run's hyperparameters, in event files in the run directory itself)
and the other trackers (accelerate's, e.g. wandb), sample grids with the plots and the progress GIF
refreshed beside them, and the closing summary.

Every rank calls `rates`, `log_round` and `log` at log steps (their values are already cross-rank:
tally.Tally.means sums the rates); only rank 0 writes.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich import get_console
from rich.panel import Panel
from rich.table import Table
from tensorboard.plugins.hparams.summary_v2 import hparams_pb
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import make_grid

from gandist import config
from gandist.backends.ddp import levers
from gandist.config.world import describe
from gandist.distributed import generator, on_gpu
from gandist.metrics.inception import quantise
from gandist.metrics.registry import score_keys
from gandist.training import plots
from gandist.training.disk import writing
from gandist.training.health import KEYS, TAGS, Health, line
from gandist.training.run_dir import METRICS
from gandist.training.step import optimizer_impl
from gandist.training.tally import NonFiniteLoss
from gandist.utils.console import progress_bar
from gandist.utils.files import atomic_path
from gandist.variants import VARIANTS

TENSORBOARD = "tensorboard"
# TensorBoard names a run by the folder of its event files, relative to --logdir: they go in the run directory
# itself, so `tensorboard --logdir runs` shows each run once, as its directory's name (a sweep's members as
# <sweep>/<member>), with its hyperparameters in the same run (the HParams tab then compares the runs).
# Its Scalars and Time Series tabs group tags by what comes before the first "/", in this order (the
# digit makes TensorBoard's alphabetical order the reading order); metrics.jsonl keeps the bare keys.
TB_GROUPS = {**dict.fromkeys(("loss_d", "loss_g", "loss_d_adv"), "1 losses"),
             **dict.fromkeys(("d_real", "d_fake"), "2 D outputs"),
             **dict.fromkeys(("wasserstein", "gp", "r1"), "3 Wasserstein and penalty"),
             **dict.fromkeys(("images_per_sec", "world_size"), "4 throughput"),
             **dict.fromkeys(("bad_steps", "skipped_steps", "data_skipped", "r_t", "d_fake_caught", "d_accuracy",
                              "r_heldout", "diversity", "ada_p", *(f"warn_{t}" for t in TAGS.values())), "5 health"),
             **dict.fromkeys(score_keys(), "6 scores")}
TB_OTHER = "7 other"  # a value no group names (a registered penalty's, say)
PLOTS_BYTES = 2 << 20  # about what plots/ and progress.gif take when redrawn: the room a redraw needs


class Reporter:
    def __init__(self, cfg, accelerator, run_dir: Path, start_step: int):
        self.cfg, self.acc, self.run_dir = cfg, accelerator, run_dir
        self.main = accelerator.is_main_process
        self.progress = None
        # images this rank pushes through D per round, for images_per_sec
        self.images_per_round = cfg.optim.n_critic * (cfg.train.batch_size // accelerator.num_processes)
        self.t_last, self.n_last = time.perf_counter(), start_step
        self.t0, self.start = self.t_last, start_step
        self.last_stats, self.last_scores = {}, {}
        self.timed = [0.0, 0.0]  # images (all ranks) and seconds over the logged intervals, for the summary
        self.interval = 0.0  # seconds since the log step before the last
        self.info = ""  # the progress bar's figures: the last log step's
        self.z_fixed, self.y_fixed, self.nrow = fixed_inputs(cfg, accelerator.device)
        self.health = Health(cfg, resumed=start_step > 0)
        self.tb = None
        self.others = [t for t in cfg.log.trackers if t != TENSORBOARD]  # accelerate's (backends.ddp passes them)
        if self.others:
            accelerator.init_trackers(run_dir.name, config=flat_config(cfg))
        if self.main:
            if TENSORBOARD in cfg.log.trackers:
                # Not accelerate's tracker: that one writes under <output.dir>/tensorboard/<name>/ and puts the
                # hyperparameters in a second, timestamped run.  purge_step: a resumed run drops what the lost
                # tail of the interrupted run logged.
                self.tb = SummaryWriter(str(run_dir), purge_step=start_step or None)
                # The HParams tab's trial id: the run by name (a sweep's member under its sweep's).  output.*
                # left out: it is where the run is, not how it trains, and differs in every run.
                hparams = {k: v for k, v in flat_config(cfg).items() if not k.startswith("output.")}
                self.tb.file_writer.add_summary(hparams_pb(hparams, trial_id=f"{run_dir.parent.name}/{run_dir.name}"))
                self.tb.flush()
            (run_dir / "samples").mkdir(parents=True, exist_ok=True)
            self.metrics_file = open(run_dir / METRICS, "a", buffering=1)
            if cfg.log.progress:
                self.progress = progress_bar(info=True)
                self.task = self.progress.add_task(cfg.variant, total=cfg.train.steps, completed=start_step, info="")
                self.progress.start()

    def print(self, *args):
        if self.main:
            self.console.print(*args)

    @property
    def console(self):
        """The progress bar's console while it runs (so lines print above it), else rich's."""
        return self.progress.console if self.progress else get_console()

    def rates(self, done: int, feed) -> dict[str, float]:
        """This rank's figures since the last log step, to be summed over the ranks (tally.Tally.means):
        images through D per second, and data samples skipped as unreadable."""
        now = time.perf_counter()
        seconds = max(now - self.t_last, 1e-9)
        rate = (done - self.n_last) * self.images_per_round / seconds
        self.t_last, self.n_last, self.interval = now, done, seconds
        return {"images_per_sec": rate, "data_skipped": float(feed.skipped)}

    def log_round(self, done: int, stats: dict, counters):
        """Every rank, on log steps: the round's cross-rank means and rates, with the guard's counters."""
        self.timed[0] += stats["images_per_sec"] * self.interval
        self.timed[1] += self.interval
        stats["bad_steps"] = counters.bad_total
        stats["world_size"] = self.acc.num_processes  # an elastic run changes it; a row says what it trained at
        if self.cfg.train.mixed_precision == "fp16":
            stats["skipped_steps"] = counters.skipped_by_scaler
        values, new = self.health.check(done, stats, counters.bad_total)
        stats.update(values)
        self.log(done, stats)
        for finding in new:
            self.print(line(finding, done))
            if self.tb is not None:
                self.tb.add_text("health", line(finding, done).removeprefix("[yellow]"), done)
        info = " ".join(f"{k} {stats[k]:.3f}" for k in ("loss_d", "loss_g") if k in stats)
        self.info = f"{info} {stats['images_per_sec']:.0f} img/s"

    def advance(self, done: int):
        """Every round: move the progress bar (no host read: the figures shown are the last log step's)."""
        if self.progress:
            self.progress.update(self.task, completed=done, info=self.info)

    def panel(self, title: str, rows: list[tuple[str, str]], style: str = "bold cyan"):
        """A titled table of facts: a rich panel on a terminal; plain `key: value` lines in a log file (a
        SLURM job's output), where a box would cut long paths at 80 columns."""
        if not self.main:
            return
        console = self.console
        if not console.is_terminal:
            console.print(f"{title}\n" + "\n".join(f"  {k}: {v}" for k, v in rows), soft_wrap=True, highlight=False)
            return
        table = Table.grid(padding=(0, 2))
        table.add_column(style=style)
        table.add_column(overflow="fold")
        for k, v in rows:
            table.add_row(k, v)
        console.print(Panel(table, title=title, expand=False))

    def log(self, step: int, stats: dict):
        """stats are already cross-rank values (identical on every rank)."""
        (self.last_scores if "loss_d" not in stats else self.last_stats).update(stats)
        values = {k: v if isinstance(v, int) else float(v) for k, v in stats.items()}  # counts stay whole numbers
        row = {"step": step, **values, "time": time.time()}
        if self.main:
            line = json.dumps(row) + "\n"
            with writing("a row of", self.run_dir / METRICS, len(line), self.cfg.checkpoint.keep, self.run_dir):
                self.metrics_file.write(line)
        if self.tb is not None:
            for k, v in stats.items():
                self.tb.add_scalar(f"{TB_GROUPS.get(k, TB_OTHER)}/{k}", float(v), step)
            self.tb.flush()
        if self.others:
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
        path = self.run_dir / "samples" / f"step_{step:06d}.png"
        with writing("the sample grid", path, images.numel(), self.cfg.checkpoint.keep, self.run_dir):
            grid = save_grid(images, path, self.nrow)
        if self.tb is not None:
            self.tb.add_image("samples", grid, step, dataformats="HWC")
            self.tb.flush()
        for tracker in self.acc.trackers:
            if hasattr(tracker, "log_images"):
                tracker.log_images({"samples": grid[None]}, step=step, dataformats="NHWC")
        self.refresh()

    def refresh(self):
        """Rank 0: redraw the plots and the progress GIF from what is on disk now."""
        with writing("the plots", self.run_dir / "plots", PLOTS_BYTES, self.cfg.checkpoint.keep, self.run_dir):
            plots.refresh(self.run_dir, f"{self.cfg.variant}: {self.run_dir.name}")

    def summary(self, done: int, rows: list[tuple[str, str]]):
        """Rank 0, at the end: time, mean throughput, the last losses and scores, and where things are."""
        elapsed = time.perf_counter() - self.t0
        last = ", ".join(f"{k} {self.last_stats[k]:.4g}" for k in ("loss_d", "loss_g", "wasserstein", "gp", "r1")
                         if k in self.last_stats)
        scores = ", ".join(f"{k} {v:.4g}" for k, v in self.last_scores.items())
        took = f"{elapsed:.0f} s" if elapsed < 120 else f"{elapsed / 60:.1f} min"
        head = [("time", f"{took} for steps {self.start}->{done} (with sampling, evaluation, checkpoints)"),
                ("throughput", f"{self.timed[0] / max(self.timed[1], 1e-9):.0f} images/s on average over the "
                               f"logged intervals (D's inputs, all ranks)"),
                ("last losses", last or "-")] + ([("last scores", scores)] if scores else [])
        self.panel("gandist: done", head + self.health.summary_rows() + rows, style="bold green")

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, trace):
        if isinstance(exc, NonFiniteLoss):  # the guard's stop is the divergence finding's last word
            self.print(f"[red]health: divergence: {exc}; try {KEYS['divergence']}")
        self.close()

    def close(self):
        if self.progress:
            self.progress.stop()
        if self.main:
            self.metrics_file.close()
        if self.tb is not None:
            self.tb.close()


def fixed_inputs(cfg, device):
    """The noise and labels behind every sample grid (the same for the whole run), and images per row.
    A class-conditional grid has one class per row and whole rows: log.grid_size is rounded up to a
    multiple of the classes."""
    n, nrow = cfg.log.grid_size, None
    ld = cfg.label_dim
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


def save_grid(images: torch.Tensor, path: Path, nrow: int) -> np.ndarray:
    """Write images in [-1, 1] as one PNG grid, quantised as Inception sees them (metrics.inception.quantise,
    the rounding of torchvision's save_image); returns the grid as uint8 (H, W, 3)."""
    u8 = make_grid(quantise(images).cpu(), nrow=nrow, padding=2).permute(1, 2, 0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(u8).save(tmp, format="PNG")
    return u8


def flat_config(cfg) -> dict:
    """The config as dotted keys with scalar values, the form trackers' hyperparameter tables take."""
    out = {}
    for k, v in config.to_dict(cfg).items():
        for kk, vv in (v.items() if isinstance(v, dict) else [("", v)]):
            key = f"{k}.{kk}" if kk else k
            out[key] = vv if isinstance(vv, (int, float, str, bool)) else str(vv)
    return out


def parameters(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def fast_paths(cfg, device) -> str:
    """The perf section as it resolved on this device, in a line."""
    p = cfg.perf
    on = [f"{optimizer_impl(cfg)} {cfg.optim.name}"]
    on += [name for name, flag in (("channels_last", on_gpu(p.channels_last, device)),
                                   ("noise on the device", on_gpu(p.noise_on_device, device)),
                                   ("pinned memory", on_gpu(p.pin_memory, device) and cfg.data.source == "shards"),
                                   ("G reuses D's fakes", p.reuse_fakes and cfg.optim.n_critic == 1
                                    and cfg.optim.g_steps == 1),
                                   ("torch.compile", p.compile)) if flag]
    return ", ".join(on)


def startup_rows(cfg, acc, models, feed, ranks: list[dict], start: int, note: str, run_dir: Path) -> list[tuple]:
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
            ("steps", f"{start}->{cfg.train.steps}" + (note.replace(", resumed", " (resumed") + ")" if note else "")),
            ("run dir", str(run_dir))]
    if TENSORBOARD in cfg.log.trackers:
        rows.append(("tensorboard", f"{run_dir}   (tensorboard --logdir {run_dir.parent})"))
    return rows
