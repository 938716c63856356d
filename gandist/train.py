"""gandist.train: config -> Accelerator -> parts -> training loop -> final export.

    python -m gandist.train --config configs/quickstart.yaml train.steps=500
    accelerate launch -m gandist.train --config configs/wgan_gp_celeba.yaml
    torchrun --nproc_per_node 2 -m gandist.train --config configs/quickstart.yaml
    gandist-train --help-config [SECTION]        # every config key: type, default, allowed values, help
"""
from __future__ import annotations

import argparse
import signal
import sys

# Before the imports below (seconds of them): a stop signal that arrives while they run is noted, not fatal.
# SLURM's SIGUSR1 reaches every process of a job, and torchrun's agent passes it on; its default action would
# kill a worker still importing, and the job would fail instead of being requeued.  liveness.StopFlag takes over.
EARLY: list[int] = []
if __name__ == "__main__":
    signal.signal(signal.SIGUSR1, lambda signum, frame: EARLY.append(signum))

from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from gandist import config, trained  # noqa: E402
from gandist.backends.ddp import make_accelerator  # noqa: E402
from gandist.cli import (EXIT_DIVERGED, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_REQUEUE, ConfigError,  # noqa: E402
                         run_command)
from gandist.config.help import print_help  # noqa: E402
from gandist.data.feed import make_feed  # noqa: E402
from gandist.distributed import abandon, elastic_world_sizes, on_gpu, shutdown, where, world_size  # noqa: E402
from gandist.draws import Draws  # noqa: E402
from gandist.liveness import StopFlag, Watchdog, end_on_lost_peer  # noqa: E402
from gandist.metrics.registry import MetricError  # noqa: E402
from gandist.training import checkpoint, events, opening  # noqa: E402
from gandist.training import run_dir as layout  # noqa: E402
from gandist.training.disk import DiskFull, writing  # noqa: E402
from gandist.training.ema import calibrate_ema  # noqa: E402
from gandist.training.reporting import Reporter, startup_rows  # noqa: E402
from gandist.training.saves import Saves  # noqa: E402
from gandist.training.step import Stepper, build_models  # noqa: E402
from gandist.training.tally import NonFiniteLoss  # noqa: E402


def run(cfg) -> int:
    stop = StopFlag(EARLY)
    acc = make_accelerator(cfg)
    world, rank, run_dir, last = acc.num_processes, acc.process_index, Path(cfg.output.dir), cfg.train.steps
    config.check_world_size(cfg, world, elastic_world_sizes())
    startup = max(cfg.train.timeout_s, cfg.train.hang_timeout_s)
    # names a rank whose loop stops making progress (gandist.liveness); the loop says where it is with watch.at
    watch = Watchdog(cfg.train.hang_timeout_s, rank, world, startup_s=startup)
    feed = make_feed(cfg, rank, world, acc.device)  # checks the data against the config: before any file is touched
    # One writer: rank 0 holds <output.dir>/lock.json until the run ends; a second run stops here, touching nothing.
    with opening.open_run(cfg, acc) as opened:
        if cfg.train.fp64:
            torch.set_default_dtype(torch.float64)
        models = build_models(cfg, acc)
        draws = Draws(cfg.train.seed, cfg.train.batch_size, rank, world, acc.device,
                      on_gpu(cfg.perf.noise_on_device, acc.device))
        stepper = Stepper(cfg, acc, models, feed, draws, watch)
        resumed = checkpoint.restore(cfg, acc, opened.resume_from, models, stepper.counters, feed)  # None: fresh
        start = resumed.step if resumed else 0
        ranks, history = opened.begin(start)
        # a with block: however the loop ends, rank 0's progress bar stops (it hides the terminal's cursor)
        with Reporter(cfg, acc, run_dir, start) as report:
            saves = Saves(run_dir, models, cfg, report.print, acc.is_main_process)  # warns when the disk is low
            report.start(startup_rows(cfg, acc, models, feed, ranks, resumed, saves))
            parts = events.Parts(cfg, acc, models, stepper, feed, report, watch)
            agree, save = events.Agreement(parts, stop, saves, opened.lock), events.Checkpoint(parts, saves)
            after_round = [events.Log(parts), events.Progress(parts, history), events.Grid(parts),
                           events.Evaluation(parts), save]
            verdict = events.NONE
            for step in range(start, last):
                watch.at("step", step, startup if step == start else None)  # the first round also compiles
                stepper.round(step)
                verdict = agree(step + 1) if agree.due(step + 1) else events.NONE
                for event in after_round:
                    if event.due(step + 1, verdict):
                        event(step + 1, verdict)
                if verdict.stop:
                    break
            if not verdict.stop and acc.is_main_process:
                watch.at("save", last, save.budget())
                finish(cfg, models, report, history, saves, acc.device)
    watch.close()
    acc.end_training()
    return EXIT_INTERRUPTED if verdict.stop == signal.SIGINT else EXIT_REQUEUE if verdict.stop else 0


def finish(cfg, models, report, history, saves, device):
    """Rank 0, after the last step: the final weights (the EMA's with statistics for them) and the summary."""
    run_dir, last = Path(cfg.output.dir), cfg.train.steps
    calibrate_ema(cfg, models, last, device)
    with writing("the final weights", trained.final_dir(run_dir), saves.needed, cfg.checkpoint.keep, run_dir):
        trained.export_final(cfg, models)
    report.refresh()
    report.summary(last, history.summary() + [
        ("final weights", f"{trained.final_dir(run_dir)}"),
        ("sample grids", f"{run_dir / layout.SAMPLES} (progress.gif: the fixed noise over training)"),
        ("plots", f"{run_dir / layout.PLOTS}")])


def train(cfg) -> int:
    """run(cfg), with the two endings that are not a user's mistake nor a bug given their own status."""
    try:
        with end_on_lost_peer("gandist", f"a hung peer is named after train.hang_timeout_s={cfg.train.hang_timeout_s:g} "
                                         f"s, one that holds a collective up given up on after train.timeout_s="
                                         f"{cfg.train.timeout_s} s"):
            return run(cfg)
    except NonFiniteLoss as e:
        last_good = checkpoint.latest(cfg.output.dir)
        print(f"gandist: error ({where()}): training diverged: {e}. Stopped; the last good checkpoint is "
              f"{last_good} (try a lower learning rate from there, e.g. with train.resume=PATH)", file=sys.stderr)
        if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
            layout.mark_diverged(Path(cfg.output.dir), str(e), last_good)
        return EXIT_DIVERGED
    except DiskFull as e:
        print(f"gandist: error ({where()}): {e}", file=sys.stderr)
        if world_size() > 1:
            abandon(EXIT_ERROR)  # the other ranks wait in a collective this rank will not join
        return EXIT_ERROR


def parse_args(argv):
    p = argparse.ArgumentParser(prog="gandist-train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="experiment YAML file")
    p.add_argument("--help-config", nargs="?", const="", metavar="SECTION",
                   help="print every config key (or one section's) with its type, default, allowed values and "
                        "help, then exit")
    p.add_argument("overrides", nargs="*", help="dotted overrides applied after the file, e.g. train.steps=100")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.help_config is not None:
        return run_command("gandist", lambda: print_help(args.help_config), (ConfigError,))
    try:
        return run_command("gandist", lambda: train(config.load(args.config, args.overrides)),
                           (ConfigError, checkpoint.CheckpointError, MetricError))
    except KeyboardInterrupt:  # Ctrl-C before training listens for it (while starting): nothing to save yet
        print(f"gandist ({where()}): Ctrl-C while starting: stopped; nothing was trained", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        shutdown()


if __name__ == "__main__":
    sys.exit(main())
