"""Who runs where, with what: each rank's host, device and software, the processes per node against the
launch, and the same software and resolved config on every rank."""
from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
from importlib import metadata

import accelerate
import torch

from gandist import __version__
from gandist.bench import machine
from gandist.check.report import FAIL, INFO, PASS, WARN, Row, listed
from gandist.training.disk import human
from gandist.training.opening import git_commit

SOFTWARE = ("torch", "accelerate", "deepspeed", "gandist", "commit", "python")


def installed(package: str) -> str | None:
    """A package's installed version without importing it (DeepSpeed takes seconds to import)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def software() -> dict:
    return {"torch": torch.__version__, "accelerate": accelerate.__version__, "deepspeed": installed("deepspeed"),
            "gandist": __version__, "commit": git_commit(), "python": platform.python_version()}


def driver() -> str | None:
    """The NVIDIA driver's version (torch knows the CUDA it was built with, not the driver)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
        return out.stdout.split("\n")[0].strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def describe(acc) -> dict:
    d = acc.device
    f = {"rank": acc.process_index, "host": socket.gethostname(), "where": f"rank {acc.process_index} on "
         f"{socket.gethostname()}",
         # the launcher's machine rank: two "nodes" may share a host (containers, the test SLURM cluster)
         "node": os.environ.get("GROUP_RANK"), "local_rank": acc.local_process_index,
         "launched_per_node": int(os.environ.get("LOCAL_WORLD_SIZE", 1)), "device": d.type, "software": software()}
    if d.type == "cuda":
        p = torch.cuda.get_device_properties(d)
        free, total = torch.cuda.mem_get_info(d)
        try:
            nccl = ".".join(map(str, torch.cuda.nccl.version()))
        except (AttributeError, RuntimeError):
            nccl = None
        f.update(name=p.name, gpu=str(getattr(p, "uuid", d.index)), memory=total, free=free, cuda=torch.version.cuda,
                 nccl=nccl, driver=driver(), gpus=torch.cuda.device_count())
    else:
        page = os.sysconf("SC_PAGE_SIZE")
        f.update(name=machine(), memory=page * os.sysconf("SC_PHYS_PAGES"),
                 free=page * os.sysconf("SC_AVPHYS_PAGES"), gpus=0)
    return f


def node_label(f: dict) -> str:
    return f"node {f['node']} ({f['host']})" if f["node"] is not None else f["host"]


def by_node(facts: list[dict]) -> dict[str, list[dict]]:
    nodes: dict[str, list[dict]] = {}
    for f in facts:
        nodes.setdefault(node_label(f), []).append(f)
    return nodes


def spans(ranks: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    out, start = [], None
    for i, r in enumerate(ranks):
        if start is None:
            start = r
        if i + 1 == len(ranks) or ranks[i + 1] != r + 1:
            out.append(f"{start}-{r}" if r != start else f"{r}")
            start = None
    return ", ".join(out)


def kind(f: dict) -> tuple:
    """What should be the same on every rank: the device, and for a GPU its memory, driver, CUDA and NCCL."""
    return (f["name"], f["memory"], f["driver"], f["cuda"], f["nccl"]) if f["device"] == "cuda" else (f["device"],)


def devices_row(facts: list[dict]) -> Row:
    lines, kinds = [], {kind(f) for f in facts}
    for label, fs in by_node(facts).items():
        f, free = fs[0], min(x["free"] for x in fs)
        who = f"rank{'s' if len(fs) > 1 else ''} {spans([x['rank'] for x in fs])}"
        if f["device"] == "cuda":
            lines.append(f"{label}: {who} on {len(fs)} x {f['name']} ({human(f['memory'])}, {human(free)} free on "
                         f"the fullest), driver {f['driver'] or '?'}, CUDA {f['cuda']}, NCCL {f['nccl'] or '?'}")
        else:
            lines.append(f"{label}: {who} on cpu ({f['name']}); {human(f['memory'])} memory, {human(free)} free")
    if len(kinds) > 1:
        return Row("ranks", "hosts and devices", WARN, "not every node has the same device, driver, CUDA and NCCL:\n"
                   + listed(lines))
    return Row("ranks", "hosts and devices", INFO, listed(lines))


def layout_row(facts: list[dict], expect_nodes: int | None, expect_per_node: int | None, want_cuda: bool) -> Row:
    """The processes on each node against what the launch or job asked, one GPU each."""
    problems, notes = [], []
    nodes = by_node(facts)
    if expect_nodes and len(nodes) != expect_nodes:
        problems.append(f"the job asked for {expect_nodes} node(s); ranks came from {len(nodes)}: {', '.join(nodes)}")
    for label, fs in nodes.items():
        expected = expect_per_node or fs[0]["launched_per_node"]
        if len(fs) != expected:
            problems.append(f"{label}: {len(fs)} process(es), expected {expected} "
                            f"(ranks {spans([x['rank'] for x in fs])})")
        shared: dict[str, list[int]] = {}
        for f in fs:
            if f["device"] == "cuda":
                shared.setdefault(f["gpu"], []).append(f["rank"])
        for gpu, on_it in shared.items():
            if len(on_it) > 1:
                problems.append(f"{label}: ranks {spans(on_it)} share one GPU ({gpu})")
        if fs[0]["gpus"] > len(fs):
            notes.append(f"{label}: {len(fs)} of its {fs[0]['gpus']} visible GPUs used")
    # a node whose GPU torch cannot see (a driver, a container) would train on its CPU under train.device=auto
    if want_cuda or any(f["device"] == "cuda" for f in facts):
        why = "train.device is cuda" if want_cuda else "the other ranks train on one"
        problems += [f"{f['where']}: no GPU here, and {why}" for f in facts if f["device"] != "cuda"]
    if problems:
        return Row("ranks", "processes per node", FAIL, listed(problems + notes))
    counts = sorted({len(fs) for fs in nodes.values()})
    passed = f"{len(nodes)} node(s) x {'/'.join(map(str, counts))} process(es), {len(facts)} in all, as " + \
        ("the job asked" if expect_per_node or expect_nodes else "launched")
    return Row("ranks", "processes per node", WARN if notes else PASS, "\n".join([passed, *notes]))


def software_row(facts: list[dict]) -> Row:
    first = facts[0]["software"]

    def show(s: dict, key: str) -> str:
        value = s[key] or ("not installed" if key == "deepspeed" else "unknown")
        return f"{key} {value[:12] if key == 'commit' else value}"
    diffs = []
    for f in facts[1:]:
        s = f["software"]
        bad = [f"{show(s, k)} (rank 0: {show(first, k).split(' ', 1)[1]})" for k in SOFTWARE if s[k] != first[k]]
        if bad:
            diffs.append(f"{f['where']}: {', '.join(bad)}")
    if diffs:
        return Row("ranks", "same software", FAIL, listed(diffs))
    return Row("ranks", "same software", PASS, ", ".join(show(first, k) for k in SOFTWARE) +
               (" on every rank" if len(facts) > 1 else ""))


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def config_row(found: list[dict]) -> Row:
    """Each rank's resolved config against rank 0's: a node with another copy of the file trains something else."""
    first = flat(found[0]["value"])
    diffs = []
    for f in found[1:]:
        mine = flat(f["value"])
        bad = [f"{k}={mine.get(k)!r} (rank 0: {first.get(k)!r})" for k in sorted(set(first) | set(mine))
               if mine.get(k) != first.get(k)]
        if bad:
            diffs.append(f"{f['where']}: {', '.join(bad)}")
    if diffs:
        return Row("ranks", "same config", FAIL, listed(diffs))
    return Row("ranks", "same config", PASS, f"{len(first)} keys" + (" equal on every rank" if len(found) > 1 else ""))
