"""Where a run's values go: the console (with rank 0's progress bar), metrics.jsonl, TensorBoard and
accelerate's other trackers (e.g. wandb).  `record(step, values)` is the one way in for a logged value, from
whichever part made it; the sinks decide nothing about what is logged or when (training/reporting.py does).

Every rank calls `record` (the values are already cross-rank, the same everywhere); rank 0 alone writes.
"""
from __future__ import annotations

import time
from pathlib import Path

from rich import get_console
from rich.panel import Panel
from rich.table import Table
from tensorboard.plugins.hparams.summary_v2 import hparams_pb
from torch.utils.tensorboard import SummaryWriter

from gandist import config
from gandist.metrics.registry import score_keys
from gandist.training import run_dir as layout
from gandist.training.disk import writing
from gandist.training.health import TAGS
from gandist.utils.console import progress_bar

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


class Sinks:
    def __init__(self, cfg, accelerator, run_dir: Path, start_step: int):
        self.cfg, self.acc, self.run_dir = cfg, accelerator, run_dir
        self.main = accelerator.is_main_process
        self.progress, self.tb, self.metrics = None, None, None
        self.others = [t for t in cfg.log.trackers if t != TENSORBOARD]  # accelerate's (backends.ddp passes them)
        if self.others:
            accelerator.init_trackers(run_dir.name, config=flat_config(cfg))
        if not self.main:
            return
        if TENSORBOARD in cfg.log.trackers:
            # Not accelerate's tracker: that one writes under <output.dir>/tensorboard/<name>/ and puts the
            # hyperparameters in a second, timestamped run.  purge_step: a resumed run drops what the lost
            # tail of the interrupted run logged.
            self.tb = SummaryWriter(str(run_dir), purge_step=start_step or None)
            # The HParams tab's trial id: the run by name (a sweep's member under its sweep's).  output.* left
            # out: it is where the run is, not how it trains, and differs in every run.
            hparams = {k: v for k, v in flat_config(cfg).items() if not k.startswith("output.")}
            self.tb.file_writer.add_summary(hparams_pb(hparams, trial_id=f"{run_dir.parent.name}/{run_dir.name}"))
            self.tb.flush()
        (run_dir / layout.SAMPLES).mkdir(parents=True, exist_ok=True)
        self.metrics = layout.MetricsLog(run_dir)
        if cfg.log.progress:
            self.progress = progress_bar(info=True)
            self.task = self.progress.add_task(cfg.variant, total=cfg.train.steps, completed=start_step, info="")
            self.progress.start()

    # -- the console -------------------------------------------------------------------------------------
    @property
    def console(self):
        """The progress bar's console while it runs (so lines print above it), else rich's."""
        return self.progress.console if self.progress else get_console()

    def print(self, *args):
        if self.main:
            self.console.print(*args)

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

    def advance(self, done: int, info: str):
        """Move the progress bar (no host read: `info` is the last log step's figures)."""
        if self.progress:
            self.progress.update(self.task, completed=done, info=info)

    # -- logged values, images and text --------------------------------------------------------------------
    def record(self, step: int, stats: dict):
        """One row of cross-rank values at `step`: to metrics.jsonl, TensorBoard and the trackers."""
        values = {k: v if isinstance(v, int) else float(v) for k, v in stats.items()}  # counts stay whole numbers
        row = {"step": step, **values, "time": time.time()}
        if self.metrics is not None:
            line = self.metrics.line(row)
            with writing("a row of", self.metrics.path, len(line), self.cfg.checkpoint.keep, self.run_dir):
                self.metrics.append(line)
        if self.tb is not None:
            for k, v in stats.items():
                self.tb.add_scalar(f"{TB_GROUPS.get(k, TB_OTHER)}/{k}", float(v), step)
            self.tb.flush()
        if self.others:
            self.acc.log({k: v for k, v in row.items() if k not in ("step", "time")}, step=step)

    def image(self, step: int, grid):
        """A sample grid (uint8, H x W x 3) to TensorBoard and the trackers that take images."""
        if self.tb is not None:
            self.tb.add_image("samples", grid, step, dataformats="HWC")
            self.tb.flush()
        for tracker in self.acc.trackers:
            if hasattr(tracker, "log_images"):
                tracker.log_images({"samples": grid[None]}, step=step, dataformats="NHWC")

    def text(self, tag: str, text: str, step: int):
        if self.tb is not None:
            self.tb.add_text(tag, text, step)

    def close(self):
        if self.progress:
            self.progress.stop()
        if self.metrics is not None:
            self.metrics.close()
        if self.tb is not None:
            self.tb.close()


def flat_config(cfg) -> dict:
    """The config as dotted keys with scalar values, the form trackers' hyperparameter tables take."""
    out = {}
    for k, v in config.to_dict(cfg).items():
        for kk, vv in (v.items() if isinstance(v, dict) else [("", v)]):
            key = f"{k}.{kk}" if kk else k
            out[key] = vv if isinstance(vv, (int, float, str, bool)) else str(vv)
    return out
