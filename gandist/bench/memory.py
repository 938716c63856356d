"""`python -m gandist.bench memory`: what each rank holds of G's and D's weights, gradients and optimizer state
under DDP, ZeRO-1 and ZeRO-2, at 1, 2 and 4 processes.

    python -m gandist.bench memory                                     # the ResNet config, and 4x as wide
    python -m gandist.bench memory --configs configs/wgan_gp_celeba.yaml --processes 1,2,4,8
    python -m gandist.bench memory --bucket 500000000                  # DeepSpeed's own bucket size

For each --processes N, N local processes (torchrun, gloo) build G and D as gandist does, wrap them in DDP or
DeepSpeed, run one D and one G step on one sample per rank, and count the tensors each rank actually holds,
each storage once: weights, gradients, optimizer state (with ZeRO's fp32 master slice), gradient buckets, and
any other tensor ZeRO keeps, so that nothing is hidden.  Beside it, the ZeRO paper's formula (P parameters, N
ranks, k moments): DDP 4P+4P+4kP; ZeRO-1 4P+4P+(4k+4)P/N; ZeRO-2 4P+(4+4k+4)P/N.  Activations follow the
batch, the same under every backend, and are not counted.  The last line of stdout is one JSON object.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from importlib import metadata
from pathlib import Path

import torch
import torch.distributed as dist

from gandist import config, nets
from gandist.backends.ddp import hush_buffer_flag_warning
from gandist.backends.zero.engines import ZeroSettings, build_config, make_engines
from gandist.bench import machine
from gandist.cli import ConfigError, run_command
from gandist.nets.layers import convert_sync_batchnorm
from gandist.objective import losses, regularizers
from gandist.objective.regularizers import CriticInputs

REPO = Path(__file__).resolve().parents[2]
BACKENDS = ("ddp", "zero1", "zero2")
MB = 1e6
# what the worker processes run: this module's worker, without a __main__ of its own
WORKER = "import sys; from gandist.bench.memory import worker_main; sys.exit(worker_main(sys.argv[1:]))"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--configs", default=str(REPO / "configs" / "wgan_gp_cifar10.yaml"),
                   help="comma list of experiment YAML files (default: the shipped ResNet config)")
    p.add_argument("--widen", type=int, default=4, help="also each config with model.g_width and d_width x this; "
                   "1 = not")
    p.add_argument("--processes", default="1,2,4", help="comma list of process counts")
    p.add_argument("--backends", default=",".join(BACKENDS), help=f"comma list of {', '.join(BACKENDS)}")
    p.add_argument("--bucket", type=int, default=ZeroSettings.reduce_bucket_size,
                   help="ZeRO's reduce_bucket_size in elements (gandist caps it at each network's size)")
    p.add_argument("--worker-result", help=argparse.SUPPRESS)  # set by the parent for its torchrun workers
    p.add_argument("overrides", nargs="*", help="config overrides key.sub=value, after the options above")


def add_parser(sub) -> None:
    p = sub.add_parser("memory", help="per-rank weight, gradient and optimizer-state bytes: DDP vs ZeRO-1/2",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)


# -- the inventory -------------------------------------------------------------------------------------

class Ledger:
    """Bytes of distinct storages, each counted once, under the first heading it was seen with."""

    def __init__(self):
        self.seen: set[int] = set()
        self.bytes: dict[str, int] = defaultdict(int)
        self.names: dict[str, set] = defaultdict(set)
        self.by_name: dict[str, int] = defaultdict(int)  # "heading:name" -> bytes

    def add(self, heading: str, tensors, name: str = "") -> None:
        for t in tensors:
            if not isinstance(t, torch.Tensor) or t.numel() == 0 or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            if storage.data_ptr() in self.seen:
                continue
            self.seen.add(storage.data_ptr())
            self.bytes[heading] += storage.nbytes()
            self.by_name[f"{heading}:{name}"] += storage.nbytes()
            if name:
                self.names[heading].add(name)


def tensors_in(value, depth: int = 3):
    """The tensors in an attribute's value, a few containers deep; modules and optimizers have headings of their own."""
    if isinstance(value, torch.Tensor):
        yield value
    elif depth == 0 or isinstance(value, (torch.nn.Module, torch.optim.Optimizer, str, bytes)):
        return
    elif isinstance(value, dict):
        for v in value.values():
            yield from tensors_in(v, depth - 1)
    elif isinstance(value, (list, tuple, set)):
        for v in value:
            yield from tensors_in(v, depth - 1)
    elif hasattr(value, "__dataclass_fields__"):
        for v in vars(value).values():
            yield from tensors_in(v, depth - 1)


def optimizer_state(opt: torch.optim.Optimizer):
    for state in opt.state.values():
        yield from tensors_in(state)


# ZeRO-1/2 optimizer (deepspeed.runtime.zero.stage_1_and_2) attributes by heading, in the order they are counted
ZERO_HEADINGS = (("params", ("bit16_groups_flat",)), ("master", ("single_partition_of_fp32_groups",)),
                 ("buckets", ("ipg_buckets",)), ("grads", ("averaged_gradients", "grads_in_partition")))


def inventory(module, opt, zero=None, ddp=None) -> Ledger:
    """Everything one network holds on this rank now, by heading."""
    led = Ledger()
    led.add("params", module.parameters())
    if zero is not None:
        for heading, names in ZERO_HEADINGS:
            for name in names:
                led.add(heading, tensors_in(getattr(zero, name, None)), name)
        opt = zero.optimizer  # the torch optimizer ZeRO steps on this rank's flat slice
    led.add("grads", (p.grad for p in module.parameters()), ".grad")
    led.add("optimizer", optimizer_state(opt), "state")
    if zero is not None:
        for name, value in vars(zero).items():
            led.add("other", tensors_in(value), name)
    if ddp is not None:
        sizes = ddp._get_ddp_logging_data().get("bucket_sizes", "")  # bytes per bucket, comma separated
        led.bytes["buckets"] += sum(int(s) for s in str(sizes).split(",") if s.strip())
    return led


def holdings(during: list[Ledger], after: Ledger) -> dict:
    """A network's bytes: weights and optimizer state after its step, gradients and buckets at their peak."""
    peak = max(during, key=lambda led: led.bytes["grads"] + led.bytes["buckets"])
    names = set().union(*(led.names["other"] for led in [*during, after]))
    return {"params": after.bytes["params"], "grads": peak.bytes["grads"], "master": after.bytes["master"],
            "optimizer": after.bytes["optimizer"] + after.bytes["master"], "buckets": peak.bytes["buckets"],
            "other": max(led.bytes["other"] for led in [*during, after]), "other_names": sorted(names),
            "grads_by": {k.split(":", 1)[1]: v for k, v in peak.by_name.items() if k.startswith("grads:")}}


def formula(backend: str, numel: int, world: int, moments: int, bucket: int) -> dict:
    """What the ZeRO paper's accounting expects per rank, fp32 (bytes)."""
    P, k = numel, moments
    if backend == "ddp":
        return {"params": 4 * P, "grads": 4 * P, "optimizer": 4 * k * P, "buckets": 4 * P}
    grads = 4 * P if backend == "zero1" else 4 * P / world
    whole = -(-P // 1024) * 1024  # gandist.backends.zero.engines.engine_config's cap
    return {"params": 4 * P, "grads": grads, "optimizer": (4 * k + 4) * P / world, "buckets": 4 * min(bucket, whole)}


# -- one rank ------------------------------------------------------------------------------------------

def load(path: str, widen: int, overrides) -> config.Config:
    """The config as benched: embedded data, no labels (a rounding error), G and D `widen` times as wide."""
    base = ["data.source=synthetic", "model.conditioning=none", "log.trackers=[]"]
    cfg = config.load(path, base + list(overrides))
    if widen == 1:
        return cfg
    wide = [f"model.g_width={cfg.model.g_width * widen}", f"model.d_width={cfg.model.d_width * widen}"]
    return config.load(path, base + wide + list(overrides))


def optimizer(o, net: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """optim.name's torch optimizer; its state is the same size whatever implementation (fused, foreach) runs it."""
    if o.name == "adam":
        return torch.optim.Adam(net.parameters(), lr=lr, betas=(o.beta1, o.beta2))
    return torch.optim.RMSprop(net.parameters(), lr=lr)


def step(module, wrapper, opt, zero, loss) -> dict:
    """Backward and step of one network, with inventories during the backward (under ZeRO the peak is just
    before the bucket is released), after it, and after the step."""
    ddp = wrapper if isinstance(wrapper, torch.nn.parallel.DistributedDataParallel) else None
    during = []
    if zero is not None:
        release = getattr(zero, "_release_ipg_buffers", None)  # DeepSpeed 0.19; elsewhere: after the backward only
        if release is not None:
            def counted():
                during.append(inventory(module, opt, zero))
                release()
            zero._release_ipg_buffers = counted
        wrapper.backward(loss)
    else:
        loss.backward()
    during.append(inventory(module, opt, zero, ddp))
    if zero is not None:
        wrapper.step()
    else:
        opt.step()
    return holdings(during, inventory(module, opt, zero, ddp))


def measure(cfg, backend: str, bucket: int, device: torch.device) -> dict:
    """One D step and one G step under `backend`; {"G": figures, "D": figures} of this rank."""
    world = dist.get_world_size()
    torch.manual_seed(cfg.train.seed)
    G, D = nets.build(cfg)
    if world > 1:
        G, D = convert_sync_batchnorm(G, device.type), convert_sync_batchnorm(D, device.type)
    G, D = G.to(device), D.to(device)
    opt_g, opt_d = optimizer(cfg.optim, G, cfg.optim.lr_g), optimizer(cfg.optim, D, cfg.optim.lr_d)
    if backend == "ddp":
        ids = [device.index] if device.type == "cuda" else None
        hush_buffer_flag_warning()
        Gw, Dw = (torch.nn.parallel.DistributedDataParallel(m, device_ids=ids, broadcast_buffers=False) for m in (G, D))
        zg = zd = None
    else:
        eng = make_engines(G, D, opt_g, opt_d, build_config(ZeroSettings(
            stage=int(backend[-1]), micro_batch=1, world_size=world, reduce_bucket_size=bucket,
            allgather_bucket_size=bucket)))
        Gw, Dw, zg, zd = eng.G, eng.D, eng.G.optimizer, eng.D.optimizer
    data = cfg.data
    real = torch.rand(1, data.channels, data.resolution, data.resolution, device=device) * 2 - 1
    z = torch.randn(1, cfg.model.z_dim, device=device)
    # D step: under ZeRO the forwards go through the module (a penalty's autograd.grad through an engine's forward
    # fails in DeepSpeed 0.19, see gandist.backends.zero.update); DDP's forward, as gandist's step calls it
    Dcall = D if zg is not None else Dw
    with torch.no_grad():
        fake = Gw(z, None)
    loss = losses.d_loss(cfg.loss.adversarial, Dcall(real, None), Dcall(fake, None))
    reg = regularizers.lookup(cfg.loss.regularizer)
    if reg.penalty is not None:
        rand = lambda purpose, n: torch.rand(1, n, device=device)  # noqa: E731
        loss = loss + reg.weight(cfg.loss) * reg.penalty(CriticInputs(Dcall, real, fake, None, rand))
    d = step(D, Dw, opt_d, zd, loss)
    # G step, D frozen and called unwrapped
    D.requires_grad_(False)
    loss = losses.g_loss(cfg.loss.adversarial, D(Gw(z, None), None))
    g = step(G, Gw, opt_g, zg, loss)
    return {"G": g, "D": d,
            "numel": {"G": sum(p.numel() for p in G.parameters()), "D": sum(p.numel() for p in D.parameters())}}


def worker_main(argv) -> int:
    """One of N processes (torchrun): every config and backend; rank 0 leaves all ranks' figures in a file."""
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    dist.init_process_group("nccl" if cuda else "gloo")
    rows = []
    for path in args.configs.split(","):
        for widen in sorted({1, args.widen}):
            cfg = load(path, widen, args.overrides)
            for backend in args.backends.split(","):
                got = measure(cfg, backend, args.bucket, device)
                gc.collect()  # the engines and their buffers go before the next backend's are made
                ranks = [None] * dist.get_world_size()
                dist.all_gather_object(ranks, got)
                rows.append({"config": Path(path).stem, "arch": cfg.model.arch, "g_width": cfg.model.g_width,
                             "d_width": cfg.model.d_width, "optimizer": cfg.optim.name, "backend": backend,
                             "processes": dist.get_world_size(), "ranks": ranks})
    if dist.get_rank() == 0:
        Path(args.worker_result).write_text(json.dumps(rows))
    dist.barrier()
    dist.destroy_process_group()
    # DeepSpeed keeps handles of the groups it made in module globals; left to interpreter teardown, their gloo
    # threads outlive what they use and the process aborts ("terminate called without an active exception")
    # about one run in three on a busy machine, after its figures are written. So this worker ends here.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# -- the parent ----------------------------------------------------------------------------------------

def launch(args, n: int) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="gandist-bench-") as tmp:
        result = Path(tmp) / "result.json"
        argv = ["--configs", args.configs, "--widen", str(args.widen), "--backends", args.backends,
                "--bucket", str(args.bucket), "--worker-result", str(result), "--", *args.overrides]
        torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        env = dict(os.environ, OMP_NUM_THREADS=str(max(1, cores // n)))
        if not torch.cuda.is_available():
            env["DS_ACCELERATOR"] = "cpu"  # DeepSpeed would find no GPU and say so on every rank
        cmd = [torchrun, "--standalone", f"--nproc_per_node={n}", "--no-python", sys.executable, "-c", WORKER, *argv]
        p = subprocess.run(cmd, env=env, stdout=sys.stderr)  # their output is not this command's table
        if p.returncode != 0 or not result.is_file():
            raise SystemExit(f"gandist.bench memory: the {n} processes failed (exit {p.returncode})")
        return json.loads(result.read_text())


def figures(row: dict, net: str, bucket: int) -> dict:
    """A row's figures for one network: the largest over ranks (ranks differ by padding only), and the formula's."""
    ranks = [r[net] for r in row["ranks"]]
    got = {k: max(r[k] for r in ranks) for k in ("params", "grads", "optimizer", "master", "buckets", "other")}
    numel = row["ranks"][0]["numel"][net]
    moments = 2 if row["optimizer"] == "adam" else 1
    f = formula(row["backend"], numel, row["processes"], moments, bucket)
    return {"config": row["config"], "arch": row["arch"], "width": row["g_width" if net == "G" else "d_width"],
            "net": net, "parameters": numel, "backend": row["backend"], "processes": row["processes"], **got,
            "total": got["params"] + got["grads"] + got["optimizer"],
            "total_with_buckets": got["params"] + got["grads"] + got["optimizer"] + got["buckets"] + got["other"],
            "grads_by": {k: max(r["grads_by"].get(k, 0) for r in ranks) for k in ranks[0]["grads_by"]},
            "formula_total": round(f["params"] + f["grads"] + f["optimizer"]), "formula_buckets": f["buckets"],
            "other_names": sorted(set().union(*(r["other_names"] for r in ranks)))}


def report(args, rows: list[dict]) -> None:
    ds_version = metadata.version("deepspeed")  # not imported here: its import prints an accelerator line

    print(f"gandist.bench memory: per-rank bytes of G's and D's weights, gradients and optimizer state, fp32, "
          f"one step; DeepSpeed {ds_version}; ZeRO bucket {args.bucket:,} elements, capped at each network")
    print(f"Machine: {machine()}")
    print()
    print("| config | net | width | parameters | backend | processes | weights MB | gradients MB | optimizer state MB "
          "| total MB | formula MB | buckets MB (formula) | other MB | total with buckets MB |")
    print("| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    order = {b: i for i, b in enumerate(BACKENDS)}
    rows = sorted(rows, key=lambda r: (r["config"], r["width"], r["net"], order.get(r["backend"], 9), r["processes"]))
    for r in rows:
        other = f"{r['other'] / MB:,.1f}" + (f" ({', '.join(r['other_names'])})" if r["other"] > 1000 else "")
        print(f"| {r['config']} | {r['net']} | {r['width']} | {r['parameters']:,} | {r['backend']} | {r['processes']} "
              f"| {r['params'] / MB:,.1f} | {r['grads'] / MB:,.1f} | {r['optimizer'] / MB:,.1f} | {r['total'] / MB:,.1f} "
              f"| {r['formula_total'] / MB:,.1f} | {r['buckets'] / MB:,.1f} ({r['formula_buckets'] / MB:,.1f}) | {other} "
              f"| {r['total_with_buckets'] / MB:,.1f} |")
    print()
    print("weights and optimizer state (with ZeRO's fp32 copy of the rank's weight slice) after the step; gradients "
          "and buckets (DDP's gradient copy, ZeRO's reduction buffer) where the backward held the most of them; the "
          "largest over ranks.  total = weights + gradients + optimizer state; formula: 4P + 4P + 4kP (DDP), "
          "4P + 4P + (4k+4)P/N (ZeRO-1), 4P + (4+4k+4)P/N (ZeRO-2), P parameters, k optimizer moments (Adam 2), "
          "N processes.  total with buckets adds buckets and other: what the rank holds at once.")
    print(json.dumps({"bucket": args.bucket, "deepspeed": ds_version, "torch": torch.__version__,
                      "rows": [{k: v for k, v in r.items() if k != "other_names"} for r in rows]}))


def bench(args) -> int:
    processes = [int(n) for n in args.processes.split(",")]
    bad = [b for b in args.backends.split(",") if b not in BACKENDS]
    if bad or min(processes) < 1 or args.widen < 1 or args.bucket < 1:
        raise ConfigError(f"--backends: one or more of {', '.join(BACKENDS)}; --processes, --widen and --bucket "
                          f"at least 1 (got backends {args.backends}, processes {args.processes})")
    for path in args.configs.split(","):
        load(path, args.widen, args.overrides)  # every config's mistakes before any process starts
    rows = []
    for n in processes:
        for row in launch(args, n):
            rows += [figures(row, net, args.bucket) for net in ("G", "D")]
    report(args, rows)
    return 0


def run(args) -> int:
    return run_command("gandist.bench", lambda: bench(args), (ConfigError,))
