"""Checkpoints: accelerate's save_state/load_state plus our own small files, written atomically.

Layout: <run>/checkpoints/step_00001000/ holding accelerate's files (model*.safetensors,
optimizer*.bin, scaler.pt, random_states_*.pkl), ema.safetensors, and trainer.json, which is
written last and marks the checkpoint complete.  Everything is written under a temporary name and
renamed into place, so a crash while saving leaves the previous checkpoint as it was.  Nothing is
loaded with pickle's code execution: accelerate loads its files weights-only, ours are safetensors
and JSON.  (The run directory is assumed to be on a filesystem every node sees.)
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

STEP_DIR = re.compile(r"^step_(\d{8})$")
FORMAT = 1


class CheckpointError(RuntimeError):
    pass


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def complete(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_DIR.match(p.name) and (p / "trainer.json").is_file()]
    return sorted(found, key=lambda p: p.name)


def latest(run_dir: str | Path) -> Path | None:
    done = complete(run_dir)
    return done[-1] if done else None


def _fsync_dir(path: Path):
    try:
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


def write_json_atomic(path: Path, obj: dict):
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(accelerator, run_dir: str | Path, step: int, trainer_state: dict, ema=None, keep: int = 2) -> Path:
    """Collective: every rank calls it.  Returns the checkpoint's final path."""
    root = checkpoints_dir(run_dir)
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-step_{step:08d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    if accelerator.is_main_process:
        if ema is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in ema.state_dict().items()},
                      str(tmp / "ema.safetensors"))
        write_json_atomic(tmp / "trainer.json", {"format": FORMAT, "step": step, **trainer_state})
        if final.exists():  # the same step saved again (a resumed run reaching a save point twice)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        for old in complete(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def read_trainer_state(path: Path) -> dict:
    f = Path(path) / "trainer.json"
    if not f.is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint: {f.name} is missing")
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint file {f} is unreadable or corrupt: {e}") from None


def check_compatible(path: Path, state: dict, identity: dict):
    """The checkpoint must come from the same kind of run: variant, networks, image shape."""
    saved = state.get("identity", {})
    diffs = [f"{k}: checkpoint has {saved.get(k)!r}, config has {v!r}" for k, v in identity.items()
             if saved.get(k) != v]
    if diffs:
        raise CheckpointError(f"checkpoint {path} does not match this run's config: " + "; ".join(diffs))


def load(accelerator, path: str | Path, identity: dict, ema=None) -> dict:
    """Collective: restore models, optimizers, scaler and RNG; return trainer.json's contents."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a directory")
    state = read_trainer_state(path)
    check_compatible(path, state, identity)
    try:
        accelerator.load_state(str(path))
    except Exception as e:  # shapes, missing or truncated files: name the checkpoint
        raise CheckpointError(f"could not load checkpoint {path}: {type(e).__name__}: {e}") from None
    if ema is not None:
        f = path / "ema.safetensors"
        try:
            ema.load_state_dict(load_file(str(f)))
        except Exception as e:
            raise CheckpointError(f"could not load {f}: {type(e).__name__}: {e}") from None
    return state
