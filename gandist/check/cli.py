"""gandist-check --config FILE [key=value ...]: before a long job, whether these nodes, GPUs, data and this config
will work.  Started exactly as gandist.train is; rank 0 prints one table after a minute or two.

    gandist-check --config configs/quickstart.yaml
    torchrun --nproc_per_node 8 -m gandist.check --config configs/wgan_gp_celeba.yaml train.batch_size=256
    accelerate launch -m gandist.check --config configs/wgan_gp_celeba.yaml --json check.json
    sbatch --nodes=4 --gpus-per-node=8 slurm/check.sh configs/wgan_gp_celeba.yaml

Exit status: 0 every check passed (warnings allowed), 1 a check failed (its row names the rank and host), 2 bad
input (the config, an option).
"""
from __future__ import annotations

import argparse
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

from gandist import config
from gandist.backends.ddp import make_accelerator
from gandist.check import collectives, data, evaluation, outputs, ranks, rounds, syncbn
from gandist.check.report import as_json, errors, finding, show, summary
from gandist.cli import EXIT_INTERRUPTED, ConfigError, UsageError, run_command
from gandist.distributed import broadcast_object, gather_object, shutdown, where
from gandist.liveness import Watchdog, end_on_lost_peer
from gandist.utils.files import write_json_atomic

PROG = "gandist-check"


def parse_args(argv):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="experiment YAML file, as gandist-train's")
    p.add_argument("overrides", nargs="*", help="dotted overrides applied after the file, as gandist-train's")
    p.add_argument("--rounds", type=int, default=10, help="training rounds timed, after --warmup (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="rounds run before timing (default 2)")
    p.add_argument("--expect-nodes", type=int, metavar="N", help="nodes the job asked for (slurm/check.sh passes it)")
    p.add_argument("--expect-procs-per-node", type=int, metavar="N",
                   help="processes each node must run (slurm/check.sh passes it); default: the launcher's own count "
                        "(LOCAL_WORLD_SIZE)")
    p.add_argument("--timeout", type=int, default=180, metavar="S",
                   help="seconds a collective waits for a rank that does not come (the check's train.timeout_s)")
    p.add_argument("--json", metavar="FILE", help="rank 0 also writes the rows there")
    return p.parse_intermixed_args(argv)  # options and key=value overrides in any order


def load_config(args):
    """The config training would load, with the check's own settings.  The Inception weights file is not
    looked for here: one node may lack it, so it is a check of its own, on every rank."""
    overrides = [*args.overrides, "log.trackers=[]", "log.progress=false", f"train.timeout_s={args.timeout}"]
    return config.load(args.config, overrides, check_files=False)


@contextmanager
def progress(main: bool, console: Console, watch: Watchdog, budget_s: float):
    """say(what): rank 0 shows which check runs, so a check waiting on a rank is seen waiting; every rank tells
    its watchdog (each check may take `budget_s`), which names a rank that froze in it."""
    def told(what: str):
        watch.at(f"check: {what}", budget_s=budget_s, waiting=True)  # every check waits for the other ranks in it
        return what

    if not main:
        yield told
    elif console.is_terminal:
        with console.status("gandist-check") as status:
            yield lambda what: status.update(f"gandist-check: {told(what)} ...")
    else:
        yield lambda what: print(f"gandist-check: {told(what)} ...", file=sys.stderr, flush=True)


def check(args) -> int:
    t0 = time.perf_counter()
    if args.rounds < 1 or args.warmup < 0 or args.timeout < 1:
        raise UsageError("--rounds and --timeout must be at least 1, --warmup at least 0")
    cfg = load_config(args)
    acc = make_accelerator(cfg)
    world, rank, device, out = acc.num_processes, acc.process_index, acc.device, Path(cfg.output.dir)
    config.check_world_size(cfg, world)
    console = Console()
    rows = []
    watch = Watchdog(cfg.train.hang_timeout_s, rank, world, startup_s=args.timeout)
    with progress(acc.is_main_process, console, watch, args.timeout) as say:
        say("ranks, devices and software")
        facts = gather_object(ranks.describe(acc))
        rows += [ranks.devices_row(facts), ranks.software_row(facts),
                 ranks.layout_row(facts, args.expect_nodes, args.expect_procs_per_node, cfg.train.device == "cuda"),
                 ranks.config_row(gather_object(finding(config.to_dict, cfg)))]

        say("collectives")
        rows.append(collectives.exact_row(gather_object(finding(collectives.exact, device)) if world > 1 else []))
        measured = collectives.bandwidth(facts, device)
        rows += collectives.bandwidth_rows(measured, device.type)
        rows.append(syncbn.row(gather_object(finding(syncbn.compare, device, rank)), device.type, world))

        say("data")
        read = gather_object(finding(data.read, cfg, rank, world, device))
        rows.append(data.open_row(read, cfg))

        say("output.dir")
        token = broadcast_object(uuid.uuid4().hex)
        wrote = gather_object(finding(outputs.write, out, token, rank))
        rows.append(outputs.writable_row(wrote))
        # each rank reads the file of the first rank of every node (rank 0 the first of them): one per node
        writers = [{"rank": fs[0]["rank"], "where": fs[0]["where"]} for fs in ranks.by_node(facts).values()
                   if "value" in wrote[fs[0]["rank"]]]
        rows.append(outputs.shared_row(gather_object(finding(outputs.read_back, out, token, writers)), writers))

        say("evaluation")
        rows.append(evaluation.row(gather_object(finding(evaluation.look, cfg)), cfg))

        say(f"{1 + args.warmup + args.rounds} training rounds")
        # caught like the other findings: an out-of-memory at this batch, on every rank alike, is a verdict too
        ran = finding(rounds.run, cfg, acc, args.warmup, args.rounds)
        timed = gather_object({"where": ran["where"], "value": ran["value"].mine} if "value" in ran else ran)
        rows += rounds.rounds_rows(timed, facts, cfg, device.type, args.rounds)
        if not errors(timed):  # the same on every rank: the rows below run collectives
            rows += after_rounds(ran["value"], timed, facts, measured, read, cfg, device.type, rank)

        acc.wait_for_everyone()  # every rank has read the scratch files
        outputs.clean(out, token, wrote[rank].get("value", {}).get("created"))
    code, last = summary(rows, time.perf_counter() - t0)
    if acc.is_main_process:
        title = (f"gandist-check: {args.config or '(defaults)'} ({cfg.variant}, {cfg.train.backend}) on {world} "
                 f"process(es), {len(ranks.by_node(facts))} node(s), {device.type}")
        show(rows, title, last, console)
        if args.json:
            write_json_atomic(args.json, {"ok": code == 0, "world_size": world, "rows": as_json(rows)})
    # every rank waits for rank 0's table: a launcher ends the others once one rank exits non-zero
    acc.wait_for_everyone()
    watch.close()
    acc.end_training()
    return code


def after_rounds(ran, timed: list[dict], facts: list[dict], measured: dict, read: list[dict], cfg,
                 device_type: str, rank: int) -> list:
    """The rows the training rounds' figures decide (precision, communication, read rate, checkpoint room)."""
    round_s = rounds.slowest(timed)["value"]["round_s"]
    out = [rounds.precision_row(ran.health, cfg, device_type),
           collectives.round_row(ran.counted, cfg, facts, measured, round_s, device_type)]
    rate = data.rate_row(read, rounds.consumed(timed), cfg.optim.n_critic)
    out += [rate] if rate else []
    # rank 0 writes the checkpoints: its filesystem decides, the same verdict on every rank
    room = broadcast_object(finding(outputs.room, Path(cfg.output.dir), ran.models, cfg.checkpoint.keep)
                            if rank == 0 else None)
    return [*out, outputs.room_row(room, Path(cfg.output.dir), cfg.checkpoint.keep)]


def guarded(args) -> int:
    """check(args), a lost peer said in one line, as gandist.train says it."""
    with end_on_lost_peer(PROG, f"a frozen one is named after train.hang_timeout_s, one that holds a check up "
                                f"given up on after --timeout {args.timeout} s"):
        return check(args)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run_command(PROG, lambda: guarded(args), (ConfigError, UsageError))
    except KeyboardInterrupt:
        print(f"{PROG} ({where()}): Ctrl-C: stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        shutdown()
