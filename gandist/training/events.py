"""What happens between rounds, each event owning its cadence: the loop (gandist/train.py) asks each whether
it is `due` after a round and runs those that are.

    Agreement   at log and checkpoint steps: the tallies reach the host with the ranks' Verdict (stop, save)
    Log         every train.log_every steps: the logged values, throughput and health
    Progress    every round: the progress bar, and the history row of this start's first step
    Grid        rank 0, every train.sample_every steps: the fixed-noise sample grid, plots, progress GIF
    Evaluation  every eval.every steps: the metrics, every rank taking part
    Checkpoint  every checkpoint.every steps, when a rank's clock or a stop signal asks for one: the save,
                and a stopped run's marker

Each is called as `event(done, verdict)`, `done` the rounds done, `verdict` the last Agreement's (NONE between
log steps), and every one is due at the last step.
"""
from __future__ import annotations

import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path

from gandist.cli import EXIT_REQUEUE
from gandist.liveness import save_budget
from gandist.metrics.evaluator import Evaluator
from gandist.training import checkpoint
from gandist.training import run_dir as layout
from gandist.training.ema import generator_for_use
from gandist.training.lock import RunDirBusy
from gandist.training.tally import Verdict

NONE = Verdict()


@dataclass
class Parts:
    """What the events work on: the run's config, accelerator, models, stepper, data feed, reporter, watchdog."""
    cfg: object
    acc: object
    models: object
    stepper: object
    feed: object
    report: object
    watch: object


class Every:
    """Every `n` rounds (0: never) and at the last."""

    def __init__(self, n: int, last: int):
        self.n, self.last = n, last

    def __call__(self, done: int) -> bool:
        return bool(self.n and done % self.n == 0) or done == self.last


class Agreement:
    """The one place a round's device-side tallies reach the host (training/tally.py), with the one Verdict
    all ranks act on: a stop signal, a time-based save due, the run directory lost."""

    def __init__(self, parts: Parts, stop, saves, lock):
        cfg, self.stepper, self.watch = parts.cfg, parts.stepper, parts.watch
        self.stop, self.saves, self.lock = stop, saves, lock
        self.last = cfg.train.steps
        self.log, self.save = Every(cfg.train.log_every, self.last), Every(cfg.checkpoint.every, self.last)

    def due(self, done: int, verdict=NONE) -> bool:
        return self.log(done) or self.save(done)

    def __call__(self, done: int, verdict=NONE) -> Verdict:
        self.watch.at("log sync", done)
        mine = Verdict(self.stop.signum, self.saves.due(), bool(self.lock is not None and self.lock.lost))
        with self.watch.waiting():
            verdict = self.stepper.tally.sync(mine)
        if verdict.lock_lost:  # we were taken for dead and another run took over: every rank stops
            why = self.lock.lost if self.lock is not None else "another run took its lock over (rank 0 found it)"
            raise RunDirBusy(f"output.dir {self.saves.run_dir}: {why}; this run stops without writing more")
        return replace(verdict, stop=0) if done == self.last else verdict  # the last step ends the run anyway


class Log:
    def __init__(self, parts: Parts):
        self.stepper, self.feed, self.report, self.watch = parts.stepper, parts.feed, parts.report, parts.watch
        self.every = Every(parts.cfg.train.log_every, parts.cfg.train.steps)

    def due(self, done: int, verdict=NONE) -> bool:
        return self.every(done)

    def __call__(self, done: int, verdict=NONE):
        rate, seconds = self.report.throughput.since_last(done)
        with self.watch.waiting():  # the second all-reduce: rates and data skipped, summed over the ranks
            means = self.stepper.log_values({"images_per_sec": rate, "data_skipped": float(self.feed.skipped)})
        self.report.log_round(done, means, self.stepper.counters, seconds)


class Progress:
    def __init__(self, parts: Parts, history):
        self.report, self.history = parts.report, history

    def due(self, done: int, verdict=NONE) -> bool:
        return True

    def __call__(self, done: int, verdict=NONE):
        self.report.advance(done)
        self.history.first_step()


class Grid:
    def __init__(self, parts: Parts):
        self.p = parts
        self.every = Every(parts.cfg.train.sample_every, parts.cfg.train.steps)

    def due(self, done: int, verdict=NONE) -> bool:
        return self.p.acc.is_main_process and self.every(done)

    def __call__(self, done: int, verdict=NONE):
        p = self.p
        p.watch.at("sample grid", done)
        p.report.grid(done, generator_for_use(p.cfg, p.models, done, p.acc.device))


class Evaluation:
    def __init__(self, parts: Parts):
        cfg, acc = parts.cfg, parts.acc
        # built before the first step, so that a missing Inception weights file stops the run at once
        self.evaluate = (Evaluator(cfg, acc.device, acc.process_index, acc.num_processes).prepare()
                         if cfg.eval.metrics else None)
        self.p = parts
        self.every = Every(parts.cfg.eval.every, parts.cfg.train.steps)

    def due(self, done: int, verdict=NONE) -> bool:
        return self.evaluate is not None and self.every(done)

    def __call__(self, done: int, verdict=NONE):
        p = self.p
        p.watch.at("evaluation", done, p.cfg.train.eval_timeout_s)
        with p.watch.waiting():  # every rank takes part; the same scores everywhere
            p.report.scores(done, self.evaluate(generator_for_use(p.cfg, p.models, done, p.acc.device)))


class Checkpoint:
    """The run's saves (training/saves.py times and sizes them); at a stop, the marker gandist-compare and
    launchers read."""

    def __init__(self, parts: Parts, saves):
        self.p, self.saves = parts, saves
        self.every = Every(parts.cfg.checkpoint.every, parts.cfg.train.steps)
        self.longest_s = 0.0

    def due(self, done: int, verdict=NONE) -> bool:
        return self.every(done) or verdict.save_due or bool(verdict.stop)

    def budget(self) -> float:
        """Seconds the next save (or the final weights' export) may take before the watchdog names it."""
        return save_budget(self.p.cfg.train.hang_timeout_s, self.longest_s, self.saves.needed)

    def __call__(self, done: int, verdict=NONE):
        p, run_dir = self.p, self.saves.run_dir
        p.watch.at("save", done, self.budget())
        t0 = time.monotonic()
        with p.watch.waiting():
            path, took = self.saves.save(done, lambda: checkpoint.save_training(
                p.acc, p.cfg, done, p.models, p.stepper.counters, p.feed))
        self.longest_s = max(self.longest_s, time.monotonic() - t0)
        p.report.print(f"checkpoint {path} ({took})" if path else f"[yellow]step {done}: the weights are not "
                       f"finite; no checkpoint saved (the last good one is {checkpoint.latest(run_dir)})")
        if verdict.stop:
            p.report.print(stop_line(verdict.stop, done, path, run_dir))
            if p.acc.is_main_process:  # gandist-compare shows it stopped (and how), not failed
                layout.mark_stopped(run_dir, done, verdict.stop, path)


def stop_line(signum: int, done: int, path: Path | None, run_dir: Path) -> str:
    """What a stopped run says last: where its work is, and how it goes on."""
    saved = f"checkpoint {path} saved at step {done}" if path else f"last checkpoint {checkpoint.latest(run_dir)}"
    if signum == signal.SIGINT:
        return f"Ctrl-C: {saved}; to continue, run the same command with train.resume=auto"
    return f"{signal.Signals(signum).name} received: {saved}; exiting with {EXIT_REQUEUE} so the job can be requeued"
