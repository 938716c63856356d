"""`python -m gandist.bench comm`: what one training round communicates, and what that costs on a cluster.

    python -m gandist.bench comm                                   # every configs/*.yaml, 8 nodes x 8 GPUs
    python -m gandist.bench comm --configs dcgan_celeba,wgan_gp_celeba --links 100,200,400 --steps 3
    python -m gandist.bench comm --compute-ms 4.2 --compute-ms wgan_gp_celeba=11   # rounds timed on a GPU

Each config's round is built as gandist.train builds it, at the per-GPU batch (global batch / (nodes x GPUs)),
in this process, and run once with hooks that count
  - the backward passes reaching G's and D's parameters: DDP all-reduces all of them in each, in fp32 buckets
    (parameters stay fp32 under autocast; no compression hook is set); the G step runs D unwrapped and frozen;
  - each BatchNorm's training forwards, and the backwards that need its input's gradient.  At world > 1 torch's
    SyncBatchNorm (CUDA) all-gathers 2C+1 fp32 a rank per forward (mean, invstd, count: world x (2C+1) arrive)
    and all-reduces 2C per backward; gandist's GlobalBatchNorm (CPU) all-reduces C+1 and C, both ways;
  - the logged values, summed on the device and reduced every train.log_every steps in float64: the steps'
    keys with the Reporter's rates (Tally.means), and the guard's counters with the stop signal (Tally.sync);
then times --steps rounds after --warmup (or takes --compute-ms).

The model: hierarchical collectives on --nodes N of --gpus-per-node G, a node's GPUs sharing --links-per-node
links of each --links Gb/s; NVLink ignored unless --nvlink-gbs.  A ring all-reduce of S bytes sends 2(N-1)/N x S
through a node's links, an all-gather of m bytes a rank brings (N-1) x G x m into each node, and every collective
costs --latency-us more (assumed, not measured).  Efficiency = compute / (compute + exposed communication), with
no overlap (the worst case) or with DDP's buckets hidden behind the round's compute up to its length (an upper
bound), all but each backward's last bucket, which is ready only when the backward ends; BatchNorm's collectives
block.  The dist section's levers (comm hook, bucket size, BatchNorm per node) change what is counted.  The node count where efficiency falls below --target keeps
the per-GPU batch.  The last line of stdout is one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from gandist import config
from gandist.backends.ddp import make_accelerator
from gandist.bench import machine
from gandist.bench.cluster import Cluster, Collective, efficiency_table, link_figures, link_for
from gandist.bench.timing import PREMADE, DeviceFeed, measure
from gandist.cli import ConfigError, run_command
from gandist.draws import Draws
from gandist.training.step import Stepper, build_models
from gandist.training.tally import GUARDED, WORST, Verdict

REPO = Path(__file__).resolve().parents[2]
MIB = 2 ** 20
FIRST_BUCKET, BUCKET_CAP = MIB, 25 * MIB  # DDP's defaults; accelerate passes no bucket_cap_mb of its own
SCALAR_BYTES = 8  # gandist.training.tally reduces float64
REPORTER_SUMS = ("images_per_sec", "data_skipped")  # Reporter.rates, summed with the logged means (Tally.means)
# Tally.sync's max all-reduce: the non-finite and scaler-skipped totals, D's and G's streaks and worst streaks,
# and the ranks' Verdict (tests/unit/test_bench_comm.py checks it against a run's collectives)
COUNTERS = WORST + len(GUARDED) + len(fields(Verdict))


# -- counting one round -------------------------------------------------------------------------------

@dataclass
class BNLayer:
    net: str  # "G" or "D"
    name: str
    channels: int
    forwards: int = 0  # training-mode forwards a round: one all-gather each (SyncBatchNorm)
    backwards: int = 0  # backwards that need the input's gradient: one all-reduce each


@dataclass
class Round:
    """What one round of a config does that needs communication at world > 1, counted in one process."""
    g_param_bytes: list  # bytes of each G parameter that takes a gradient, in registration order
    d_param_bytes: list
    g_reductions: int  # backward passes reaching G's parameters: DDP reduces all of them in each
    d_reductions: int
    bn: list = field(default_factory=list)
    stat_keys: list = field(default_factory=list)
    stat_bytes: int = 4  # element size of BatchNorm's statistics: fp32, fp64 only in an fp64 run
    g_param_shapes: list = field(default_factory=list)  # for PowerSGD's compressed sizes
    d_param_shapes: list = field(default_factory=list)


def count_round(stepper, step: int = 0) -> Round:
    """Run stepper.round(step) once with hooks on its unwrapped G and D and its tally; what it would
    communicate at world > 1."""
    G, D = stepper.m.G_raw, stepper.m.D_raw
    handles, bn, logged = [], [], set()
    passes = {"G": Counter(), "D": Counter()}  # per parameter: backward passes that accumulated its gradient

    def on_grad(net):
        return lambda p: passes[net].update([id(p)])

    def on_forward(layer):
        def hook(module, inputs, out):
            if not module.training:
                return
            layer.forwards += 1
            # SyncBatchNorm's backward all-reduces only when its input needs a gradient (needs_input_grad[0]);
            # a hook on the output fires once per backward pass that reaches the layer.
            if inputs[0].requires_grad and out.requires_grad:
                out.register_hook(lambda g: setattr(layer, "backwards", layer.backwards + 1))
        return hook


    for net, module in (("G", G), ("D", D)):
        for p in module.parameters():
            if p.requires_grad:
                handles.append(p.register_post_accumulate_grad_hook(on_grad(net)))
        for name, m in module.named_modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                bn.append(BNLayer(net, name, m.num_features))
                handles.append(m.register_forward_hook(on_forward(bn[-1])))
    add = stepper.tally.add  # the logged values are summed per set of keys (D's, G's, a log round's) until the log step
    stepper.tally.add = lambda stats: (logged.add(tuple(stats)), add(stats))[1]
    try:
        stepper.round(step)
    finally:
        for h in handles:
            h.remove()
        del stepper.tally.add  # the class's method again
    wide = torch.promote_types(next(G.parameters()).dtype, torch.float32)
    return Round([p.numel() * p.element_size() for p in G.parameters() if p.requires_grad],
                 [p.numel() * p.element_size() for p in D.parameters() if p.requires_grad],
                 max(passes["G"].values(), default=0), max(passes["D"].values(), default=0),
                 bn, sorted(k for keys in logged for k in keys), torch.empty((), dtype=wide).element_size(),
                 [tuple(p.shape) for p in G.parameters() if p.requires_grad],
                 [tuple(p.shape) for p in D.parameters() if p.requires_grad])


def buckets(param_bytes: list, first: int = FIRST_BUCKET, cap: int = BUCKET_CAP) -> list:
    """DDP's buckets after its first iteration: gradients in the order they become ready (about the reverse
    of registration), a bucket closed once it holds at least its limit (the first's is smaller)."""
    out, size = [], 0
    for b in reversed(param_bytes):
        size += b
        if size >= (first if not out else cap):
            out.append(size)
            size = 0
    return out + [size] if size else out


# -- the collectives a round runs ----------------------------------------------------------------------

def grad_collectives(net: str, sizes: list, shapes: list, n: int, dist=None) -> list:
    """The gradient all-reduces of one net's backward, n a round, under dist's comm hook and bucket size:
    bf16/fp16 send half the bytes; PowerSGD (torch's hook) sends, a bucket, its 1-D tensors and each matrix
    it compresses as rank x (rows + columns) values, in three all-reduces one after another (the tensors
    that compress less than 2x go whole, with the 1-D ones)."""
    if not n:
        return []
    hook = dist.comm_hook if dist is not None else "none"
    cap = int(dist.bucket_mb * MIB) if dist is not None else BUCKET_CAP
    bs = buckets(sizes, cap=cap)
    last = len(bs) - 1  # ready only when the backward ends: nothing is left to hide it behind
    if hook != "powersgd":
        half = 0.5 if hook in ("bf16", "fp16") else 1.0
        return [Collective(f"{net} grads", "all_reduce", int(b * half), n, k < last) for k, b in enumerate(bs)]
    out, i = [], len(sizes)
    for k, b in enumerate(bs):  # buckets fill from the last parameter
        whole = p_bytes = q_bytes = 0
        while b > 0:
            i -= 1
            b -= sizes[i]
            rows, cols = shapes[i][0], (sizes[i] // 4) // max(shapes[i][0], 1)
            k = dist.powersgd_rank
            if len(shapes[i]) > 1 and rows * cols >= 2 * k * (rows + cols):
                p_bytes, q_bytes = p_bytes + 4 * k * rows, q_bytes + 4 * k * cols
            else:
                whole += sizes[i]
        out += [Collective(f"{net} grads {part}", "all_reduce", nb, n, k < last)
                for part, nb in (("whole", whole), ("P", p_bytes), ("Q", q_bytes)) if nb]
    return out


def traffic(r: Round, log_every: int, sync_bn: bool = True, bn: str = "sync", dist=None) -> list:
    """Every collective a round runs at world > 1; BatchNorm as torch's SyncBatchNorm (bn="sync", CUDA) or
    as gandist's GlobalBatchNorm (bn="gloo": all-reduces of C+1 and C values per forward and per backward);
    dist: the config's dist section (its comm hook, bucket size, BatchNorm scope), None for DDP's defaults."""
    out = grad_collectives("D", r.d_param_bytes, r.d_param_shapes, r.d_reductions, dist) + \
        grad_collectives("G", r.g_param_bytes, r.g_param_shapes, r.g_reductions, dist)
    if sync_bn and dist is not None and dist.bn_scope == "node":  # inside a node: no bytes over its links
        out += [Collective(f"BN {layer.net}.{layer.name} (node)", "node_local", 0, layer.forwards + layer.backwards)
                for layer in r.bn]
    elif sync_bn and bn == "gloo":
        for layer in r.bn:
            for part, c in (("sums", layer.channels + 1), ("variances", layer.channels)):
                out.append(Collective(f"BN {layer.net}.{layer.name} {part}", "all_reduce", c * r.stat_bytes,
                                      layer.forwards + layer.backwards))
    elif sync_bn:
        for layer in r.bn:
            c, e = layer.channels, r.stat_bytes
            out.append(Collective(f"BN {layer.net}.{layer.name} fwd", "all_gather", (2 * c + 1) * e, layer.forwards))
            if layer.backwards:
                out.append(Collective(f"BN {layer.net}.{layer.name} bwd", "all_reduce", 2 * c * e, layer.backwards))
    scalars = len(r.stat_keys) + len(REPORTER_SUMS)
    out.append(Collective("logged values", "all_reduce", scalars * SCALAR_BYTES, 1 / log_every))
    out.append(Collective("counters and verdict", "all_reduce", COUNTERS * SCALAR_BYTES, 1 / log_every))
    return out


def gloo_bn_values(r: Round) -> int:
    """Values gandist's GlobalBatchNorm (CPU/gloo) all-reduces a round: C+1 and C per forward and per backward."""
    return sum((2 * layer.channels + 1) * (layer.forwards + layer.backwards) for layer in r.bn)


# -- the command ------------------------------------------------------------------------------------

def add_parser(sub) -> None:
    p = sub.add_parser("comm", help="bytes a round communicates per config; time and efficiency on N x G GPUs",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="", help="comma list of config names in configs/ or paths (default: all)")
    p.add_argument("--nodes", type=int, default=8)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--links", default="100,400", help="comma list of inter-node link speeds, Gb/s")
    p.add_argument("--links-per-node", type=int, default=1, help="links a node's GPUs share (8: one NIC a GPU)")
    p.add_argument("--nvlink-gbs", type=float, default=0.0, help="intra-node GB/s a GPU (0: intra-node ignored)")
    p.add_argument("--latency-us", type=float, default=30.0, help="assumed fixed time of every collective, us")
    p.add_argument("--target", type=float, default=0.9, help="the efficiency whose crossing is reported")
    p.add_argument("--max-nodes", type=int, default=1024, help="nodes searched for the crossing")
    p.add_argument("--steps", type=int, default=5, help="rounds timed per config")
    p.add_argument("--warmup", type=int, default=2, help="rounds run before timing")
    p.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="where rounds are timed (default: cuda if present)")
    p.add_argument("--compute-ms", action="append", default=[], metavar="[CONFIG=]MS",
                   help="ms of one round measured elsewhere, for every config or for one; repeatable")
    p.add_argument("overrides", nargs="*", help="config overrides key.sub=value applied to every config")


def config_paths(spec: str) -> list:
    if not spec:
        return sorted((REPO / "configs").glob("*.yaml"))
    paths = [Path(s) if s.endswith((".yaml", ".yml")) else REPO / "configs" / f"{s}.yaml" for s in spec.split(",")]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ConfigError(f"--configs: no such file: {', '.join(missing)}")
    return paths


def compute_ms(values: list) -> dict:
    """--compute-ms values -> {config name or '': ms}."""
    try:
        return {name: float(ms) for name, _, ms in (v.rpartition("=") for v in values)}
    except ValueError:
        raise ConfigError(f"--compute-ms: expected MS or CONFIG=MS, got {values}") from None


def premade(cfg, device: torch.device) -> list:
    """Batches of images in [-1, 1] and labels of the config's shape: the data's values don't change the time."""
    g = torch.Generator().manual_seed(0)
    b, d, ld = cfg.train.batch_size, cfg.data, cfg.label_dim
    out = []
    for _ in range(PREMADE):
        x = torch.rand(b, d.channels, d.resolution, d.resolution, generator=g) * 2 - 1
        y = (torch.rand(b, ld, generator=g) > 0.5).float() if ld else None
        out.append((x.to(device), None if y is None else y.to(device)))
    return out


def examine(path: Path, args, world: int, given_ms, bn: str = "sync") -> dict:
    """One config: its round counted (and timed unless given_ms) in this process at the per-GPU batch;
    bn: which BatchNorm's collectives (traffic)."""
    with tempfile.TemporaryDirectory(prefix="gandist-bench-") as out:
        base = [f"output.dir={out}", "log.trackers=[]", "log.progress=false"]
        if args.device:
            base.append(f"train.device={args.device}")
        full = config.load(str(path), base + list(args.overrides))
        if full.train.batch_size % world and not full.dist.batch_per_process:
            raise ConfigError(f"{path.name}: train.batch_size {full.train.batch_size} does not split over {world} GPUs")
        per_gpu = full.dist.batch_per_process or full.train.batch_size // world
        cfg = config.load(str(path), base + list(args.overrides) + [f"train.batch_size={per_gpu}"])
        acc = make_accelerator(cfg)
        models = build_models(cfg, acc)
        draws = Draws(cfg.train.seed, cfg.train.batch_size, 0, 1, acc.device)
        stepper = Stepper(cfg, acc, models, DeviceFeed(premade(cfg, acc.device)), draws)
        counted = count_round(stepper)
        ms, source = given_ms, "given"
        if ms is None:
            seconds, _ = measure({"round": stepper.round}, args.warmup, args.steps, acc.device)
            ms, source = 1000 * seconds["round"] / args.steps, f"{acc.device.type}, {args.steps} rounds"
    sync = full.model.sync_bn if full.model.sync_bn is not None else world > 1
    return {"name": path.stem, "cfg": full, "batch": cfg.train.batch_size, "round": counted,
            "colls": traffic(counted, full.train.log_every, sync, bn, full.dist), "ms": ms, "source": source}


def mb(n: float) -> str:
    return f"{n / 1e6:,.2f} MB" if n >= 1e5 else f"{n / 1e3:,.1f} kB" if n >= 1e3 else f"{n:,.0f} B"


def figures(e: dict, clusters: list, target: float, max_nodes: int) -> dict:
    r, colls, cfg, world, s = e["round"], e["colls"], e["cfg"], clusters[0].world, e["ms"] / 1000
    gathered = sum(c.nbytes * c.per_round * world for c in colls if c.kind == "all_gather")
    out = {"config": e["name"], "variant": cfg.variant, "batch_per_gpu": e["batch"],
           "d_steps": cfg.optim.n_critic, "g_steps": cfg.optim.g_steps, "log_every": cfg.train.log_every,
           "d_grad_bytes": sum(r.d_param_bytes), "d_reductions": r.d_reductions,
           "g_grad_bytes": sum(r.g_param_bytes), "g_reductions": r.g_reductions,
           "d_buckets": len(buckets(r.d_param_bytes)), "g_buckets": len(buckets(r.g_param_bytes)),
           "bn_layers": [asdict(b) for b in r.bn], "bn_allgather_bytes": gathered,
           "bn_allreduce_bytes": sum(c.nbytes * c.per_round for c in colls if c.what.endswith("bwd")),
           "bn_gloo_allreduce_bytes": gloo_bn_values(r) * r.stat_bytes,
           "log_step_values": [len(r.stat_keys) + len(REPORTER_SUMS), COUNTERS],  # Tally.means's, Tally.sync's
           "allreduce_bytes_per_round": sum(c.nbytes * c.per_round for c in colls if c.kind == "all_reduce"),
           "collectives_per_round": sum(c.per_round for c in colls),
           "compute_ms": e["ms"], "compute_source": e["source"],
           "links": link_figures(colls, clusters, s, target, max_nodes)}
    out["link_gbps_for_target"] = link_for(colls, s, clusters[0], target)  # None: no speed is enough
    return out


def rounded(x):
    """The JSON line's floats to 4 decimals: more digits than the model means."""
    if isinstance(x, (dict, list)):
        return {k: rounded(v) for k, v in x.items()} if isinstance(x, dict) else [rounded(v) for v in x]
    return round(x, 4) if isinstance(x, float) else x


def bn_line(r: Round) -> str:
    """Layers with the same counts together: 'G 3 x C=128/64/32: 2 fwd, 1 bwd; D ...'."""
    groups = {}
    for b in r.bn:
        groups.setdefault((b.net, b.forwards, b.backwards), []).append(str(b.channels))
    return "; ".join(f"{n} {len(cs)} x C={'/'.join(cs)}: {f} fwd, {k} bwd" for (n, f, k), cs in groups.items()) or "none"


def report(rows: list, rounds: list, clusters: list, args) -> None:
    cl = clusters[0]
    print(f"gandist.bench comm: {cl.nodes} nodes x {cl.gpus} GPUs ({cl.world} ranks), {cl.links_per_node} link(s) a "
          f"node of {', '.join(f'{c.link_gbps:g}' for c in clusters)} Gb/s, NVLink "
          f"{f'{cl.nvlink_gbs:g} GB/s' if cl.nvlink_gbs else 'ignored'}, {cl.latency_us:g} us a collective")
    print(f"Machine: {machine()}; threads {torch.get_num_threads()}")
    print()
    print(f"Per rank and round (train.steps counts rounds) at {cl.world} ranks; BatchNorm as torch's SyncBatchNorm:")
    print("| config | variant | batch/GPU | round | D grads | G grads | BN all-gathered | BN all-reduced | "
          "log step: values x 8 B / steps | all-reduced / round | collectives / round |")
    print("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for f in rows:
        print(f"| {f['config']} | {f['variant']} | {f['batch_per_gpu']} | {f['d_steps']} D + {f['g_steps']} G | "
              f"{f['d_reductions']} x {mb(f['d_grad_bytes'])} | {f['g_reductions']} x {mb(f['g_grad_bytes'])} | "
              f"{mb(f['bn_allgather_bytes'])} | {mb(f['bn_allreduce_bytes'])} | "
              f"{' + '.join(map(str, f['log_step_values']))} / {f['log_every']} | {mb(f['allreduce_bytes_per_round'])} | "
              f"{f['collectives_per_round']:.2f} |")
    print()
    efficiency_table(rows, clusters, args.target, args.max_nodes)
    print()
    print("BatchNorm layers, training forwards and input-gradient backwards a round (SyncBatchNorm: one all-gather "
          "of 2C+1 fp32 a forward, growing with the world; one all-reduce of 2C a backward):")
    for f, r in zip(rows, rounds):
        print(f"  {f['config']}: {bn_line(r)}")


def bench(args) -> int:
    if args.steps < 1 or args.warmup < 0 or args.nodes < 1 or args.gpus_per_node < 1 or not 0 < args.target < 1:
        raise ConfigError("--steps, --nodes and --gpus-per-node must be at least 1, --warmup at least 0, "
                          "--target in (0, 1)")
    if args.threads:
        torch.set_num_threads(args.threads)
    given = compute_ms(args.compute_ms)
    try:
        clusters = [Cluster(args.nodes, args.gpus_per_node, float(g), args.links_per_node, args.nvlink_gbs,
                            args.latency_us) for g in args.links.split(",")]
    except ValueError:
        raise ConfigError(f"--links: expected a comma list of Gb/s, got {args.links!r}") from None
    world = clusters[0].world
    examined = [examine(p, args, world, given.get(p.stem, given.get(""))) for p in config_paths(args.configs)]
    rows = [figures(e, clusters, args.target, args.max_nodes) for e in examined]
    report(rows, [e["round"] for e in examined], clusters, args)
    print(json.dumps({"nodes": args.nodes, "gpus_per_node": args.gpus_per_node, "links_per_node": args.links_per_node,
                      "nvlink_gbs": args.nvlink_gbs, "latency_us": args.latency_us, "target": args.target,
                      "configs": rounded(rows)}))
    return 0


def run(args) -> int:
    return run_command("gandist.bench", lambda: bench(args), (ConfigError,))
