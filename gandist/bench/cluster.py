"""The cluster model of `python -m gandist.bench comm`: a round's collectives timed on N nodes x G GPUs.

Hierarchical ring collectives: a node's GPUs share its inter-node links (NVLink inside a node ignored unless
given), a ring all-reduce of S bytes sends 2(N-1)/N x S through a node's links, an all-gather of m bytes a rank
brings (N-1) x G x m into each node, and every collective costs a fixed latency more.  From those: a round's
communication seconds, its efficiency with and without DDP's overlap, the node count and link speed at which it
crosses a target, and their table (gandist.bench.comm counts the collectives and runs the command).
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass
class Collective:
    what: str
    kind: str  # "all_reduce", "all_gather", or "node_local" (inside a node only: latency, no bytes over a link)
    nbytes: int  # the tensor a rank brings
    per_round: float  # how many a round (1/log_every for the logged scalars)
    overlaps: bool = False  # DDP's gradient buckets may run during the backward


def ring_allreduce(nbytes: float, n: int) -> float:
    """Bytes each of n ring members sends (and receives) to all-reduce nbytes: reduce-scatter + all-gather."""
    return 2 * (n - 1) / n * nbytes


def ring_allgather(nbytes_each: float, n: int) -> float:
    """Bytes each of n ring members receives when each brings nbytes_each."""
    return (n - 1) * nbytes_each


@dataclass(frozen=True)
class Cluster:
    nodes: int
    gpus: int
    link_gbps: float  # one inter-node link
    links_per_node: int = 1
    nvlink_gbs: float = 0.0  # GB/s a GPU inside a node; 0: ignored
    latency_us: float = 30.0

    @property
    def world(self) -> int:
        return self.nodes * self.gpus

    def node_bytes_per_s(self) -> float:
        return self.link_gbps * 1e9 / 8 * self.links_per_node

    def wire(self, c: Collective) -> float:
        """Bytes through one node's links for one collective (hierarchical: a node's GPUs share them)."""
        if c.kind == "node_local":
            return 0.0
        if c.kind == "all_reduce":
            return ring_allreduce(c.nbytes, self.nodes)
        return ring_allgather(self.gpus * c.nbytes, self.nodes)

    def fixed(self, c: Collective) -> float:
        """Seconds of one collective that do not depend on the link: latency and NVLink (0 for one GPU)."""
        inside = ring_allreduce(c.nbytes, self.gpus) if c.kind == "all_reduce" else \
            ring_allgather(self.nodes * c.nbytes, self.gpus)
        nvlink = inside / (self.nvlink_gbs * 1e9) if self.nvlink_gbs > 0 else 0.0
        return 0.0 if self.world == 1 else self.latency_us * 1e-6 + nvlink

    def seconds(self, c: Collective) -> float:
        return self.fixed(c) + self.wire(c) / self.node_bytes_per_s()


def round_seconds(colls: list, cl: Cluster) -> tuple[float, float]:
    """(gradient seconds, which may overlap the backward; blocking seconds) of one round."""
    grad = sum(c.per_round * cl.seconds(c) for c in colls if c.overlaps)
    return grad, sum(c.per_round * cl.seconds(c) for c in colls if not c.overlaps)


def efficiency(compute: float, grad: float, blocking: float, overlap: bool) -> float:
    exposed = blocking + (max(0.0, grad - compute) if overlap else grad)
    return compute / (compute + exposed)


def nodes_below(colls: list, compute: float, cl: Cluster, target: float, overlap: bool, max_nodes: int):
    """The fewest nodes (the per-GPU batch kept) at which efficiency falls below target; None if never up to
    max_nodes.  Efficiency only falls with nodes: every term grows with them."""
    for n in range(1, max_nodes + 1):
        if efficiency(compute, *round_seconds(colls, replace(cl, nodes=n)), overlap) < target:
            return n
    return None


def link_for(colls: list, compute: float, cl: Cluster, target: float) -> float | None:
    """Gb/s one link needs for efficiency >= target with no overlap; None when latency alone is too much."""
    room = compute * (1 / target - 1) - sum(c.per_round * cl.fixed(c) for c in colls)  # seconds left for the wire
    wire = sum(c.per_round * cl.wire(c) for c in colls)
    if wire == 0 or room <= 0:
        return 0.0 if room >= 0 else None
    return wire / room * 8 / 1e9 / cl.links_per_node


def link_figures(colls: list, clusters: list, compute: float, target: float, max_nodes: int) -> list:
    """Each cluster's (link speed's) figures for a round of colls taking compute seconds."""
    out = []
    for cl in clusters:
        grad, blocking = round_seconds(colls, cl)
        out.append({
            "gbps": cl.link_gbps, "comm_ms": 1000 * (grad + blocking), "grad_ms": 1000 * grad,
            "blocking_ms": 1000 * blocking, "latency_ms": 1000 * sum(c.per_round for c in colls) * cl.latency_us * 1e-6,
            # the round's compute at which the no-overlap efficiency is exactly the target
            "compute_ms_for_target": 1000 * (grad + blocking) * target / (1 - target),
            "efficiency": efficiency(compute, grad, blocking, False),
            "efficiency_overlap": efficiency(compute, grad, blocking, True),
            "nodes_below_target": nodes_below(colls, compute, cl, target, False, max_nodes),
            "nodes_below_target_overlap": nodes_below(colls, compute, cl, target, True, max_nodes)})
    return out


def efficiency_table(rows: list, clusters: list, target: float, max_nodes: int) -> None:
    """The table of comm ms, efficiencies and the target's thresholds, a column a link speed (comm.figures's rows)."""
    cl, pct = clusters[0], f"{target:.0%}"

    def at(what: str) -> str:  # one column a link speed
        return " | ".join(f"{what} @{c.link_gbps:g}" for c in clusters)

    print(f"One round at {cl.nodes} x {cl.gpus} (comm ms includes the latency); efficiency no overlap / overlap (upper "
          f"bound); the compute a round needs for {pct} with no overlap; the nodes at which the no-overlap efficiency "
          f"falls below {pct} (per-GPU batch kept; '-': not up to {max_nodes}):")
    print(f"| config | compute ms (source) | latency ms | {at('comm ms')} | {at('eff.')} | {at(f'compute ms for {pct}')} "
          f"| link Gb/s for {pct} | {at(f'nodes <{pct}')} |")
    print("| --- | ---: | ---: |" + " ---: |" * (4 * len(clusters) + 1))
    for f in rows:
        links, need = f["links"], f["link_gbps_for_target"]
        cells = [f"{x['comm_ms']:.2f}" for x in links] + \
            [f"{x['efficiency']:.1%} / {x['efficiency_overlap']:.1%}" for x in links] + \
            [f"{x['compute_ms_for_target']:.1f}" for x in links] + ["never" if need is None else f"{need:,.1f}"] + \
            [str(x["nodes_below_target"] or "-") for x in links]
        print(f"| {f['config']} | {f['compute_ms']:.1f} ({f['compute_source']}) | {links[0]['latency_ms']:.2f} | "
              + " | ".join(cells) + " |")
