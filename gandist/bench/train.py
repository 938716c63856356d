"""`python -m gandist.bench train`: gandist's training round next to a plain PyTorch loop.

    python -m gandist.bench train --variant dcgan --resolution 32 --batch-size 64 --steps 20 --warmup 3
    python -m gandist.bench train --variant wgan_gp --device cuda --precision bf16 --compile
    python -m gandist.bench train --data shards --urls 'shards/train-{000000..000009}.tar' --workers 2
    python -m gandist.bench train --processes 2 model.g_width=32      # key=value: config overrides

In one run, after --warmup rounds each, it times --steps rounds of
  1. gandist: Stepper.round(step) of exactly what gandist.train builds (config, Accelerator, models,
     optimizers, EMA, global draws, cross-rank reductions), fed batches made beforehand and kept on
     the device, so that the step alone is measured;
  2. the reference: the same networks, loss, penalty, optimizer, batch, precision and device in the
     plain loop of the classic scripts (gandist/bench/reference.py), on the same device batches;
  3. (unless --data none) gandist's step fed by its real reader: the embedded dataset, rendered on the
     CPU per batch (--data synthetic), or the shard reader (--data shards): is input the bottleneck?
images/s counts what D sees as real: rounds x n_critic x batch / seconds, as gandist's metrics do.
--processes N runs gandist's side in N local processes (torchrun; gloo on CPU) and sums their rates;
the reference stays one process.  The last line of stdout is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from gandist import config
from gandist.bench import machine
from gandist.bench.reference import Reference
from gandist.cli import run_command
from gandist.config import ConfigError
from gandist.data.errors import DataError
from gandist.data.feed import make_feed
from gandist.distributed import Draws, gather_object, make_accelerator, share
from gandist.step import Stepper, build_models

REPO = Path(__file__).resolve().parents[2]
PREMADE = 4  # distinct device batches cycled through by the timed loops


class DeviceFeed:
    """A feed with gandist's interface (batch(j) -> (images, labels), skipped, state_dict) serving a few
    batches made beforehand and kept on the device: the step is timed without the reader."""

    def __init__(self, batches: list):
        self.batches, self.skipped = batches, 0
        self.description = f"{len(batches)} pre-made batches on the device"

    @classmethod
    def take(cls, feed, n: int) -> "DeviceFeed":
        made = cls([feed.batch(j) for j in range(n)])
        feed.load_state_dict(feed.state_dict())  # a ShardFeed drops its workers: none read ahead while others are timed
        return made

    def batch(self, j: int):
        return self.batches[j % len(self.batches)]

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict):
        pass


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
    if args.data == "synthetic":
        o.append("data.source=synthetic")
    elif args.data == "shards":
        o += ["data.source=shards", f"data.urls={args.urls}", f"data.workers={args.workers}"]
    cfg = config.load(args.config, o + list(args.overrides))
    if args.compile and cfg.train.device != "cuda" and not (cfg.train.device == "auto" and torch.cuda.is_available()):
        print("gandist.bench: note: --compile on CPU compiles C++ in the warm-up: it takes a while", file=sys.stderr)
    return cfg


def compile_nets(cfg, G, D) -> str:
    """torch.compile the modules' forward in place (DDP wrappers call it); what was compiled, for the table."""
    G.compile()
    if cfg.loss.regularizer in ("gp", "r1"):
        return "G only (a penalty's double backward through D does not go through inductor)"
    D.compile()
    return "G and D"


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(round_fn, first: int, warmup: int, steps: int, device: torch.device) -> float:
    """Seconds for `steps` calls round_fn(step) after `warmup` untimed ones, from step `first` on."""
    for s in range(first, first + warmup):
        round_fn(s)
    sync(device)
    t0 = time.perf_counter()
    for s in range(first + warmup, first + warmup + steps):
        round_fn(s)
    sync(device)
    return time.perf_counter() - t0


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def gandist_side(cfg, args) -> dict:
    """Time gandist's round in this process (one rank of N, or the only one); summed rates over ranks."""
    acc = make_accelerator(cfg)
    world, rank, device = acc.num_processes, acc.process_index, acc.device
    config.check_world_size(cfg, world)
    feed = make_feed(cfg, rank, world, device)
    models = build_models(cfg, acc)
    compiled = compile_nets(cfg, models.G_raw, models.D_raw) if args.compile else "no"
    draws = Draws(cfg.train.seed, cfg.train.batch_size, rank, world, device)
    images = cfg.optim.n_critic * len(share(cfg.train.batch_size, rank, world))  # D's real inputs per round
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stepper = Stepper(cfg, acc, models, DeviceFeed.take(feed, PREMADE), draws)
    r = {"gandist_img_s": args.steps * images / timed(stepper.round, 0, args.warmup, args.steps, device),
         "peak_mem_mb": peak_mb(device), "compiled": compiled, "feed": feed.description}
    if args.data != "none":
        fed = Stepper(cfg, acc, models, feed, draws)
        first = args.warmup + args.steps
        r["fed_img_s"] = args.steps * images / timed(fed.round, first, args.warmup, args.steps, device)
        feed.load_state_dict(feed.state_dict())  # its workers stop before the reference is timed
    rows = gather_object(r)
    acc.end_training()
    total = dict(rows[0], gandist_img_s=sum(x["gandist_img_s"] for x in rows),
                 peak_mem_mb=max(x["peak_mem_mb"] for x in rows), processes=world)
    if "fed_img_s" in r:
        total["fed_img_s"] = sum(x["fed_img_s"] for x in rows)
    return total


def launch(args, n: int) -> dict:
    """gandist's side in n local processes under torchrun; rank 0 leaves the summed figures in a file."""
    with tempfile.TemporaryDirectory(prefix="gandist-bench-") as tmp:
        result = Path(tmp) / "result.json"
        argv = ["--config", args.config, "--steps", str(args.steps), "--warmup", str(args.warmup),
                "--data", args.data, "--urls", args.urls, "--workers", str(args.workers),
                "--worker-result", str(result)]
        for flag, value in (("--variant", args.variant), ("--resolution", args.resolution),
                            ("--batch-size", args.batch_size), ("--device", args.device),
                            ("--precision", args.precision)):
            if value is not None:
                argv += [flag, str(value)]
        argv += ["--compile"] * args.compile + ["--", *args.overrides]
        torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        env = dict(os.environ, OMP_NUM_THREADS=str(max(1, cores // n)))  # the cores shared, not oversubscribed
        cmd = [torchrun, "--standalone", f"--nproc_per_node={n}", "-m", "gandist.bench", "train", *argv]
        p = subprocess.run(cmd, env=env, stdout=sys.stderr)  # their output is not this command's table
        if p.returncode != 0 or not result.is_file():
            raise SystemExit(f"gandist.bench: the {n} processes of gandist's side failed (exit {p.returncode})")
        return json.loads(result.read_text())


def reference_side(cfg, args, device: torch.device) -> dict:
    """Time the plain loop in this process, on the full batch, with the same pre-made batches."""
    feed = make_feed(cfg, 0, 1, device)
    batches = DeviceFeed.take(feed, PREMADE).batches
    ref = Reference(cfg, device, batches)
    compiled = compile_nets(cfg, ref.G, ref.D) if args.compile else "no"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = timed(ref.round, 0, args.warmup, args.steps, device)
    return {"reference_img_s": args.steps * cfg.optim.n_critic * cfg.train.batch_size / seconds,
            "reference_peak_mem_mb": peak_mb(device), "reference_compiled": compiled}


def bench(args) -> int:
    if args.processes < 1 or args.steps < 1 or args.warmup < 0:
        raise ConfigError("--processes and --steps must be at least 1, --warmup at least 0")
    if args.data == "shards" and not args.urls:
        raise ConfigError("--data shards needs --urls PATTERN (e.g. made by `gandist-prepare synthetic --out DIR`)")
    with tempfile.TemporaryDirectory(prefix="gandist-bench-") as out:
        cfg = load_config(args, out)
        if args.worker_result:  # one of --processes N: gandist's side only
            r = gandist_side(cfg, args)
            if int(os.environ.get("RANK", 0)) == 0:
                Path(args.worker_result).write_text(json.dumps(r))
            return 0
        load0 = os.getloadavg()[0]
        g = launch(args, args.processes) if args.processes > 1 else gandist_side(cfg, args)
        cuda = cfg.train.device == "cuda" or (cfg.train.device == "auto" and torch.cuda.is_available())
        device = torch.device("cuda" if cuda else "cpu")
        ref = reference_side(cfg, args, device)
    report(cfg, args, device, g, ref, load0)
    return 0


def report(cfg, args, device, g: dict, ref: dict, load0: float):
    n, B = cfg.optim.n_critic, cfg.train.batch_size
    rows = [("gandist Stepper.round", g["processes"], "pre-made, on the device", g["gandist_img_s"]),
            ("reference (plain PyTorch)", 1, "pre-made, on the device", ref["reference_img_s"])]
    if "fed_img_s" in g:
        rows.append(("gandist Stepper.round", g["processes"], g["feed"], g["fed_img_s"]))
    mem = ("torch.cuda.max_memory_allocated" if device.type == "cuda" else
           "the process's peak RSS, ru_maxrss" + (", max over ranks" if g["processes"] > 1 else ""))
    print(f"gandist.bench train: {cfg.variant}, {cfg.model.arch} nets, {cfg.data.resolution} px, global batch {B}, "
          f"n_critic {n}, {device.type}, precision {cfg.train.mixed_precision}, compiled: {g['compiled']}")
    print(f"Machine: {machine()}; load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after")
    print()
    print("| loop | processes | batches | images/s | ms per round |")
    print("| --- | ---: | --- | ---: | ---: |")
    for name, procs, batches, rate in rows:
        print(f"| {name} | {procs} | {batches} | {rate:,.1f} | {1000 * n * B / rate:,.1f} |")
    print()
    ratio = g["gandist_img_s"] / ref["reference_img_s"]
    print(f"images/s = rounds x n_critic x batch / seconds ({args.steps} rounds after {args.warmup} of warm-up): "
          f"the real images D sees, as gandist's metrics count them.  gandist / reference = {ratio:.3f}.")
    print(f"gandist's round also updates the EMA (optim.ema={cfg.optim.ema}) and reduces its losses across ranks.")
    print(f"Peak memory of gandist's side: {g['peak_mem_mb']:,.0f} MB ({mem}).")
    print(json.dumps({
        "variant": cfg.variant, "arch": cfg.model.arch, "resolution": cfg.data.resolution, "batch_size": B,
        "n_critic": n, "device": device.type, "precision": cfg.train.mixed_precision, "compile": args.compile,
        "processes": g["processes"], "steps": args.steps, "warmup": args.warmup,
        "gandist_img_s": round(g["gandist_img_s"], 2), "reference_img_s": round(ref["reference_img_s"], 2),
        "ratio": round(ratio, 4), "data": args.data,
        "fed_img_s": round(g["fed_img_s"], 2) if "fed_img_s" in g else None,
        "peak_mem_mb": round(g["peak_mem_mb"], 1), "peak_mem_kind": "cuda_allocated" if device.type == "cuda" else "rss",
        "load_average": round(os.getloadavg()[0], 2)}))


def run(args) -> int:
    return run_command("gandist.bench", lambda: bench(args), (ConfigError, DataError))
