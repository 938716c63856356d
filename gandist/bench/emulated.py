"""`python -m gandist.bench cluster`: a config trained across an emulated cluster with real, slow links.

    python -m gandist.bench cluster --nodes 2 --link-gbit 1 --config configs/quickstart.yaml --steps 60
    python -m gandist.bench cluster --link-gbit 0.25,1 --config configs/quickstart.yaml dist.comm_hook=bf16

Needs root.  --nodes network namespaces are the nodes, each with its own address, joined through a bridge by
veth links capped with tc's token bucket (gandist/bench/fabric.py; no latency can be added: this kernel has no
netem).  Each node runs its torchrun agent (gloo, --procs-per-node workers); the c10d rendezvous store
(launch/store.py) runs outside the nodes, on the bridge.  In one command, back to back, it trains:
  1. one node at the same per-process batch (the compute alone: N x its images/s is perfect scaling);
  2. N nodes over uncapped veth links (what sharing this machine's cores costs, without the link);
  3. N nodes at each --link-gbit.
It prints images/s, the efficiency against N x one node and against the uncapped links, and what the
model of `bench comm` predicts for each from the measured round time and the link.  Everything it made is
deleted at the end, also on Ctrl-C, SIGTERM or an error (it only ever touches names gd<tag>-*).

The link: a GPU round (--gpu-round-ms, DCGAN-64 on an H100: about 0.5 ms) is R times shorter than the CPU
round measured here, so a link of X Gb/s here puts the same communication-to-compute ratio on the round as
X x R Gb/s would beside the GPU: that equivalent is printed beside each rate.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from gandist import config
from gandist.bench import machine
from gandist.bench.comm import examine
from gandist.bench.cluster import Cluster, efficiency, round_seconds
from gandist.bench.fabric import HUB_ADDR, Fabric, FabricError, check_can_build
from gandist.cli import ConfigError, run_command
from gandist.training import run_dir as layout

REPO = Path(__file__).resolve().parents[2]
QUIET = ["log.trackers=[]", "log.progress=false", "train.sample_every=1000000", "checkpoint.every=1000000",
         "eval.metrics=[]"]
UNCAPPED = None


def add_parser(sub) -> None:
    p = sub.add_parser("cluster", help="a config across N network-namespace nodes joined by capped links (root)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "configs" / "quickstart.yaml"), help="experiment YAML file")
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--procs-per-node", type=int, default=1, help="torchrun workers a node")
    p.add_argument("--link-gbit", default="1", help="comma list of link rates, Gb/s each way")
    p.add_argument("--steps", type=int, default=60, help="rounds trained in each run")
    p.add_argument("--log-every", type=int, default=10, help="rounds between throughput readings")
    p.add_argument("--repeat", type=int, default=1, help="runs of the whole plan, one after another; each figure is "
                   "the median of its repeats (the load of a shared machine changes between runs)")
    p.add_argument("--skip", type=int, default=1, help="first readings left out (start-up)")
    p.add_argument("--batch-per-process", type=int,
                   help="per-process batch, the same in every run (default: the config's batch / N workers)")
    p.add_argument("--threads", type=int, default=1, help="OMP threads a worker")
    p.add_argument("--gpu-round-ms", type=float, default=0.5, help="a GPU round the link is scaled against")
    p.add_argument("--latency-us", type=float, help="the model's fixed time a collective (default: measured, from "
                   "the uncapped N-node round against the 1-node round)")
    p.add_argument("--port", type=int, default=29400, help="the rendezvous store's port (on the hub)")
    p.add_argument("--tag", help="names everything gd<tag>-* (default: random)")
    p.add_argument("--run-timeout", type=float, default=600.0, help="seconds one training run may take")
    p.add_argument("--out", help="keep each run's directory (metrics.jsonl, logs) here, run<k> in the order "
                   "run (default: a temporary directory, deleted at the end)")
    p.add_argument("--no-model", action="store_true", help="leave out the model's predictions")
    p.add_argument("--levers", default="", help="';'-separated sets of overrides (e.g. 'dist.comm_hook=bf16;"
                   "dist.comm_hook=powersgd model.sync_bn=false'), each also run on N nodes at every link rate")
    p.add_argument("overrides", nargs="*", help="config overrides key.sub=value for every run")


def rates(spec: str) -> list[float]:
    try:
        out = [float(x) for x in spec.split(",")]
    except ValueError:
        out = []
    if not out or any(not (x > 0 and math.isfinite(x)) for x in out):
        raise ConfigError(f"--link-gbit: expected a comma list of positive Gb/s, got {spec!r}")
    return out


def images_per_s(run_dir: Path, skip: int) -> float:
    """Images a second over the readings after the first `skip`: each reading covers the same rounds, so the
    harmonic mean of their rates is total images over total seconds."""
    rows, _ = layout.read_metrics(run_dir)
    rows = [r["images_per_sec"] for r in rows[skip:] if r.get("images_per_sec", 0) > 0]
    if not rows:
        raise RuntimeError(f"{run_dir / layout.METRICS}: no throughput readings after the first {skip}")
    return len(rows) / sum(1 / r for r in rows)


def train(fab: Fabric, nodes: int, args, overrides: list, out: Path, run_id: str) -> float:
    """One training run on the first `nodes` nodes; its images/s."""
    out.mkdir(parents=True)
    store = fab.run("hub", [sys.executable, str(REPO / "launch/store.py"), "--host", HUB_ADDR, "--port",
                            str(args.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    agents, logs = [], []
    try:
        for i in range(nodes):
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), GLOO_SOCKET_IFNAME=fab.node_if[i],
                       PYTHONUNBUFFERED="1")
            logs.append(open(out.parent / f"{out.name}.node{i}.log", "w"))
            agents.append(fab.run(i, [
                sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}",
                f"--nproc-per-node={args.procs_per_node}", "--rdzv-backend=c10d",
                f"--rdzv-endpoint={HUB_ADDR}:{args.port}", f"--rdzv-id={run_id}", "--rdzv-conf=is_host=false",
                f"--local-addr={fab.addr(i)}", "--max-restarts=0", "-m", "gandist.train", "--config", args.config,
                *overrides, f"output.dir={out}"], cwd=REPO, env=env, stdout=logs[-1], stderr=subprocess.STDOUT))
        end = time.monotonic() + args.run_timeout
        for i, a in enumerate(agents):
            try:
                rc = a.wait(max(1.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                rc = "timed out"
            if rc != 0:
                tail = (out.parent / f"{out.name}.node{i}.log").read_text()[-3000:]
                raise RuntimeError(f"node {i} of the run on {nodes} node(s): {rc}\n{tail}")
    finally:
        for a in agents:
            fab.stop(a)
        fab.stop(store)
        for f in logs:
            f.close()
    return images_per_s(out, args.skip)


def per_process(levers: str, per: int) -> int:
    """A run's per-process batch: a lever set's dist.batch_per_process, else the command's."""
    for o in levers.split():
        key, _, value = o.partition("=")
        if key == "dist.batch_per_process" and value.strip().isdigit() and int(value) > 0:
            return int(value)
    return per


def model_colls(args, overrides: list, world: int):
    """The config's round counted as `bench comm` counts it, at the per-process batch, BatchNorm as gloo's."""
    ns = SimpleNamespace(device="cpu", overrides=overrides, warmup=0, steps=1)
    return examine(Path(args.config), ns, world, 1.0, bn="gloo")["colls"]


def measured_latency_us(colls, one: dict, free: dict) -> float:
    """The fixed time a collective that makes the model's uncapped N-node round the measured one: all of what the
    uncapped round takes beyond the 1-node round, spread over the round's collectives.  On a loaded CPU it is
    mostly a blocked process losing its core, not the wire (README, Scaling out)."""
    count = sum(c.per_round for c in colls)
    return max(0.0, (free["round_ms"] - one["round_ms"]) / 1000 / count * 1e6) if count else 0.0


def predict(colls, nodes: int, procs: int, gbit: float | None, compute_s: float, latency_us: float) -> tuple:
    """(no overlap, overlap) efficiency of a round of compute_s on `nodes` at gbit (None: no wire time)."""
    cl = Cluster(nodes, procs, gbit if gbit is not None else 1e12, latency_us=latency_us)
    grad, blocking = round_seconds(colls, cl)
    return efficiency(compute_s, grad, blocking, False), efficiency(compute_s, grad, blocking, True)


def bench(args) -> int:
    check_can_build()  # before anything else is read or made
    links = rates(args.link_gbit)
    if args.nodes < 2 or min(args.procs_per_node, args.steps, args.log_every, args.repeat) < 1:
        raise ConfigError("--nodes must be at least 2, --procs-per-node, --steps, --log-every and --repeat at least 1")
    if args.steps < (args.skip + 1) * args.log_every:
        raise ConfigError(f"--steps {args.steps}: needs at least (--skip + 1) x --log-every = "
                          f"{(args.skip + 1) * args.log_every} for one reading")
    if not Path(args.config).is_file():
        raise ConfigError(f"--config: no such file: {args.config}")
    world = args.nodes * args.procs_per_node
    cfg = config.load(args.config, list(args.overrides) + ["output.dir=/nonexistent"])
    per = args.batch_per_process or cfg.train.batch_size // world
    if per < 1:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} is smaller than the {world} workers")
    common = QUIET + list(args.overrides) + [f"train.steps={args.steps}", f"train.log_every={args.log_every}"]
    tag = args.tag or secrets.token_hex(3)
    if args.out and Path(args.out).exists():
        raise ConfigError(f"--out {args.out}: exists already (it is not overwritten)")
    with tempfile.TemporaryDirectory(prefix="gandist-bench-cluster-") as tmp:
        runs = measure(args, cfg, per, links, common, tag, Path(args.out or tmp))
        report(args, cfg, per, runs, common, tag)
    return 0


def measure(args, cfg, per: int, links: list, common: list, tag: str, work: Path) -> list:
    """The runs, back to back on one fabric: 1 node and N uncapped, then N at each link, for each lever set;
    the whole plan --repeat times, each figure the median of its repeats."""
    sets = [s.split() for s in args.levers.split(";") if s.strip()]
    plan = [(1, UNCAPPED, []), (args.nodes, UNCAPPED, [])] + [(args.nodes, g, lv) for lv in [[]] + sets for g in links]
    rates = {}
    with Fabric(args.nodes, tag) as fab:
        for k, (n, g, lv) in enumerate(plan * args.repeat):
            fab.cap(g)
            batch = [f"train.batch_size={per * n * args.procs_per_node}"]  # dist.batch_per_process overrides it
            rate = train(fab, n, args, common + lv + batch, work / f"run{k}", f"{tag}-{k}")
            rates.setdefault((n, g, " ".join(lv)), []).append(rate)
    runs = []
    for (n, g, lv), got in rates.items():
        rate = statistics.median(got)
        b = per_process(lv, per)
        runs.append({"nodes": n, "link_gbit": g, "levers": lv, "images_per_s": rate, "repeats": got,
                     "batch_per_process": b, "round_ms": 1000 * b * n * args.procs_per_node * cfg.optim.n_critic / rate})
    return runs


def report(args, cfg, per: int, runs: list, common: list, tag: str) -> None:
    one, free = runs[0], runs[1]
    n, procs = args.nodes, args.procs_per_node
    batch = [f"train.batch_size={per * n * procs}"]
    colls = {} if args.no_model else {r["levers"]: model_colls(args, common + r["levers"].split() + batch, n * procs)
                                      for r in runs}
    scale = one["round_ms"] / args.gpu_round_ms
    latency = args.latency_us if args.latency_us is not None or not colls else measured_latency_us(colls[""], one, free)
    print(f"# python -m gandist.bench cluster: {n} nodes x {procs} process(es), network namespaces, tc tbf links; "
          f"{machine()}; shared, loaded CPU: ratios measured back to back in this command")
    print(f"config {args.config} {' '.join(args.overrides)}; batch {per} a process; {args.steps} rounds a run, "
          f"readings every {args.log_every} after the first {args.skip}")
    print(f"a round on one node: {one['round_ms']:.1f} ms, {scale:.0f}x a {args.gpu_round_ms:g} ms GPU round: a link "
          f"here stands for one {scale:.0f}x as fast beside the GPU")
    if colls:
        print(f"the model's fixed time a collective: {latency:,.0f} us" + (" (given)" if args.latency_us is not None else
              f" (measured: the uncapped {n}-node round less the 1-node one, over {sum(c.per_round for c in colls['']):.1f} "
              f"collectives a round)"))
    print("| nodes | link Gb/s (GPU-equivalent) | levers | images/s | round ms | efficiency vs N x 1 node | "
          "model (no overlap / overlap) | vs uncapped links | model (no overlap / overlap) |")
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in runs:
        g = r["link_gbit"]
        r["efficiency"] = r["images_per_s"] / (r["nodes"] * one["images_per_s"])
        link = "uncapped" if g is None else f"{g:g} ({g * scale:,.0f})"
        cells = [f"{r['efficiency']:.1%}", "", "", ""]
        if r is not one:
            r["vs_uncapped"] = r["images_per_s"] / free["images_per_s"]
            cells[2] = f"{r['vs_uncapped']:.1%}"
            if colls:
                # against N x 1 node: the one-node round, the link and the model's latency a collective;
                # against the uncapped links: their round (latency and core sharing in it), the wire alone
                c = colls[r["levers"]]
                grows = r["batch_per_process"] / per  # a larger per-process batch: compute taken as proportional
                r["model"] = predict(c, n, procs, g, grows * one["round_ms"] / 1000, latency)
                cells[1] = f"{r['model'][0]:.1%} / {r['model'][1]:.1%}"
                if g is not None:
                    r["model_vs_uncapped"] = predict(c, n, procs, g, grows * free["round_ms"] / 1000, 0.0)
                    cells[3] = f"{r['model_vs_uncapped'][0]:.1%} / {r['model_vs_uncapped'][1]:.1%}"
        print(f"| {r['nodes']} | {link} | {r['levers'] or 'exact'} | {r['images_per_s']:.1f} | {r['round_ms']:.1f} | " + " | ".join(cells) + " |")
    print(json.dumps({"nodes": n, "procs_per_node": procs, "batch_per_process": per, "config": args.config,
                      "latency_us": latency,
                      "overrides": args.overrides, "tag": tag, "gpu_scale": scale, "runs": runs}))


def run(args) -> int:
    def stop(signum, frame):  # as Ctrl-C: the with-block tears the cluster down
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT):  # SIGINT too: a shell's background job starts with it ignored
        signal.signal(sig, stop)
    try:
        return run_command("gandist.bench", lambda: bench(args), (ConfigError, FabricError))
    except KeyboardInterrupt as e:
        print(f"gandist.bench cluster: interrupted ({e}); everything it made is deleted",
              file=sys.stderr)
        return 130
