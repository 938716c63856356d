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
import time

# Before the imports below (seconds of them): a stop signal that arrives while they run is noted, not fatal.
# SLURM's SIGUSR1 reaches every process of a job, and torchrun's agent passes it on; its default action would
# kill a worker still importing, and the job would fail instead of being requeued.  liveness.StopFlag takes over.
EARLY: list[int] = []
if __name__ == "__main__":
    signal.signal(signal.SIGUSR1, lambda signum, frame: EARLY.append(signum))

from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from gandist import __version__, config, trained  # noqa: E402
from gandist.backends.ddp import make_accelerator  # noqa: E402
from gandist.cli import EXIT_ERROR, ConfigError, run_command  # noqa: E402
from gandist.config.help import print_help  # noqa: E402
from gandist.data.feed import make_feed  # noqa: E402
from gandist.distributed import abandon, elastic_world_sizes, on_gpu, shutdown, where, world_size  # noqa: E402
from gandist.draws import Draws  # noqa: E402
from gandist.liveness import StopFlag, Watchdog, end_on_lost_peer, save_budget  # noqa: E402
from gandist.metrics.evaluator import Evaluator  # noqa: E402
from gandist.metrics.registry import MetricError  # noqa: E402
from gandist.training import checkpoint, run_dir  # noqa: E402
from gandist.training.disk import DiskFull, writing  # noqa: E402
from gandist.training.ema import generator_for_use  # noqa: E402
from gandist.training.history import History, last_logged  # noqa: E402
from gandist.training.lock import RunDirBusy  # noqa: E402
from gandist.training.reporting import Reporter, startup_rows  # noqa: E402
from gandist.training.saves import Saves  # noqa: E402
from gandist.training.step import Stepper, build_models  # noqa: E402
from gandist.training.tally import NonFiniteLoss, Verdict  # noqa: E402

# Exit statuses: 0 done; EXIT_ERROR (1) an error, a lost peer or a full disk; cli.EXIT_USAGE (2) a bad config,
# checkpoint or data, or a run directory in use; EXIT_DIVERGED; EXIT_INTERRUPTED after Ctrl-C's checkpoint;
# EXIT_REQUEUE after a checkpoint asked for by SIGTERM or SIGUSR1 (the SLURM script requeues the job on it;
# rank 0 also leaves run_dir.PREEMPTED, for launchers such as torchrun that do not pass their workers' exit
# status on).
EXIT_DIVERGED = 3  # train.max_bad_steps non-finite steps in a row
EXIT_REQUEUE = 75
EXIT_INTERRUPTED = 130  # Ctrl-C, after the checkpoint it asked for (the shell's status for a SIGINT)


def run(cfg) -> int:
    stop = StopFlag(EARLY)
    acc = make_accelerator(cfg)
    world, rank, out = acc.num_processes, acc.process_index, Path(cfg.output.dir)
    config.check_world_size(cfg, world, elastic_world_sizes())
    hang, startup = cfg.train.hang_timeout_s, max(cfg.train.timeout_s, cfg.train.hang_timeout_s)
    # names a rank whose loop stops making progress (gandist.liveness); the loop says where it is with watch.at
    watch = Watchdog(hang, rank, world, startup_s=startup)
    feed = make_feed(cfg, rank, world, acc.device)  # checks the data against the config: before any file is touched
    # One writer: rank 0 holds <output.dir>/lock.json until the run ends; a second run stops here, touching nothing.
    with run_dir.locked(cfg, acc) as lock:
        resume_from = run_dir.open_run(cfg, acc)
        if cfg.train.fp64:
            torch.set_default_dtype(torch.float64)
        models = build_models(cfg, acc)
        on_device = on_gpu(cfg.perf.noise_on_device, acc.device)
        draws = Draws(cfg.train.seed, cfg.train.batch_size, rank, world, acc.device, on_device)
        stepper = Stepper(cfg, acc, models, feed, draws, watch)
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
            last, stopping, save_s = cfg.train.steps, 0, 0.0
            for step in range(start, last):
                watch.at("step", step, startup if step == start else None)  # the first round also compiles
                stepper.round(step)
                done = step + 1
                logging = done % cfg.train.log_every == 0 or done == last
                saving = done % cfg.checkpoint.every == 0 or done == last
                if logging or saving:
                    # The one place a round's device-side tallies reach the host (training/tally.py), with the
                    # one verdict all ranks act on: a stop signal, a time-based save due, the run directory lost.
                    watch.at("log sync", done)
                    mine = Verdict(stop.signum, saves.due(), bool(lock is not None and lock.lost))
                    with watch.waiting():
                        verdict = stepper.tally.sync(mine)
                    stopping, saving = (verdict.stop if done < last else 0), saving or verdict.save_due
                    if verdict.lock_lost:  # we were taken for dead and another run took over: every rank stops
                        why = lock.lost if lock is not None else "another run took its lock over (rank 0 found it)"
                        raise RunDirBusy(f"output.dir {out}: {why}; this run stops without writing more")
                if logging:
                    with watch.waiting():
                        means = stepper.log_values(report.rates(done, feed))
                    report.log_round(done, means, stepper.counters)
                report.advance(done)
                history.first_step()
                if acc.is_main_process and (done % cfg.train.sample_every == 0 or done == last):
                    watch.at("sample grid", done)
                    report.grid(done, generator_for_use(cfg, models, done, acc.device))
                if evaluator and ((cfg.eval.every and done % cfg.eval.every == 0) or done == last):
                    # every rank takes part; the same scores everywhere
                    watch.at("evaluation", done, cfg.train.eval_timeout_s)
                    with watch.waiting():
                        report.scores(done, evaluator(generator_for_use(cfg, models, done, acc.device)))
                if saving or stopping:
                    watch.at("save", done, save_budget(hang, save_s, saves.needed))
                    t0 = time.monotonic()
                    with watch.waiting():
                        path, took = saves.save(done, lambda: checkpoint.save_training(acc, cfg, done, models,
                                                                                      stepper.counters, feed))
                    save_s = max(save_s, time.monotonic() - t0)
                    report.print(f"checkpoint {path} ({took})" if path else f"[yellow]step {done}: the weights are "
                                 f"not finite; no checkpoint saved (the last good one is {checkpoint.latest(out)})")
                if stopping:
                    report.print(stop_line(stopping, done, path, out))
                    if acc.is_main_process:  # gandist-compare shows it stopped (and how), not failed
                        run_dir.mark_preempted(out, done, stopping, path)
                    break

            finished = not stopping
            if finished and acc.is_main_process:
                watch.at("save", last, save_budget(hang, save_s, saves.needed))
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
            run_dir.mark_diverged(Path(cfg.output.dir), str(e), last_good)
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
