"""`python -m gandist.bench train`: gandist's training round next to a plain PyTorch loop.

    python -m gandist.bench train --variant dcgan --resolution 32 --batch-size 64 --steps 20 --warmup 3
    python -m gandist.bench train --variant wgan_gp --device cuda --precision bf16 --compile
    python -m gandist.bench train --data shards --urls 'shards/train-{000000..000009}.tar' --workers 2
    python -m gandist.bench train --processes 2 model.g_width=32      # key=value: config overrides

It times --steps rounds of (1) exactly what gandist.train builds, on batches kept on the device, so the step
alone is measured; (2) the same networks and settings in the plain loop of the classic scripts
(gandist/bench/reference.py); (3) unless --data none, gandist's step fed by its real reader, to see whether
input is the bottleneck.  images/s = rounds x n_critic x batch / seconds, as the metrics count it.
--processes N runs gandist's side in N processes and sums.  The last line of stdout is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from gandist import config
from gandist.backends.ddp import make_accelerator
from gandist.bench import machine
from gandist.bench.reference import Reference
from gandist.bench.timing import PREMADE, DeviceFeed, measure
from gandist.cli import ConfigError, run_command
from gandist.data.errors import DataError
from gandist.data.feed import make_feed
from gandist.distributed import gather_object, on_gpu, share
from gandist.draws import Draws
from gandist.training.step import Stepper, build_models

REPO = Path(__file__).resolve().parents[2]
COMPILED = "G, and D's forward (a gradient penalty runs D uncompiled: inductor has no double backward)"


def add_parser(sub) -> None:
    t = sub.add_parser("train", help="gandist's training round vs a plain PyTorch loop, images/s",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--config", default=str(REPO / "configs" / "quickstart.yaml"), help="experiment YAML file")
    t.add_argument("--variant", help="variant=... (default: the config file's)")
    t.add_argument("--resolution", type=int, help="data.resolution (default: the config file's)")
    t.add_argument("--batch-size", type=int, help="train.batch_size, the global batch (default: the config's)")
    t.add_argument("--steps", type=int, default=20, help="rounds timed per loop")
    t.add_argument("--warmup", type=int, default=3, help="rounds run before timing, per loop")
    t.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when there is a GPU")
    t.add_argument("--precision", choices=("no", "bf16", "fp16"), help="train.mixed_precision (default: config's)")
    t.add_argument("--compile", action="store_true", help="torch.compile G's and D's forward in both loops "
                   "(D stays eager under a gradient penalty: its double backward does not go through inductor)")
    t.add_argument("--processes", type=int, default=1, help="local processes for gandist's side (torchrun)")
    t.add_argument("--threads", type=int, help="torch's CPU threads per process (default: torch's; on a busy "
                   "machine 1 keeps the timings from stalling on descheduled threads)")
    t.add_argument("--data", choices=("none", "synthetic", "shards"), default="synthetic",
                   help="the real reader also timed: the embedded dataset, shards (--urls), or none")
    t.add_argument("--urls", default="", help="shard pattern for --data shards")
    t.add_argument("--workers", type=int, default=2, help="DataLoader workers of the shard reader")
    t.add_argument("--worker-result", help=argparse.SUPPRESS)  # set by the parent of --processes N
    t.add_argument("overrides", nargs="*", help="config overrides key.sub=value, after the options above")


def load_config(args, out_dir: str):
    o = [f"output.dir={out_dir}", "log.trackers=[]", "log.progress=false"]  # nothing written, nothing shown
    for key, value in (("variant", args.variant), ("data.resolution", args.resolution),
                       ("train.batch_size", args.batch_size), ("train.mixed_precision", args.precision),
                       ("train.device", args.device)):
        if value is not None:
            o.append(f"{key}={value}")
    if args.compile:
        o.append("perf.compile=true")
    if args.data == "synthetic":
        o.append("data.source=synthetic")
    elif args.data == "shards":
        o += ["data.source=shards", f"data.urls={args.urls}", f"data.workers={args.workers}"]
    return config.load(args.config, o + list(args.overrides))


class GandistSide:
    """What gandist.train builds, in this rank: `step` a round on pre-made device batches, `fed` (or None)
    one fed by the real reader, on the same models."""

    def __init__(self, cfg, args):
        self.args = args
        self.acc = acc = make_accelerator(cfg)
        world, rank, self.device = acc.num_processes, acc.process_index, acc.device
        config.check_world_size(cfg, world)
        self.feed = make_feed(cfg, rank, world, self.device)
        models = build_models(cfg, acc)
        self.compiled = COMPILED if cfg.perf.compile else "no"
        draws = Draws(cfg.train.seed, cfg.train.batch_size, rank, world, self.device,
                      on_gpu(cfg.perf.noise_on_device, self.device))
        self.images = cfg.optim.n_critic * len(share(cfg.train.batch_size, rank, world))  # D's real inputs a round
        self.step = Stepper(cfg, acc, models, DeviceFeed.take(self.feed, PREMADE), draws).round
        self.fed = Stepper(cfg, acc, models, self.feed, draws).round if args.data != "none" else None

    def rate(self, seconds: float) -> float:
        return self.args.steps * self.images / seconds

    def loops(self) -> dict:
        """The loops timed together (the embedded dataset's too: it has no workers to slow the others)."""
        return {"gandist": self.step, **({"fed": self.fed} if self.args.data == "synthetic" else {})}

    def figures(self, seconds: dict, peaks: dict) -> dict:
        """This rank's figures; a shard reader's loop is timed here, alone: its workers would slow the others."""
        if self.args.data == "shards":
            alone, _ = measure({"fed": self.fed}, self.args.warmup, self.args.steps, self.device)
            seconds = dict(seconds, **alone)
            self.feed.load_state_dict(self.feed.state_dict())  # its workers stop
        r = {"gandist_img_s": self.rate(seconds["gandist"]), "peak_mem_mb": peaks["gandist"]}
        if "fed" in seconds:
            r["fed_img_s"] = self.rate(seconds["fed"])
        return r

    def finish(self, r: dict) -> dict:
        """Rates summed and peaks maxed over the ranks, the same on each."""
        rows = gather_object(r)
        self.acc.end_training()
        total = dict(r, processes=len(rows), compiled=self.compiled, feed=self.feed.description,
                     device=self.device.type, peak_mem_mb=max(x["peak_mem_mb"] for x in rows))
        for key in ("gandist_img_s", "fed_img_s"):
            if key in r:
                total[key] = sum(x[key] for x in rows)
        return total


def worker(cfg, args) -> int:
    """One of the --processes N: gandist's loops only; rank 0 leaves the figures for the parent."""
    side = GandistSide(cfg, args)
    r = side.finish(side.figures(*measure(side.loops(), args.warmup, args.steps, side.device)))
    if int(os.environ.get("RANK", 0)) == 0:
        Path(args.worker_result).write_text(json.dumps(r))
    return 0


def launch(args, n: int) -> dict:
    """gandist's side in n local processes under torchrun; rank 0 leaves the summed figures in a file."""
    with tempfile.TemporaryDirectory(prefix="gandist-bench-") as tmp:
        result = Path(tmp) / "result.json"
        argv = ["--config", args.config, "--steps", str(args.steps), "--warmup", str(args.warmup),
                "--data", args.data, "--urls", args.urls, "--workers", str(args.workers),
                "--worker-result", str(result)]
        for flag, value in (("--variant", args.variant), ("--resolution", args.resolution),
                            ("--batch-size", args.batch_size), ("--device", args.device),
                            ("--precision", args.precision), ("--threads", args.threads)):
            if value is not None:
                argv += [flag, str(value)]
        argv += ["--compile"] * args.compile + ["--", *args.overrides]
        torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        # the cores shared out, not oversubscribed
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads or max(1, cores // n)))
        cmd = [torchrun, "--standalone", f"--nproc_per_node={n}", "-m", "gandist.bench", "train", *argv]
        p = subprocess.run(cmd, env=env, stdout=sys.stderr)  # their output is not this command's table
        if p.returncode != 0 or not result.is_file():
            raise SystemExit(f"gandist.bench: the {n} processes of gandist's side failed (exit {p.returncode})")
        return json.loads(result.read_text())


def make_reference(cfg, args, device: torch.device) -> tuple[Reference, str]:
    """The plain loop, on the full batch, with pre-made device batches of the same data."""
    batches = DeviceFeed.take(make_feed(cfg, 0, 1, device), PREMADE).batches
    ref = Reference(cfg, device, batches)
    if args.compile:
        ref.compile()
    return ref, COMPILED if args.compile else "no"


def bench(args) -> int:
    if args.processes < 1 or args.steps < 1 or args.warmup < 0:
        raise ConfigError("--processes and --steps must be at least 1, --warmup at least 0")
    if args.data == "shards" and not args.urls:
        raise ConfigError("--data shards needs --urls PATTERN (e.g. made by `gandist-prepare synthetic --out DIR`)")
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="gandist-bench-") as out:
        cfg = load_config(args, out)
        if args.worker_result:
            return worker(cfg, args)
        load0 = os.getloadavg()[0]
        B, n = cfg.train.batch_size, cfg.optim.n_critic
        if args.processes > 1:  # gandist's side first, in its own processes; then the reference alone
            g = launch(args, args.processes)
            device = torch.device("cuda" if g["device"] == "cuda" else "cpu")
            ref, _ = make_reference(cfg, args, device)
            seconds, peaks = measure({"reference": ref.round}, args.warmup, args.steps, device)
        else:  # the loops here, interleaved
            side = GandistSide(cfg, args)
            device = side.device
            ref, _ = make_reference(cfg, args, device)
            seconds, peaks = measure({**side.loops(), "reference": ref.round}, args.warmup, args.steps, device)
            g = side.finish(side.figures(seconds, peaks))
        g.update(reference_img_s=args.steps * n * B / seconds["reference"], reference_peak_mem_mb=peaks["reference"])
    report(cfg, args, device, g, load0)
    return 0


def report(cfg, args, device, g: dict, load0: float):
    n, B, procs = cfg.optim.n_critic, cfg.train.batch_size, g["processes"]
    rows = [("gandist Stepper.round", procs, "pre-made, on the device", g["gandist_img_s"]),
            ("reference (plain PyTorch)", 1, "pre-made, on the device", g["reference_img_s"])]
    if "fed_img_s" in g:
        rows.append(("gandist Stepper.round", procs, g["feed"], g["fed_img_s"]))
    cuda = device.type == "cuda"
    print(f"gandist.bench train: {cfg.variant}, {cfg.model.arch} nets, {cfg.data.resolution} px, global batch {B}, "
          f"n_critic {n}, {device.type}, threads {torch.get_num_threads()}, precision {cfg.train.mixed_precision}, "
          f"compiled: {g['compiled']}")
    print(f"Machine: {machine()}; load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after")
    print()
    print("| loop | processes | batches | images/s | ms per round |")
    print("| --- | ---: | --- | ---: | ---: |")
    for name, p, batches, rate in rows:
        print(f"| {name} | {p} | {batches} | {rate:,.1f} | {1000 * n * B / rate:,.1f} |")
    print()
    ratio = g["gandist_img_s"] / g["reference_img_s"]
    how = ("gandist's processes first, then the reference" if procs > 1 else
           "the first two rows' rounds interleaved (the same load on each), then the shard row's alone"
           if args.data == "shards" else "the rows' rounds interleaved (the same load on each)")
    print(f"images/s = rounds x n_critic x batch / seconds, {args.steps} rounds after {args.warmup} of warm-up per "
          f"row, {how}: the real images D sees, as gandist's metrics count them.  gandist / reference = {ratio:.3f}.")
    print(f"gandist's round also updates the EMA (optim.ema={cfg.optim.ema}), makes world-size invariant draws, "
          f"guards against non-finite steps and sums its logged values on the device.")
    if cuda:
        print(f"Peak memory (torch.cuda.max_memory_allocated): gandist {g['peak_mem_mb']:,.0f} MB"
              f"{' (max over ranks)' if procs > 1 else ''}, reference {g['reference_peak_mem_mb']:,.0f} MB.")
    else:
        print(f"Peak memory: {g['peak_mem_mb']:,.0f} MB, the peak RSS (ru_maxrss) of "
              + ("gandist's processes (max over ranks)." if procs > 1 else "this process, which ran both loops."))
    print(json.dumps({
        "variant": cfg.variant, "arch": cfg.model.arch, "resolution": cfg.data.resolution, "batch_size": B,
        "n_critic": n, "device": device.type, "precision": cfg.train.mixed_precision, "compile": args.compile,
        "processes": procs, "threads": torch.get_num_threads(), "steps": args.steps, "warmup": args.warmup,
        "gandist_img_s": round(g["gandist_img_s"], 2), "reference_img_s": round(g["reference_img_s"], 2),
        "ratio": round(ratio, 4), "data": args.data,
        "fed_img_s": round(g["fed_img_s"], 2) if "fed_img_s" in g else None,
        "peak_mem_mb": round(g["peak_mem_mb"], 1), "peak_mem_kind": "cuda_allocated" if cuda else "rss",
        "reference_peak_mem_mb": round(g["reference_peak_mem_mb"], 1) if cuda else None,
        "load_average": round(os.getloadavg()[0], 2)}))


def run(args) -> int:
    return run_command("gandist.bench", lambda: bench(args), (ConfigError, DataError))
