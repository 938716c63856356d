"""A finished training run, read back: its config and its final generator.  gandist-eval and
gandist-sample share this, so neither command imports the other."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from gandist import config, nets
from gandist.cli import UsageError

CHECKPOINTS = {"final": "generator.safetensors", "ema": "generator_ema.safetensors"}


def add_run_arguments(p: argparse.ArgumentParser):
    """What every command on a trained run takes: RUN_DIR, key=value overrides, --checkpoint, --device."""
    p.add_argument("run_dir", help="a run directory written by gandist-train")
    p.add_argument("overrides", nargs="*", help="key=value config overrides on top of RUN_DIR/config.yaml")
    p.add_argument("--checkpoint", default="auto", choices=("auto", *CHECKPOINTS),
                   help="auto: the EMA generator when the run has one")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def load_config(run_dir: str | Path, overrides=()):
    """RUN_DIR/config.yaml with key=value overrides on top."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"run directory {run_dir} does not exist")
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise UsageError(f"{path} does not exist: is {run_dir} a run directory written by gandist-train?")
    return config.load(path, list(overrides))


def generator_path(run_dir: str | Path, which: str = "auto") -> Path:
    """final/generator_ema.safetensors if the run has one (which=auto), else final/generator.safetensors."""
    final = Path(run_dir) / "final"
    if which == "auto":
        which = "ema" if (final / CHECKPOINTS["ema"]).is_file() else "final"
    if which not in CHECKPOINTS:
        raise UsageError(f"--checkpoint: {which!r} is not one of auto, {', '.join(CHECKPOINTS)}")
    path = final / CHECKPOINTS[which]
    if not path.is_file():
        if which == "ema":
            raise UsageError(f"{path} does not exist: the run kept no EMA of G (optim.ema=0); use --checkpoint final")
        raise UsageError(f"{path} does not exist: gandist-train writes final/ when a run completes train.steps "
                         f"(a run still going or stopped early has only checkpoints/)")
    return path


def load_generator(cfg, path: str | Path, device="cpu") -> torch.nn.Module:
    """nets.build(cfg)'s G with the weights of `path`, in eval mode on `device`."""
    G, _ = nets.build(cfg)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise UsageError(f"{path} is not a readable safetensors file ({e})") from None
    try:
        G.load_state_dict(state)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:400]
        raise UsageError(f"{path} does not fit the generator of the run's config (model.* or data.* overridden?): "
                         f"{detail}") from None
    return G.to(device).eval().requires_grad_(False)


def pick_device(name: str) -> torch.device:
    """auto: the GPU if there is one."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    return torch.device(name)
