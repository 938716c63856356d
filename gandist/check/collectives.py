"""Collectives: an all-reduce is exact; bandwidth and latency over every rank, within and between nodes; and
what a round of this config costs at them.  Bandwidth is nccl-tests' busbw, comparable with a link's speed at
any rank count; the round is counted and timed as `python -m gandist.bench comm` does, with measured figures."""
from __future__ import annotations

import time

import torch
import torch.distributed as dist

from gandist.bench.cluster import Cluster, round_seconds
from gandist.bench.comm import mb, traffic
from gandist.bench.timing import sync
from gandist.check.report import FAIL, INFO, PASS, WARN, Row, errors, listed
from gandist.check.ranks import by_node
from gandist.distributed import is_distributed, reduce_max

KIB, MIB = 2 ** 10, 2 ** 20
SIZES = {"cpu": (8, 64 * KIB, MIB, 16 * MIB), "cuda": (8, MIB, 16 * MIB, 256 * MIB)}
SLOW_LINK = 2e9  # bytes/s of busbw between GPU nodes below which a row warns: TCP sockets, not InfiniBand/RoCE
COMM_SHARE = 0.25  # a round whose estimated communication exceeds this share of its time warns
WORLD, WITHIN, BETWEEN = "all ranks", "within a node", "between nodes"  # the rank sets measured


def exact(device) -> str:
    """Collective: a sum and a max of known integers (exact in fp32), compared here with their true values."""
    world, rank = dist.get_world_size(), dist.get_rank()
    values = torch.arange(1, 65, dtype=torch.float32)
    t = (values * (rank % 251 + 1)).to(device)
    dist.all_reduce(t)
    top = torch.tensor([float(rank)], device=device)
    dist.all_reduce(top, op=dist.ReduceOp.MAX)
    want = values * sum(r % 251 + 1 for r in range(world))
    got = t.cpu()
    if not torch.equal(got, want):
        raise ValueError(f"a sum all-reduce of known integers came out wrong here (max |error| "
                         f"{(got - want).abs().max().item():g})")
    if top.item() != world - 1:
        raise ValueError(f"a max all-reduce of the ranks gave {top.item():g}, not {world - 1}")
    return f"sum and max of known values exact on every rank ({dist.get_backend()})"


def exact_row(found: list[dict]) -> Row:
    """found: every rank's finding of exact(), none in one process."""
    if not found:
        return Row("collectives", "all-reduce exact", INFO, "1 process: no collective to check")
    bad = errors(found)
    return Row("collectives", "all-reduce exact", FAIL if bad else PASS,
               listed(bad) if bad else found[0]["value"])


def seconds_per_call(nbytes: int, group, device, iters: int) -> float:
    x = torch.ones(max(1, nbytes // 4), dtype=torch.float32, device=device)
    for _ in range(2):  # warm-up; NCCL makes its communicator at the first call
        dist.all_reduce(x, group=group)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        dist.all_reduce(x, group=group)
    sync(device)
    return (time.perf_counter() - t0) / iters


def groups(facts: list[dict]) -> list[tuple[str, list[int]]]:
    """The rank sets measured: every rank; with several nodes each node's ranks, and one rank a node."""
    nodes = list(by_node(facts).values())
    out = [(WORLD, [f["rank"] for f in facts])]
    if len(nodes) > 1:
        if max(len(n) for n in nodes) > 1:
            out += [(WITHIN, [f["rank"] for f in n]) for n in nodes]
        out.append((BETWEEN, [n[0]["rank"] for n in nodes]))
    return out


def bandwidth(facts: list[dict], device) -> dict:
    """Collective (every rank makes every group): {label: {"n": ranks, "sizes": [[bytes, seconds, busbw]]}},
    the slowest group and rank of each."""
    if not is_distributed():
        return {}
    rank, out = dist.get_rank(), {}
    made = [(label, members, dist.new_group(members)) for label, members in groups(facts)]
    for label in dict.fromkeys(label for label, _, _ in made):
        mine = [(members, g) for lab, members, g in made if lab == label and rank in members]
        rows = []
        for nbytes in SIZES[device.type]:
            iters = max(5, min(50, (32 * MIB) // nbytes))
            t, n = 0.0, 0
            if mine:
                members, g = mine[0]
                n = len(members)
                t = seconds_per_call(nbytes, g, device, iters)
            slowest, n = reduce_max(torch.tensor([t, float(n)], dtype=torch.float64, device=device))
            n = int(n)
            rows.append([nbytes, slowest, nbytes / slowest * 2 * (n - 1) / n])
        out[label] = {"n": n, "sizes": rows}
    return out


def size_text(n: int) -> str:
    return f"{n // MIB} MB" if n >= MIB else f"{n // KIB} KB" if n >= KIB else f"{n} B"


def bandwidth_rows(measured: dict, device_type: str) -> list[Row]:
    if not measured:
        return [Row("collectives", "bandwidth", INFO, "1 process: no link to measure")]
    rows = []
    for label, m in measured.items():
        (small, t0, _), *rest = m["sizes"]
        parts = [f"{size_text(small)}: {t0 * 1e6:,.0f} us"] + \
            [f"{size_text(s)}: {bw / 1e9:,.2f} GB/s ({t * 1e3:,.2f} ms)" for s, t, bw in rest]
        slow = device_type == "cuda" and label == BETWEEN and rest and rest[-1][2] < SLOW_LINK
        note = (f"\nslow for GPU nodes (< {SLOW_LINK / 1e9:g} GB/s): TCP sockets instead of InfiniBand/RoCE? "
                f"NCCL_DEBUG=INFO names the transport NCCL took") if slow else ""
        who = {WORLD: f"{m['n']} ranks", WITHIN: f"{m['n']} ranks of each node at once (the slowest node)",
               BETWEEN: f"one rank of each of {m['n']} nodes"}[label]
        rows.append(Row("collectives", f"all-reduce, {label}", WARN if slow else INFO,
                        f"{who}: latency " + "; busbw ".join(parts) + note))
    return rows


def latency_and_links(measured: dict) -> tuple[float, float, float | None]:
    """(smallest all-reduce's seconds, busbw within a node, between nodes or None) at the largest size."""
    world, within, between = (measured.get(label) for label in (WORLD, WITHIN, BETWEEN))
    intra = (within or world)["sizes"][-1][2]
    return world["sizes"][0][1], intra, between["sizes"][-1][2] if between else None


def round_row(counted, cfg, facts: list[dict], measured: dict, round_s: float, device_type: str) -> Row:
    """What a round of this config sends (bench comm's count) and how long that takes at the measured figures."""
    world, nodes = len(facts), by_node(facts)
    if world == 1:
        return Row("collectives", "one round of this config", INFO, "1 process: a round communicates nothing")
    if cfg.train.backend == "deepspeed":
        return Row("collectives", "one round of this config", INFO, "counted for DDP only: ZeRO "
                   "(train.backend=deepspeed) reduce-scatters gradients and all-gathers weights instead")
    sync_bn = cfg.model.sync_bn if cfg.model.sync_bn is not None else world > 1
    colls = traffic(counted, cfg.train.log_every, sync_bn)
    latency, intra, inter = latency_and_links(measured)
    per_node = max(len(n) for n in nodes.values())
    cl = Cluster(len(nodes), per_node, link_gbps=(inter or 1e9) * 8 / 1e9, links_per_node=1,
                 nvlink_gbs=intra / 1e9 if per_node > 1 else 0.0, latency_us=latency * 1e6)
    grad, blocking = round_seconds(colls, cl)
    comm = grad + blocking
    reduced = sum(c.nbytes * c.per_round for c in colls if c.kind == "all_reduce")
    gathered = sum(c.nbytes * c.per_round * world for c in colls if c.kind == "all_gather")
    share = comm / round_s if round_s else 0.0
    bn = " (BatchNorm counted as torch's SyncBatchNorm)" if sync_bn and counted.bn and device_type != "cuda" else ""
    detail = (f"all-reduces {mb(reduced)}" + (f", all-gathers {mb(gathered)}" if gathered else "") +
              f" in {sum(c.per_round for c in colls):.1f} collectives a round, as python -m gandist.bench comm "
              f"counts{bn}; at the latency and busbw above about {comm * 1e3:,.1f} ms without overlap, "
              f"{share:.0%} of the {round_s * 1e3:,.0f} ms a round took here")
    if share > COMM_SHARE:
        return Row("collectives", "one round of this config", WARN, detail + ": communication bounds this run "
                   "(more per-GPU work, a faster link or fewer nodes)")
    return Row("collectives", "one round of this config", INFO, detail)
