"""A few real training rounds of this config, built as gandist.train builds them and fed batches made on the
device beforehand (the reader has its own row), timed as `python -m gandist.bench train` times them: images/s,
peak memory, whether the precision stays finite, and the time train.steps would take."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch

from gandist.bench.comm import Round, count_round, premade
from gandist.bench.timing import DeviceFeed, measure
from gandist.check.report import FAIL, INFO, PASS, WARN, Row, errors, listed
from gandist.distributed import on_gpu, share
from gandist.draws import Draws
from gandist.training.step import Models, Stepper, build_models
from gandist.training.tally import NonFiniteLoss

MEMORY_SHARE = 0.9  # a peak above this share of the device's memory warns: evaluation and fragmentation need room


@dataclass
class Ran:
    models: Models
    counted: Round  # what the first round communicates
    mine: dict  # this rank's figures: round_s, peak_mb, images, first_s
    health: dict  # the same on every rank: bad and skipped steps, the logged means, a divergence


def run(cfg, acc, warmup: int, timed: int) -> Ran:
    """Collective: build the models and run 1 + warmup + timed rounds."""
    world, rank, device = acc.num_processes, acc.process_index, acc.device
    previous = torch.get_default_dtype()
    if cfg.train.fp64:
        torch.set_default_dtype(torch.float64)  # as gandist.train does for the whole run
    try:
        t0 = time.perf_counter()
        models = build_models(cfg, acc)
        local = copy.deepcopy(cfg)
        local.train.batch_size = len(share(cfg.train.batch_size, rank, world))
        draws = Draws(cfg.train.seed, cfg.train.batch_size, rank, world, device,
                      on_gpu(cfg.perf.noise_on_device, device))
        stepper = Stepper(cfg, acc, models, DeviceFeed(premade(local, device)), draws)
        counted = count_round(stepper)  # also the first round: with perf.compile, the one that compiles
        first = time.perf_counter() - t0
        seconds, peaks = measure({"round": stepper.round}, warmup, timed, device)
    finally:
        torch.set_default_dtype(previous)
    problem = None
    try:
        stepper.tally.sync()
    except NonFiniteLoss as e:  # every rank alike: the counters are max-reduced
        problem = str(e)
    means = stepper.tally.means({})
    c = stepper.counters
    mine = {"round_s": seconds["round"] / timed, "peak_mb": peaks["round"], "first_s": first,
            "images": cfg.optim.n_critic * local.train.batch_size}
    return Ran(models, counted, mine, {"bad": c.bad_total, "skipped": c.skipped_by_scaler, "means": means,
                                       "problem": problem, "rounds": 1 + warmup + timed})


def duration(seconds: float) -> str:
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{seconds:.1f} s"


def slowest(found: list[dict]) -> dict:
    return max(found, key=lambda f: f["value"]["round_s"])


def rounds_rows(found: list[dict], facts: list[dict], cfg, device_type: str, timed: int) -> list[Row]:
    """images/s, peak memory and the time of train.steps from every rank's figures, or where they failed."""
    if errors(found):
        return [Row("training", "rounds", FAIL, listed(errors(found)))]
    slow = slowest(found)
    round_s, B, n = slow["value"]["round_s"], cfg.train.batch_size, cfg.optim.n_critic
    world = len(found)
    compiled = f"; the first round (with compilation) took {slow['value']['first_s']:.1f} s" if cfg.perf.compile else ""
    rows = [Row("training", "rounds", PASS,
                f"{timed} timed rounds of {cfg.variant} ({n} D + {cfg.optim.g_steps} G steps) at global batch {B} "
                f"({B // world} a rank), {precision(cfg)} on {device_type}, {cfg.train.backend}: "
                f"{B * n / round_s:,.0f} images/s, {round_s * 1e3:,.0f} ms a round (slowest: {slow['where']}){compiled}")]
    kind = "torch.cuda.max_memory_allocated" if device_type == "cuda" else "the process's peak RSS"
    top = max(found, key=lambda f: f["value"]["peak_mb"])
    low = min(found, key=lambda f: f["value"]["peak_mb"])
    full = [f"{f['where']}: {f['value']['peak_mb']:,.0f} MB of its device's {fact['memory'] / 2 ** 20:,.0f} MB"
            for f, fact in zip(found, facts)
            if device_type == "cuda" and f["value"]["peak_mb"] * 2 ** 20 > MEMORY_SHARE * fact["memory"]]
    text = f"{top['value']['peak_mb']:,.0f} MB at most ({top['where']})" + \
        (f", {low['value']['peak_mb']:,.0f} MB at least ({low['where']})" if world > 1 else "") + f"; {kind}"
    rows.append(Row("training", "peak memory per rank", WARN if full else INFO,
                    text + ("\nabove 90% of the device's memory, with no room for evaluation: " + listed(full)
                            if full else "")))
    total = cfg.train.steps * round_s
    rows.append(Row("training", "train.steps", INFO, f"{cfg.train.steps} steps x {round_s * 1e3:,.0f} ms = about "
                    f"{duration(total)} of rounds (evaluation, sample grids and checkpoints come on top)"))
    return rows


def precision(cfg) -> str:
    """The arithmetic a run of cfg trains in."""
    return "fp64" if cfg.train.fp64 else {"no": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}[
        cfg.train.mixed_precision]


def precision_row(health: dict, cfg, device_type: str) -> Row:
    mp = precision(cfg)
    means = health["means"]
    losses = {k: v for k, v in means.items() if k.startswith("loss_") or k in ("gp", "r1")}
    shown = ", ".join(f"{k} {v:.3g}" for k, v in losses.items())
    bad = [k for k, v in losses.items() if not math.isfinite(v)]
    penalty = cfg.loss.regularizer in ("gp", "r1")
    if health["problem"] or health["bad"] or bad:
        why = health["problem"] or (f"{health['bad']} non-finite step(s)" if health["bad"] else
                                    f"non-finite {', '.join(bad)}")
        return Row("precision", "finite on this device", FAIL,
                   f"{mp} on {device_type}: {why} in {health['rounds']} rounds ({shown})"
                   + ("; the gradient penalty overflows fp16: train in bf16 (no loss scaler needed) or fp32"
                      if penalty and cfg.train.mixed_precision == "fp16" else ""))
    text = f"{mp} on {device_type}: {health['rounds']} rounds, every loss finite ({shown}), no non-finite step"
    if cfg.train.mixed_precision == "fp16":
        text += f"; the loss scaler skipped {health['skipped']} step(s) while finding its scale"
        text += f"; the {cfg.loss.regularizer} penalty stays finite under fp16" if penalty else "; no penalty here"
    return Row("precision", "finite on this device", PASS, text)


def consumed(found: list[dict]) -> float:
    """Images a rank's step takes a second (the slowest rank's rounds set the pace of all)."""
    slow = slowest(found)["value"]
    return slow["images"] / slow["round_s"]
