"""gandist-eval: FID / IS / KID of a trained run's generator, written to RUN_DIR/eval.json.

    gandist-eval runs/quickstart                                  # eval.metrics of the run, or all three
    gandist-eval runs/quickstart --metrics fid,kid --num-samples 10000
    gandist-eval runs/quickstart --feature-weights weights-inception-2015-12-05-6726825d.pth
    gandist-eval runs/cifar --metrics fid data.urls='data/shards/cifar10/test-{000000..000004}.tar'

The generator is RUN_DIR/final/generator_ema.safetensors when the run kept an EMA, else
final/generator.safetensors (--checkpoint picks one).  key=value overrides apply on top of the run's
config.yaml (e.g. data.urls to compare with another split).  Real images and metric details: see
gandist/metrics.py.  Runs in one process (the GPU if there is one).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

EXIT_ERROR = 1
EXIT_USAGE = 2  # bad run directory, config, weights file or metric name

CHECKPOINTS = {"final": "generator.safetensors", "ema": "generator_ema.safetensors"}


class RunError(ValueError):
    """A run directory that cannot be used: missing, no config, no final weights..."""


# -- loading a trained run (shared with gandist-sample) ---------------------------------------------

def load_config(run_dir: str | Path, overrides=()):
    from gandist import config

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} does not exist")
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise RunError(f"{path} does not exist: is {run_dir} a run directory written by gandist-train?")
    return config.load(path, list(overrides))


def generator_path(run_dir: str | Path, which: str = "auto") -> Path:
    """final/generator_ema.safetensors if the run has one (which=auto), else final/generator.safetensors."""
    final = Path(run_dir) / "final"
    if which == "auto":
        which = "ema" if (final / CHECKPOINTS["ema"]).is_file() else "final"
    if which not in CHECKPOINTS:
        raise RunError(f"--checkpoint: {which!r} is not one of auto, {', '.join(CHECKPOINTS)}")
    path = final / CHECKPOINTS[which]
    if not path.is_file():
        if which == "ema":
            raise RunError(f"{path} does not exist: the run kept no EMA of G (optim.ema=0); use --checkpoint final")
        raise RunError(f"{path} does not exist: gandist-train writes final/ when a run completes train.steps "
                       f"(a run still going or stopped early has only checkpoints/)")
    return path


def load_generator(cfg, path: str | Path, device="cpu") -> torch.nn.Module:
    """nets.build(cfg)'s G with the weights of `path`, in eval mode on `device`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from gandist import nets

    G, _ = nets.build(cfg)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise RunError(f"{path} is not a readable safetensors file ({e})") from None
    try:
        G.load_state_dict(state)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:400]
        raise RunError(f"{path} does not fit the generator of the run's config (model.* or data.* overridden?): "
                       f"{detail}") from None
    return G.to(device).eval().requires_grad_(False)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda: no CUDA device is available")
    return torch.device(name)


def write_json_atomic(path: Path, obj):
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


# -- the command ------------------------------------------------------------------------------------

def parse_args(argv):
    from gandist.metrics import FEATURE_LAYERS, list_metrics

    p = argparse.ArgumentParser(prog="gandist-eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a run directory written by gandist-train")
    p.add_argument("overrides", nargs="*", help="key=value config overrides on top of RUN_DIR/config.yaml")
    p.add_argument("--metrics", help=f"comma list of {', '.join(list_metrics())} "
                                     f"(default: eval.metrics of the run, or all)")
    p.add_argument("--num-samples", type=int, help="generated images, and at most this many real ones "
                                                   "(default: eval.num_samples)")
    p.add_argument("--feature-weights", help="torch-fidelity InceptionV3 weights file (default: eval.feature_weights; "
                                             "empty = torch-fidelity's download)")
    p.add_argument("--feature-layer", default=None, choices=FEATURE_LAYERS,
                   help="Inception features for FID/KID; 2048 gives published numbers, fewer dims suit few samples")
    p.add_argument("--checkpoint", default="auto", choices=("auto", *CHECKPOINTS),
                   help="auto: the EMA generator when the run has one")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, help="noise of the generated set (default: train.seed)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--no-progress", action="store_true")
    return p.parse_intermixed_args(argv)  # RUN_DIR key=value --opt x key=value ...


def print_table(scores: dict, caption: str):
    from rich import get_console
    from rich.table import Table

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


def run(args) -> int:
    from gandist import __version__, metrics

    run_dir = Path(args.run_dir)
    cfg = load_config(run_dir, args.overrides)
    names = metrics.check_metrics(args.metrics if args.metrics is not None else (cfg.eval.metrics or
                                                                                 metrics.list_metrics()))
    if args.num_samples is not None and args.num_samples < 1:
        raise RunError(f"--num-samples: must be at least 1, got {args.num_samples}")
    if args.batch_size < 1:
        raise RunError(f"--batch-size: must be at least 1, got {args.batch_size}")
    gpath = generator_path(run_dir, args.checkpoint)
    weights = cfg.eval.feature_weights if args.feature_weights is None else args.feature_weights
    if weights and not Path(weights).is_file():
        raise metrics.MetricError(f"feature weights {weights} do not exist (a torch-fidelity InceptionV3 weights file)")
    device = pick_device(args.device)
    G = load_generator(cfg, gpath, device)

    ev = metrics.Evaluator(cfg, device, 0, 1, metrics=names, num_samples=args.num_samples, feature_weights=weights,
                           feature_layer=args.feature_layer, batch_size=args.batch_size, seed=args.seed,
                           progress=not args.no_progress)
    if ev.real_layers and ev.opts.feature_layer == "2048" and ev.num_samples < 2048:
        print(f"gandist-eval: note: FID/KID on 2048 Inception features from {ev.num_samples} < 2048 images are "
              f"strongly biased; compare only numbers computed with the same number of images", file=sys.stderr)
    t0 = time.perf_counter()
    scores = ev(G)
    elapsed = time.perf_counter() - t0

    import torch_fidelity

    record = {
        "metrics": scores,
        "generator": str(gpath.relative_to(run_dir)),
        "num_samples": ev.num_samples,
        "real_samples": ev.real_count,
        "real_data": cfg.data.source if cfg.data.source == "synthetic" else cfg.data.urls,
        "feature_layer": ev.opts.feature_layer,
        "feature_weights": str(Path(weights).resolve()) if weights else "torch-fidelity default download",
        "seed": ev.seed,
        "device": str(device),
        "seconds": round(elapsed, 3),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {"gandist": __version__, "torch_fidelity": torch_fidelity.__version__, "torch": torch.__version__},
    }
    out = run_dir / "eval.json"
    write_json_atomic(out, record)
    print_table(scores, f"{record['generator']}, {ev.num_samples} generated / {ev.real_count} real images, "
                        f"Inception {ev.opts.feature_layer}")
    print(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    from gandist.config import ConfigError
    from gandist.metrics import MetricError

    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except (RunError, ConfigError, MetricError) as e:
        print(f"gandist-eval: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:
        import traceback

        traceback.print_exc()
        print(f"gandist-eval: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
