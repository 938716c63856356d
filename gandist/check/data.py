"""The data on every rank, opened as training opens it, read at some rate against what a step consumes."""
from __future__ import annotations

import time

from gandist.check.report import FAIL, PASS, WARN, Row, errors, listed
from gandist.data.feed import make_feed

BATCHES = 16  # read after the first (which waits for the reader's workers to start)
READ_FOR_S = 5.0  # or for this long, whichever comes first


def read(cfg, rank: int, world: int, device) -> dict:
    """Open this rank's feed and time its batches; what it says about the data, and its images/s."""
    t0 = time.perf_counter()
    feed = make_feed(cfg, rank, world, device)
    try:
        images, _ = feed.batch(0)
        first = time.perf_counter() - t0
        n, t1 = 0, time.perf_counter()
        while n < BATCHES and time.perf_counter() - t1 < READ_FOR_S:
            images, _ = feed.batch(1 + n)
            n += 1
        seconds = time.perf_counter() - t1
        return {"description": feed.description, "first_s": first, "rate": n * len(images) / seconds,
                "skipped": feed.skipped, "batch": len(images)}
    finally:
        feed.load_state_dict(feed.state_dict())  # a shard feed's workers stop: none read on while rounds are timed


def open_row(found: list[dict], cfg) -> Row:
    bad = errors(found)
    if bad:
        return Row("data", "opens and decodes", FAIL, listed(bad))
    v = found[0]["value"]
    index = ("; their index.json, where there is one, agrees with data.* (resolution, channels, labels)"
             if cfg.data.source == "shards" else "")
    skipped = sum(f["value"]["skipped"] for f in found)
    note = f"; {skipped} corrupt sample(s) skipped" if skipped else ""
    return Row("data", "opens and decodes", WARN if skipped else PASS,
               f"{v['description']}{index}; every rank read its first batch (slowest in "
               f"{max(f['value']['first_s'] for f in found):.1f} s){note}")


def rate_row(found: list[dict], consumed: float | None, n_critic: int) -> Row | None:
    """Each rank's read rate against what its step consumes (n_critic batches a round, at the round's time)."""
    read = [f for f in found if "value" in f]
    if not read:
        return None
    slow = min(read, key=lambda f: f["value"]["rate"])
    r = slow["value"]["rate"]
    if consumed is None:
        return Row("data", "read rate", PASS, f"{r:,.0f} images/s a rank at the slowest ({slow['where']})")
    text = (f"{r:,.0f} images/s a rank at the slowest ({slow['where']}); a round takes {n_critic} batch(es): "
            f"{consumed:,.0f} images/s a rank")
    if r < consumed:
        return Row("data", "read rate", WARN, text + ": reading would hold training back (raise data.workers, "
                   "shards on a faster filesystem, or --encoding raw shards)")
    return Row("data", "read rate", PASS, text + f": {r / consumed:,.1f}x headroom")
