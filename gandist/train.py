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
from pathlib import Path

import torch

from gandist import __version__, config, trained
from gandist.backends.ddp import make_accelerator
from gandist.cli import EXIT_ERROR, ConfigError, first_line, run_command
from gandist.config.help import print_help
from gandist.data.feed import make_feed
from gandist.distributed import PeerWatch, StopFlag, abandon, elastic_world_sizes, on_gpu, shutdown, where, world_size
from gandist.draws import Draws
from gandist.metrics.evaluator import Evaluator
from gandist.metrics.registry import MetricError
from gandist.training import checkpoint, run_dir
from gandist.training.disk import DiskFull, writing
from gandist.training.ema import generator_for_use
from gandist.training.history import History, last_logged
from gandist.training.lock import RunDirBusy
from gandist.training.reporting import Reporter, startup_rows
from gandist.training.saves import Saves
from gandist.training.step import Stepper, build_models
from gandist.training.tally import NonFiniteLoss

# Exit statuses: 0 done; EXIT_ERROR (1) an error, a lost peer or a full disk; cli.EXIT_USAGE (2) a bad config,
# checkpoint or data, or a run directory in use; EXIT_DIVERGED; EXIT_INTERRUPTED after Ctrl-C's checkpoint;
# EXIT_REQUEUE after a checkpoint asked for by SIGTERM or SIGUSR1 (the SLURM script requeues the job on it;
# rank 0 also leaves run_dir.PREEMPTED, for launchers such as torchrun that do not pass their workers' exit
# status on).
EXIT_DIVERGED = 3  # train.max_bad_steps non-finite steps in a row
EXIT_REQUEUE = 75
EXIT_INTERRUPTED = 130  # Ctrl-C, after the checkpoint it asked for (the shell's status for a SIGINT)


def run(cfg) -> int:
    stop = StopFlag()
    acc = make_accelerator(cfg)
    world, rank, out = acc.num_processes, acc.process_index, Path(cfg.output.dir)
    config.check_world_size(cfg, world, elastic_world_sizes())
    watch = PeerWatch(cfg.train.hang_timeout_s, rank, world)  # a hung peer is found in hang_timeout_s
    feed = make_feed(cfg, rank, world, acc.device)  # checks the data against the config: before any file is touched
    # One writer: rank 0 holds <output.dir>/lock.json until the run ends; a second run stops here, touching nothing.
    with run_dir.locked(cfg, acc) as lock:
        resume_from = run_dir.open_run(cfg, acc)
        if cfg.train.fp64:
            torch.set_default_dtype(torch.float64)
        models = build_models(cfg, acc)
        on_device = on_gpu(cfg.perf.noise_on_device, acc.device)
        draws = Draws(cfg.train.seed, cfg.train.batch_size, rank, world, acc.device, on_device)
        stepper = Stepper(cfg, acc, models, feed, draws)
        start, note = (checkpoint.restore(cfg, acc, resume_from, models, stepper.counters, feed) if resume_from
                       else (0, ""))
        before = last_logged(out)  # the last step logged before this start: read before start() trims it
        ranks = run_dir.start(cfg, acc, out, start)
        history = History(out, start, world, ranks, resume_from, before, acc.is_main_process)
        # a with block: however the loop ends, rank 0's progress bar stops (it hides the terminal's cursor)
        with Reporter(cfg, acc, out, start) as report:
            report.print(f"gandist {__version__}: {cfg.variant} on {world} process(es), {acc.device.type}")
            saves = Saves(out, models, cfg, report.print, acc.is_main_process)  # warns when the disk is low
            report.panel(f"gandist: {cfg.variant}", startup_rows(cfg, acc, models, feed, ranks, start, note, out)
                         + [("a failure costs", saves.at_most_lost(cfg.checkpoint.every))])
            # Built before the first step so a missing Inception weights file stops the run at once.
            evaluator = Evaluator(cfg, acc.device, rank, world).prepare() if cfg.eval.metrics else None
            last, stopping = cfg.train.steps, 0
            for step in range(start, last):
                stepper.round(step)
                done = step + 1
                logging = done % cfg.train.log_every == 0 or done == last
                saving = done % cfg.checkpoint.every == 0 or done == last
                if logging or saving:
                    # The one place a round's device-side tallies reach the host (training/tally.py); all ranks agree.
                    signum = stepper.tally.sync(stop.signum, saves.due())
                    stopping, saving = (signum if done < last else 0), saving or stepper.tally.save_due
                    if lock is not None and lock.lost:  # we were taken for dead and another run took over
                        raise RunDirBusy(f"output.dir {out}: {lock.lost}; this run stops without writing more")
                if logging:
                    report.log_round(done, stepper.log_values(report.rates(done, feed)), stepper.counters)
                report.advance(done)
                history.first_step()
                if acc.is_main_process and (done % cfg.train.sample_every == 0 or done == last):
                    report.grid(done, generator_for_use(cfg, models, done, acc.device))
                if evaluator and ((cfg.eval.every and done % cfg.eval.every == 0) or done == last):
                    # every rank takes part; the same scores everywhere
                    report.scores(done, evaluator(generator_for_use(cfg, models, done, acc.device)))
                if saving or stopping:
                    path, took = saves.save(done, lambda: checkpoint.save_training(acc, cfg, done, models,
                                                                                  stepper.counters, feed))
                    report.print(f"checkpoint {path} ({took})" if path else f"[yellow]step {done}: the weights are "
                                 f"not finite; no checkpoint saved (the last good one is {checkpoint.latest(out)})")
                if stopping:
                    report.print(stop_line(stopping, done, path, out))
                    if acc.is_main_process and stopping != signal.SIGINT:
                        run_dir.mark_preempted(out, done, stopping, path)
                    break

            finished = not stopping
            if finished and acc.is_main_process:
                generator_for_use(cfg, models, last, acc.device)  # the EMA's statistics, for its final weights
                with writing("the final weights", out / "final", saves.needed, cfg.checkpoint.keep, out):
                    trained.export_final(cfg, models)
                report.refresh()
                report.summary(last, history.summary() + [
                    ("final weights", f"{out / 'final'}"),
                    ("sample grids", f"{out / 'samples'} (progress.gif: the fixed noise over training)"),
                    ("plots", f"{out / 'plots'}")])
    watch.close()
    acc.end_training()
    return 0 if finished else EXIT_INTERRUPTED if stopping == signal.SIGINT else EXIT_REQUEUE


def stop_line(signum: int, done: int, path: Path | None, out: Path) -> str:
    """What a stopped run says last: where its work is, and how it goes on."""
    saved = f"checkpoint {path} saved at step {done}" if path else f"last checkpoint {checkpoint.latest(out)}"
    if signum == signal.SIGINT:
        return f"Ctrl-C: {saved}; to continue, run the same command with train.resume=auto"
    return f"{signal.Signals(signum).name} received: {saved}; exiting with {EXIT_REQUEUE} so the job can be requeued"


def lost_peer(e: BaseException) -> bool:
    """Is this the error a collective raises when another rank is gone (gloo and NCCL wording)?"""
    if isinstance(e, torch.distributed.DistError):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and torch.distributed.is_initialized() and any(
        s in text for s in ("Connection reset by peer", "Connection closed by peer", "Timed out waiting",
                            "Broken pipe", "NCCL communicator was aborted", "Watchdog caught collective"))


def train(cfg) -> int:
    """run(cfg), with the two endings that are not a user's mistake nor a bug given their own status."""
    try:
        return run(cfg)
    except NonFiniteLoss as e:
        last_good = checkpoint.latest(cfg.output.dir)
        print(f"gandist: error ({where()}): training diverged: {e}. Stopped; the last good checkpoint is "
              f"{last_good} (try a lower learning rate from there, e.g. with train.resume=PATH)", file=sys.stderr)
        if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
            run_dir.mark_diverged(Path(cfg.output.dir), str(e), last_good)
        return EXIT_DIVERGED
    except DiskFull as e:
        print(f"gandist: error ({where()}): {e}", file=sys.stderr)
        if world_size() > 1:
            abandon(EXIT_ERROR)  # the other ranks wait in a collective this rank will not join
        return EXIT_ERROR
    except Exception as e:
        if not lost_peer(e):
            raise
        # the usual way a run ends when another rank dies: a short message, no traceback
        print(f"gandist: error ({where()}): lost contact with another process of the run; it died, hung "
              f"or was cut off (a hung peer is given up on after train.timeout_s={cfg.train.timeout_s} s); "
              f"see the other ranks' logs. {type(e).__name__}: {first_line(e)}", file=sys.stderr)
        abandon(EXIT_ERROR)


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
