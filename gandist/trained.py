"""A finished training run: its final/ folder, written (export_final) and read back.  final/generator.json (the generator card, written beside the
final weights) is everything needed to rebuild G for inference: gandist.load_generator and
gandist-sample read it, and fall back to config.yaml for runs from before cards.  gandist-eval needs
the config's data anyway, so it builds G from config.yaml.  Neither command imports the other."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gandist import __version__, config, nets
from gandist.cli import UsageError
from gandist.data.errors import DataError
from gandist.data.shards.index import find_index
from gandist.data.shards.io import expand_urls
from gandist.data.synthetic import CLASSES
from gandist.training import run_dir as layout
from gandist.utils.files import atomic_path, write_json_atomic

FINAL = "final"  # in the run directory: the weights of a finished run, with their card
CARD = "generator.json"
CARD_FORMAT = "gandist-generator/1"  # a card of another format is not ours to read
WEIGHTS = {"generator": "generator.safetensors", "generator_ema": "generator_ema.safetensors"}
CHECKPOINTS = {"final": "generator", "ema": "generator_ema"}  # --checkpoint's names for the WEIGHTS
KINDS = ("none", "classes", "attributes")


class GeneratorError(UsageError):
    """A trained generator that cannot be loaded; the message names the file."""


def add_run_arguments(p: argparse.ArgumentParser):
    """What every command on a trained run takes: RUN_DIR, key=value overrides, --checkpoint, --device."""
    p.add_argument("run_dir", help="a run directory written by gandist-train")
    p.add_argument("overrides", nargs="*", help="key=value config overrides on top of RUN_DIR/config.yaml")
    p.add_argument("--checkpoint", default="auto", choices=("auto", *CHECKPOINTS),
                   help="auto: the EMA generator when the run has one")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


# -- the card --------------------------------------------------------------------------------------

def class_names(cfg) -> list[str] | None:
    """Names of the class ids a class-conditional G takes: the embedded dataset's, or those of the
    shards' index.json; ids beyond the data's classes (data.num_classes may exceed them) are named by
    their number.  None where unknown or not class-conditional."""
    d = cfg.data
    if not cfg.label_dim or d.attributes:
        return None
    if d.source == "synthetic":
        names = list(CLASSES)
    else:
        try:  # the index the run was checked against when it started; unreadable now -> no names
            names = find_index(expand_urls(d.urls))[0].get("classes")
        except DataError:
            names = None
    if not isinstance(names, list) or len(names) > d.num_classes:
        return None
    return [str(n) for n in names] + [str(i) for i in range(len(names), d.num_classes)]


def generator_card(cfg, weights=("generator",), names: list[str] | None = None) -> dict:
    """The card of the config's G: nets.build_generator's arguments, what its inputs mean and which
    of the WEIGHTS files exist (`weights`), the EMA one the default."""
    ld = cfg.label_dim
    kind = "none" if not ld else "attributes" if cfg.data.attributes else "classes"
    return {
        "format": CARD_FORMAT,
        "gandist_version": __version__,
        "variant": cfg.variant,
        "network": nets.generator_args(cfg),
        # for a reader without gandist: how to call G(z, y)
        "inputs": "z: (n, z_dim) standard normal; y: (n, label_dim) one-hot classes or 0/1 attributes, "
                  "None when label_dim is 0",
        "output": "images (n, channels, resolution, resolution) in [-1, 1]",
        "conditioning": {"kind": kind, "mode": cfg.model.conditioning,
                         "num_classes": ld if kind == "classes" else 0, "class_names": names,
                         "attributes": list(cfg.data.attributes) if kind == "attributes" else []},
        **weights_entry(weights),
    }


def weights_entry(weights) -> dict:
    """The card's weights: which of the WEIGHTS files exist, and the default (the EMA one if it does)."""
    return {"weights": {w: WEIGHTS[w] for w in WEIGHTS if w in weights},
            "default": "generator_ema" if "generator_ema" in weights else "generator"}


def final_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / FINAL


def present_weights(final: Path) -> list[str]:
    return [w for w, f in WEIGHTS.items() if (final / f).is_file()]


def write_generator_card(final_dir: str | Path, cfg) -> Path:
    """final_dir/generator.json for the weights files already there (call it after writing them), from
    the run's config."""
    final = Path(final_dir)
    path = final / CARD
    write_json_atomic(path, generator_card(cfg, present_weights(final), class_names(cfg)))
    return path


def check_card(card, path: Path) -> dict:
    """The card read from `path`, or a GeneratorError naming the file and what is wrong."""
    def bad(what: str):
        raise GeneratorError(f"{path}: {what}")

    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        found = card.get("format") if isinstance(card, dict) else type(card).__name__
        bad(f"format {found!r} is not {CARD_FORMAT!r} (written by another gandist version?)")
    net, cond, weights = card.get("network"), card.get("conditioning"), card.get("weights")
    if not isinstance(net, dict) or net.get("arch") not in nets.FAMILIES:
        bad(f"network.arch must be one of {', '.join(nets.FAMILIES)}")
    for key in ("z_dim", "channels", "resolution", "width", "label_dim"):
        v = net.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < (0 if key == "label_dim" else 1):
            bad(f"network.{key} must be a{' non-negative' if key == 'label_dim' else ' positive'} integer, "
                f"not {v!r}")
    codes = net.get("info_codes", 0)  # absent from cards written before InfoGAN's code
    if not isinstance(codes, int) or isinstance(codes, bool) or not 0 <= codes < net["z_dim"]:
        bad(f"network.info_codes must be an integer from 0 to network.z_dim - 1, not {codes!r}")
    if not isinstance(net.get("norm"), str):
        bad(f"network.norm must be a string, not {net.get('norm')!r}")
    if not isinstance(cond, dict) or cond.get("kind") not in KINDS:
        bad(f"conditioning.kind must be one of {', '.join(KINDS)}")
    names, attrs = cond.get("class_names"), cond.get("attributes")
    if not isinstance(attrs, list) or not all(isinstance(a, str) for a in attrs):
        bad("conditioning.attributes must be a list of attribute names")
    width = {"none": 0, "classes": cond.get("num_classes"), "attributes": len(attrs)}
    if width[cond["kind"]] != net["label_dim"]:
        bad(f"network.label_dim {net['label_dim']} does not match conditioning ({cond['kind']}: "
            f"{width[cond['kind']]})")
    if names is not None and (not isinstance(names, list) or len(names) != width["classes"]):
        bad(f"conditioning.class_names must be null or a list of {width['classes']} names")
    if not isinstance(weights, dict) or not weights or any(
            w not in WEIGHTS or not isinstance(f, str) or Path(f).name != f for w, f in weights.items()):
        bad(f"weights must map some of {', '.join(WEIGHTS)} to file names in its directory")
    if card.get("default") not in weights:
        bad(f"default {card.get('default')!r} is not one of its weights ({', '.join(weights)})")
    return card


def read_card(path: str | Path) -> dict:
    path = Path(path)
    try:
        card = json.loads(path.read_text())
    except OSError as e:
        raise GeneratorError(f"{path} cannot be read ({e.strerror or e})") from None
    except ValueError as e:
        raise GeneratorError(f"{path} is not valid JSON ({e})") from None
    return check_card(card, path)


# -- finding and loading a generator ----------------------------------------------------------------

def locate(path: str | Path) -> tuple[Path, Path]:
    """(run directory, final directory) of `path`: a run directory, or a final directory itself (one
    with a card or weights; a copied-out final/ is its own run directory)."""
    path = Path(path)
    if not path.is_dir():
        raise GeneratorError(f"run directory {path} does not exist (give a run directory written by "
                             f"gandist-train, or its final/)")
    if (path / CARD).is_file() or present_weights(path):
        return (path.parent if path.name == FINAL else path), path
    return path, path / FINAL


def read_generator(path: str | Path, overrides=()) -> tuple[dict, Path, Path]:
    """(card, run directory, final directory): final/generator.json, or for a run from before cards,
    a card made from its config.yaml with key=value `overrides` (with a card they have nothing to act on)."""
    run_dir, final = locate(path)
    card_path = final / CARD
    if card_path.is_file():
        if overrides:
            raise UsageError(f"key=value overrides ({' '.join(overrides)}) apply to config.yaml, but {card_path} "
                             f"describes the generator; leave them out")
        return read_card(card_path), run_dir, final
    cfg_path = final.parent / layout.CONFIG
    if not cfg_path.is_file():
        raise GeneratorError(f"{card_path} does not exist, nor does {cfg_path} (a run from before generator "
                             f"cards): is {path} a run directory written by gandist-train?")
    cfg = load_config(final.parent, overrides)
    return generator_card(cfg, present_weights(final)), run_dir, final


def weights_path(card: dict, final: Path, which: str = "auto") -> Path:
    """The weights file `which` (auto: the card's default, the EMA one when there is one) names."""
    name = card["default"] if which == "auto" else CHECKPOINTS.get(which, which)
    if name not in WEIGHTS:
        raise UsageError(f"--checkpoint: {which!r} is not one of auto, {', '.join(CHECKPOINTS)}")
    path = final / card["weights"].get(name, WEIGHTS[name])
    if name not in card["weights"] or not path.is_file():
        if name == "generator_ema":
            raise GeneratorError(f"{path} does not exist: the run kept no EMA of G (optim.ema=0); "
                                 f"use --checkpoint final")
        raise GeneratorError(f"{path} does not exist: gandist-train writes final/ when a run completes "
                             f"train.steps (a run still going or stopped early has only checkpoints/)")
    return path


def load_weights(G: torch.nn.Module, path: Path, described_by: str, device="cpu") -> torch.nn.Module:
    """G with the weights of `path`, in eval mode on `device`, without gradients."""
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise GeneratorError(f"{path} is not a readable safetensors file ({e})") from None
    try:
        G.load_state_dict(state)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:400]
        raise GeneratorError(f"{path} does not fit the generator {described_by}: {detail}") from None
    return G.to(device).eval().requires_grad_(False)


def build_loaded(card: dict, final: Path, which: str = "auto", device="cpu") -> tuple[torch.nn.Module, Path]:
    """(G as the card describes it with the weights `which`, the weights file)."""
    path = weights_path(card, final, which)
    try:
        G = nets.build_generator(**card["network"])
    except (TypeError, ValueError, KeyError) as e:
        raise GeneratorError(f"{final / CARD}: network {card['network']} cannot be built ({e})") from None
    return load_weights(G, path, f"{final / CARD} describes", device), path


def load_generator(path: str | Path, which: str = "auto", device="cpu") -> torch.nn.Module:
    """A trained generator for inference, from a run's final/ directory (or the run directory) alone:
    G(z, y) -> images in [-1, 1], in eval mode on `device` ('auto': the GPU if there is one).
    which: auto (the EMA weights when the run kept them), ema or final.  G.card is its generator.json."""
    card, _, final = read_generator(path)
    G, _ = build_loaded(card, final, which, pick_device(device) if isinstance(device, str) else device)
    G.card = card  # what its inputs mean: z_dim, class names or attributes
    return G


# -- the training config ----------------------------------------------------------------------------

def load_config(run_dir: str | Path, overrides=()):
    """RUN_DIR/config.yaml with key=value overrides on top."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"run directory {run_dir} does not exist")
    path = run_dir / layout.CONFIG
    if not path.is_file():
        raise UsageError(f"{path} does not exist: is {run_dir} a run directory written by gandist-train?")
    return config.load(path, list(overrides))


def generator_path(run_dir: str | Path, which: str = "auto") -> Path:
    """final/generator_ema.safetensors if the run has one (which=auto), else final/generator.safetensors."""
    final = Path(run_dir) / FINAL
    return weights_path(weights_entry(present_weights(final)), final, which)


def config_generator(cfg, path: str | Path, device="cpu") -> torch.nn.Module:
    """nets.build(cfg)'s G with the weights of `path`, in eval mode on `device` (gandist-eval)."""
    G, _ = nets.build(cfg)
    return load_weights(G, Path(path), "of the run's config (model.* or data.* overridden?)", device)


def pick_device(name: str) -> torch.device:
    """auto: the GPU if there is one."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    return torch.device(name)


def export_final(cfg, models):
    """final/{generator,discriminator,generator_ema}.safetensors: plain fp32 state dicts of the unwrapped
    models (the EMA's BatchNorm statistics must be ready for its weights), and generator.json, which
    makes G rebuildable from final/ alone (gandist.load_generator)."""
    out = final_dir(cfg.output.dir)
    out.mkdir(parents=True, exist_ok=True)
    named = {"generator": models.G_raw, "discriminator": models.D_raw}
    if models.ema is not None:
        named["generator_ema"] = models.ema.model
    for name, m in named.items():
        sd = {k: v.detach().float().cpu().contiguous() if v.is_floating_point() else v.detach().cpu().contiguous()
              for k, v in m.state_dict().items()}
        with atomic_path(out / f"{name}.safetensors") as tmp:
            save_file(sd, str(tmp))
    write_generator_card(out, cfg)
