"""gandist-eval: FID / IS / KID, and the judge's metrics, of a trained run's generator, written to RUN_DIR/eval.json.

    gandist-eval runs/quickstart                                  # eval.metrics of the run, or all three
    gandist-eval runs/quickstart --metrics fid,kid --num-samples 10000
    gandist-eval runs/quickstart --feature-weights weights-inception-2015-12-05-6726825d.pth
    gandist-eval runs/cifar --metrics fid data.urls='data/shards/cifar10/test-{000000..000004}.tar'
    gandist-eval runs/cgan_mnist --metrics judge_fd,judge_acc,prdc --judge judges/mnist.safetensors \
        --num-samples 2000 eval.real_urls='data/shards/mnist-sample/test-{000000..000000}.tar'

The generator is RUN_DIR/final/generator_ema.safetensors when the run kept an EMA, else
final/generator.safetensors (--checkpoint picks one).  key=value overrides apply on top of the run's
config.yaml (e.g. eval.real_urls to compare with a held-out split).  The judge's metrics are also given
as the judge's own figures on real images: judge_fd_ratio = judge_fd / the real-vs-real floor that
gandist-judge measured (about 1 = as close as real images are; compare at the floor's image count), and
the judge's accuracy on held-out real images beside judge_acc.  Real images and metric details: see
gandist/metrics/.  Runs in one process (the GPU if there is one).
"""
from __future__ import annotations

import argparse
import sys
import time
from importlib.metadata import version
from pathlib import Path

import torch
from rich import get_console
from rich.table import Table

from gandist import __version__
from gandist.cli import ConfigError, UsageError, run_command
from gandist.metrics.evaluator import Evaluator
from gandist.metrics.inception import check_weights
from gandist.metrics.registry import FEATURE_LAYERS, MetricError, check_metrics, list_metrics, uses_judge
from gandist.trained import add_run_arguments, config_generator, generator_path, load_config, pick_device
from gandist.training import run_dir as layout


def parse_args(argv):
    p = argparse.ArgumentParser(prog="gandist-eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.add_argument("--metrics", help=f"comma list of {', '.join(list_metrics())} (default: eval.metrics of the "
                                     f"run, or all: the judge's where there is a judge, judge_acc if conditional)")
    p.add_argument("--num-samples", type=int, help="generated images, and at most this many real ones "
                                                   "(default: eval.num_samples)")
    p.add_argument("--feature-weights", help="torch-fidelity InceptionV3 weights file (default: eval.feature_weights; "
                                             "empty = torch-fidelity's download)")
    p.add_argument("--feature-layer", default=None, choices=FEATURE_LAYERS,
                   help="Inception features for FID/KID; 2048 gives published numbers, fewer dims suit few samples")
    p.add_argument("--judge", help="the judge file of judge_fd, judge_acc, judge_mix, prdc (default: eval.judge)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, help="noise of the generated set (default: train.seed)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_intermixed_args(argv)  # RUN_DIR key=value --opt x key=value ...


def print_table(scores: dict, caption: str):
    t = Table(caption=caption)
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_column("std", justify="right")
    for k, v in scores.items():
        if k.endswith("_std"):
            continue
        std = scores.get(f"{k}_std")
        t.add_row(k, f"{v:.6g}", "" if std is None else f"{std:.3g}")
    get_console().print(t)


def default_metrics(cfg, args) -> list[str]:
    """Without --metrics or eval.metrics: the judge's where there is a judge (judge_acc if conditional), and
    Inception's three unless there is a judge but no Inception weights file (offline: nothing to download)."""
    with_judge = bool(cfg.eval.judge if args.judge is None else args.judge)
    weights = bool(cfg.eval.feature_weights if args.feature_weights is None else args.feature_weights)
    judged = [m for m in list_metrics() if uses_judge([m]) and (m != "judge_acc" or cfg.label_dim)]
    inception = [m for m in list_metrics() if not uses_judge([m])]
    return (inception if weights or not with_judge else []) + (judged if with_judge else [])


def run(args) -> int:
    run_dir = Path(args.run_dir)
    cfg = load_config(run_dir, args.overrides)
    names = check_metrics(args.metrics if args.metrics is not None else
                          (cfg.eval.metrics or default_metrics(cfg, args)))
    if args.num_samples is not None and args.num_samples < 1:
        raise UsageError(f"--num-samples: must be at least 1, got {args.num_samples}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size: must be at least 1, got {args.batch_size}")
    gpath = generator_path(run_dir, args.checkpoint)
    weights = cfg.eval.feature_weights if args.feature_weights is None else args.feature_weights
    check_weights(weights, "eval.feature_weights" if args.feature_weights is None else "--feature-weights")
    device = pick_device(args.device)
    G = config_generator(cfg, gpath, device)

    ev = Evaluator(cfg, device, 0, 1, metrics=names, num_samples=args.num_samples, feature_weights=weights,
                   feature_layer=args.feature_layer, judge_file=args.judge,
                   judge_setting="eval.judge" if args.judge is None else "--judge", batch_size=args.batch_size,
                   seed=args.seed, progress=not args.no_progress)
    floor_n = ev.judge_meta.get("floor_n")
    if floor_n and ev.num_samples != floor_n:
        print(f"gandist-eval: note: the judge's floor was measured on {floor_n} images and this evaluation uses "
              f"{ev.num_samples}; a Frechet distance depends on the count (use --num-samples {floor_n})",
              file=sys.stderr)
    inception = [m for m in names if not uses_judge([m])]
    if {"fid", "kid"} & set(names) and ev.opts.feature_layer == "2048" and ev.num_samples < 2048:
        print(f"gandist-eval: note: FID/KID on 2048 Inception features from {ev.num_samples} < 2048 images are "
              f"strongly biased; compare only numbers computed with the same number of images", file=sys.stderr)
    t0 = time.perf_counter()
    scores = ev(G)
    elapsed = time.perf_counter() - t0

    record = {
        "metrics": scores,
        "generator": str(gpath.relative_to(run_dir)),
        "num_samples": ev.num_samples,
        "real_samples": ev.real_count,
        "real_data": cfg.eval.real_urls or (cfg.data.source if cfg.data.source == "synthetic" else cfg.data.urls),
        "feature_layer": ev.opts.feature_layer,
        **({"judge": {"file": str(Path(ev.judge).resolve()), "floor_fd": ev.judge_meta["floor_fd"],
                      "floor_n": floor_n, "real_accuracy": ev.judge_meta["test_accuracy"],
                      "real_prdc": ev.judge_meta.get("floor_prdc", {})}} if ev.judge else {}),
        "feature_weights": (str(Path(weights).resolve()) if weights else "torch-fidelity default download")
        if inception else None,
        "seed": ev.seed,
        "device": str(device),
        "seconds": round(elapsed, 3),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {"gandist": __version__, "torch_fidelity": version("torch-fidelity"), "torch": torch.__version__},
    }
    out = layout.write_eval(run_dir, record)
    shown = dict(scores)
    if ev.judge:  # the judge's own figures on real images, to read the run's against
        shown["judge floor (real vs real FD)"] = ev.judge_meta["floor_fd"]
        shown["judge accuracy on real images"] = ev.judge_meta["test_accuracy"]
        shown.update({f"real vs real {k}": v for k, v in ev.judge_meta.get("floor_prdc", {}).items()
                      if k in scores})
    print_table(shown, f"{record['generator']}, {ev.num_samples} generated / {ev.real_count} real images"
                       + (f", Inception {ev.opts.feature_layer}" if inception else ""))
    print(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run_command("gandist-eval", lambda: run(args), (UsageError, ConfigError, MetricError))


if __name__ == "__main__":
    sys.exit(main())
