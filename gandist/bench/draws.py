"""python -m gandist.bench draws: what one rank pays per step for its random numbers.

Every draw is a pure function of (seed, step, purpose) and the global row index (draws.Draws), and
a rank draws only its own rows, so its cost follows its own batch, not the world's.  This times one
rank's draws of G's noise z and of instance-noise images at a global batch, for world 1 and world N,
and counts the raw numbers each generated.
"""
from __future__ import annotations

import json
import time

import torch

from gandist.bench import machine
from gandist.draws import Draws


def add_parser(sub):
    p = sub.add_parser("draws", help="one rank's draw time per step at world 1 and world N")
    p.add_argument("--batch-size", type=int, default=4096, help="global batch")
    p.add_argument("--worlds", default="1,64", help="comma list of world sizes")
    p.add_argument("--z-dim", type=int, default=128)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5, help="timed draws per row (the median is shown)")


def _time(draws: Draws, shape: tuple, repeats: int) -> tuple[float, int]:
    """(median seconds of one draw, raw numbers it generated)."""
    times = []
    for step in range(repeats):
        before = draws.raw_drawn
        t0 = time.perf_counter()
        draws.randn(step, "bench", *shape)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2], draws.raw_drawn - before


def run(args) -> int:
    worlds = [int(w) for w in args.worlds.split(",")]
    bad = [w for w in worlds if w < 1 or args.batch_size % w]
    if bad:
        raise SystemExit(f"--worlds: {bad} do not divide --batch-size {args.batch_size}")
    shapes = {f"z ({args.z_dim})": (args.z_dim,), f"image noise (3x{args.resolution}x{args.resolution})":
              (3, args.resolution, args.resolution)}
    print(f"{machine()}; global batch {args.batch_size}, rank 0's draws, median of {args.repeats}")
    print("| draw | world | rows drawn | raw numbers | ms per draw |\n| --- | ---: | ---: | ---: | ---: |")
    out = []
    for name, shape in shapes.items():
        for world in worlds:
            d = Draws(0, args.batch_size, 0, world, torch.device("cpu"))
            seconds, raw = _time(d, shape, args.repeats)
            rows = args.batch_size // world
            print(f"| {name} | {world} | {rows} | {raw:,} | {seconds * 1e3:.2f} |")
            out.append({"draw": name, "world": world, "rows": rows, "raw_numbers": raw, "ms": round(seconds * 1e3, 3)})
    print(json.dumps({"batch_size": args.batch_size, "draws": out}))
    return 0
