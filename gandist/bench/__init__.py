"""Benchmarks: commands that print figures to read (speed is never asserted by tests).

    python -m gandist.bench data    # the shard reader vs torchvision's datasets, images/s per worker
    python -m gandist.bench train   # gandist's training round vs a plain PyTorch loop, images/s
    python -m gandist.bench draws   # one rank's random draws per step at world 1 and world N
    python -m gandist.bench comm    # bytes a round communicates per config; its time and efficiency on N x G GPUs
    python -m gandist.bench memory  # per-rank bytes of weights, gradients, optimizer state: DDP vs ZeRO-1/2
    python -m gandist.bench elastic # seconds and steps a lost node and a rejoin cost (two local "nodes")
    python -m gandist.bench cluster # a config across network-namespace nodes joined by capped links (root)

Each subcommand is a module here (data.py, train.py, draws.py, comm.py, memory.py, elastic.py; cluster: emulated.py) with
add_parser(sub) and run(args).
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def machine() -> str:
    """CPU model, cores this process may use, Python and torch versions: the line every table is read with."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {cores} cores available{gpu}, Python {platform.python_version()}, torch {torch.__version__}"
