"""Checkpoints: accelerate's save_state/load_state plus our own small files, written atomically.

Layout: <run>/checkpoints/step_00001000/ holding accelerate's files (model.safetensors for G,
model_1.safetensors for D, optimizer.bin, optimizer_1.bin, scaler.pt under fp16,
random_states_<rank>.pkl), ema.safetensors, and trainer.json, which is written last and marks
the checkpoint complete.  trainer.json also lists every other file with its size and sha256.

Atomicity: a checkpoint is written into checkpoints/.tmp-step_N and renamed to step_N only when
complete, and old checkpoints are renamed aside before they are deleted, so a process killed at
any moment leaves every step_N directory either complete or absent; the leftovers (.tmp-*, .old-*,
.del-*) are removed by the next save.

Safety: nothing is unpickled with code execution.  Model and EMA weights are safetensors, trainer
state is JSON, and the few pickled files accelerate writes (optimizer, RNG, scaler states) are
checked against trainer.json's hashes and loaded with torch's weights-only unpickler, which refuses
anything but tensors and plain containers.

Model files hold the unwrapped modules' keys (no DDP "module." prefix), so a checkpoint written by
N processes loads into M.  The run directory is assumed to be on a filesystem every rank sees.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from accelerate.utils import load as weights_only_load  # torch.load(weights_only=True) + numpy arrays
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from gandist.backends.zero import checkpoint as zero_checkpoint
from gandist.distributed import reduce_sum, sum_over_ranks
from gandist.training import resume_checks
from gandist.training.ema import calibrate_ema
from gandist.utils.files import follow_umask, fsync, write_json_atomic

STEP_DIR = re.compile(r"^step_(\d{8})$")
SCRATCH = (".tmp-", ".old-", ".del-")  # what an interrupted save or prune may leave behind
PICKLED = (".bin", ".pkl", ".pt")  # accelerate's torch.save files: only ever loaded weights-only
FORMAT = 2  # 2: trainer.json lists every file with its size and sha256; model keys unwrapped


# A key's value in checkpoints written before it joined the identity (before deepspeed: ddp; InfoGAN: no code)
IDENTITY_BEFORE = {"backend": "ddp", "info_codes": 0}


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


def step_of(path: Path) -> int:
    return int(STEP_DIR.match(path.name).group(1))


# -- files ------------------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _remove(path: Path):
    """Delete a directory so that it vanishes at once: rename aside, then delete at leisure."""
    gone = path.with_name(".del-" + path.name)
    shutil.rmtree(gone, ignore_errors=True)
    os.replace(path, gone)
    shutil.rmtree(gone, ignore_errors=True)


@contextmanager
def _plain_keys(accelerator):
    """Save and load the unwrapped modules' state dicts, so the files do not depend on the world size."""
    def on_save(models, weights, output_dir):
        for i, m in enumerate(models):
            weights[i] = OrderedDict(accelerator.get_state_dict(m, unwrap=True))

    def on_load(models, input_dir):
        for i, m in enumerate(models):
            models[i] = accelerator.unwrap_model(m)

    hooks = [accelerator.register_save_state_pre_hook(on_save), accelerator.register_load_state_pre_hook(on_load)]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


# -- saving -----------------------------------------------------------------------------------------

def scratch(run_dir: str | Path, step: int) -> Path:
    """Where the checkpoint of `step` is written before the rename that completes it."""
    return checkpoints_dir(run_dir) / f"{SCRATCH[0]}step_{step:08d}"


def save(accelerator, run_dir: str | Path, step: int, trainer_state: dict, ema=None, keep: int = 2,
         write=None) -> Path:
    """Collective: every rank calls it.  Returns the checkpoint's final path.  `write(dir)` (collective) writes
    the networks' and optimizers' files; default: accelerate's save_state (the ddp backend)."""
    root = checkpoints_dir(run_dir)
    final, tmp = root / f"step_{step:08d}", scratch(run_dir, step)
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for p in root.iterdir():
            if p.name.startswith(SCRATCH):
                shutil.rmtree(p, ignore_errors=True)
    accelerator.wait_for_everyone()
    if write is not None:
        write(tmp)
    else:
        with _plain_keys(accelerator):
            accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()  # every rank's files (its RNG states) are in tmp before it is sealed
    if accelerator.is_main_process:
        if ema is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in ema.state_dict().items()},
                      str(tmp / "ema.safetensors"))
        files = {}
        for f in sorted(tmp.iterdir()):
            follow_umask(f)
            fsync(f)
            files[f.name] = {"bytes": f.stat().st_size, "sha256": _sha256(f)}
        write_json_atomic(tmp / "trainer.json", {"format": FORMAT, "step": step,
                                                 "accelerate_iteration": accelerator.save_iteration,
                                                 **trainer_state, "files": files})
        fsync(tmp)
        old = None
        if final.exists():  # should not happen (see run_dir.decide_resume); never leave the step without one
            old = root / f".old-{final.name}"
            os.replace(final, old)
        os.replace(tmp, final)
        fsync(root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        for stale in complete(run_dir)[:-keep]:
            _remove(stale)
    accelerator.wait_for_everyone()
    return final


def remove_after(run_dir: str | Path, step: int) -> list[Path]:
    """Delete the checkpoints of a run newer than `step` (a discarded future); returns them."""
    newer = [p for p in complete(run_dir) if step_of(p) > step]
    for p in newer:
        _remove(p)
    return newer


# -- loading ----------------------------------------------------------------------------------------

def read_trainer_state(path: Path) -> dict:
    f = Path(path) / "trainer.json"
    if not f.is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint: {f.name} is missing")
    try:
        state = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint file {f} is unreadable or corrupt: {e}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint file {f} is corrupt: not a JSON object")
    if state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint file {f} has format {state.get('format')!r}; this gandist reads "
                              f"format {FORMAT}")
    if not isinstance(state.get("step"), int) or not isinstance(state.get("files"), dict):
        raise CheckpointError(f"checkpoint file {f} is corrupt: it lacks the step or the file list")
    return state


def check_compatible(path: Path, state: dict, identity: dict):
    """The checkpoint must come from the same kind of run: variant, networks, image shape."""
    saved = {**IDENTITY_BEFORE, **state.get("identity", {})}
    diffs = [f"{k}: checkpoint has {saved.get(k)!r}, config has {v!r}" for k, v in identity.items()
             if saved.get(k) != v]
    if diffs:
        raise CheckpointError(f"checkpoint {path} does not match this run's config: " + "; ".join(diffs))


def check_files(path: Path, state: dict):
    """Every file trainer.json lists is there, with its size and sha256: nothing truncated or replaced."""
    for name, meta in sorted(state["files"].items()):
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint file {f} is missing")
        if f.stat().st_size != meta.get("bytes") or _sha256(f) != meta.get("sha256"):
            raise CheckpointError(f"checkpoint file {f} is corrupt: its size or sha256 differs from what "
                                  f"{path / 'trainer.json'} recorded when it was written")
    strays = sorted(p.name for p in path.iterdir() if p.name.endswith(PICKLED) and p.name not in state["files"])
    if strays:
        raise CheckpointError(f"checkpoint {path} holds files it did not write: {', '.join(strays)}; refusing to load")


def check_weights_only(f: Path):
    """Load a torch.save file with the weights-only unpickler: it refuses objects, so no code runs."""
    try:
        weights_only_load(str(f), map_location="cpu")
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"checkpoint file {f} is not plain tensor data (the weights-only unpickler refused "
                              f"it: {type(e).__name__}: {first}); it is corrupt or holds code, which is never "
                              f"run") from None


def _header_shapes(f: Path) -> dict[str, list[int]]:
    """Every tensor's shape in a safetensors file, read from its header alone."""
    try:
        with safe_open(str(f), "pt") as sf:
            return {k: list(sf.get_slice(k).get_shape()) for k in sf.keys()}
    except Exception as e:
        raise CheckpointError(f"checkpoint file {f} is corrupt (not a readable safetensors file: {e})") from None


def _refuse_misfit(f: Path, problems: list[str], what: str):
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CheckpointError(f"checkpoint file {f} does not fit this run's {what}: " + "; ".join(problems[:5]) + more)


def check_tensors(f: Path, module, what: str):
    """A safetensors file holds exactly the module's tensors, with its shapes (read from the header)."""
    if not f.is_file():
        raise CheckpointError(f"checkpoint file {f} is missing")
    saved = _header_shapes(f)
    want = {k: list(v.shape) for k, v in module.state_dict().items()}
    problems = [f"missing {k}" for k in sorted(want.keys() - saved.keys())]
    problems += [f"unexpected {k}" for k in sorted(saved.keys() - want.keys())]
    problems += [f"{k} has shape {saved[k]}, the {what} has {want[k]}" for k in sorted(want) if
                 k in saved and saved[k] != want[k]]
    _refuse_misfit(f, problems, what)


def check_optimizer_file(f: Path, module, what: str):
    """A deepspeed-backend optimizer file holds the state of exactly the module's parameters, with their shapes."""
    _refuse_misfit(f, zero_checkpoint.check_optimizer(_header_shapes(f), module), f"{what}'s optimizer")


def verify(path: Path, identity: dict, modules: dict, ema=None, main: bool = True) -> dict:
    """Everything load() checks before loading anything; raises CheckpointError naming the file.
    `main`: also read every file against trainer.json's sizes and hashes (one rank does)."""
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a directory")
    state = read_trainer_state(path)
    check_compatible(path, state, identity)
    if main:  # reading every byte once is enough
        check_files(path, state)
    for (what, module), name in zip(modules.items(), zero_checkpoint.MODEL_FILES):
        check_tensors(path / name, module, what)
    if ema is not None:
        check_tensors(path / "ema.safetensors", ema.model, "EMA generator")
    for (what, module), name in zip(modules.items(), zero_checkpoint.OPTIMIZER_FILES):
        if name in state["files"]:  # the deepspeed backend's whole optimizer states
            check_optimizer_file(path / name, module, what)
    for f in sorted(path.iterdir()):
        if f.name.endswith(PICKLED):
            check_weights_only(f)
    return state


def load(accelerator, path: str | Path, identity: dict, modules: dict, ema=None, read=None) -> dict:
    """Collective: check the checkpoint, then restore models, optimizers, scaler, RNG and EMA.

    `modules` maps a description to each prepared model's unwrapped module, in prepare() order
    (generator, discriminator).  `read(dir)` (collective) loads the networks and optimizers; default:
    accelerate's load_state (the ddp backend).  Returns trainer.json's contents.  Every rank checks before any
    rank loads, and they agree, so a bad checkpoint stops all ranks with the same clear error.
    """
    path = Path(path)
    state, problem = None, None
    try:
        state = verify(path, identity, modules, ema, accelerator.is_main_process)
    except CheckpointError as e:
        problem = e
    if sum_over_ranks(float(problem is not None), accelerator.device) > 0:
        raise problem or CheckpointError(f"checkpoint {path}: another rank found it unusable (see its error)")
    try:
        if read is not None:
            read(path)
        else:
            with _plain_keys(accelerator):
                accelerator.load_state(str(path))
    except Exception as e:
        raise CheckpointError(f"could not load checkpoint {path}: {type(e).__name__}: {e}") from None
    if ema is not None:
        f = path / "ema.safetensors"
        try:
            ema.load_state_dict(load_file(str(f)))
        except Exception as e:
            raise CheckpointError(f"could not load {f}: {type(e).__name__}: {e}") from None
    # accelerate's load_state restores its step but not its count of saves
    accelerator.project_configuration.iteration = state.get("accelerate_iteration", 0)
    return state


# -- a training run's checkpoints ---------------------------------------------------------------------

def identity(cfg) -> dict:
    """What a checkpoint must share with the config to be loadable."""
    return {"variant": cfg.variant, "arch": cfg.model.arch, "z_dim": cfg.model.z_dim,
            "resolution": cfg.data.resolution, "channels": cfg.data.channels,
            "label_dim": cfg.label_dim, "g_width": cfg.model.g_width, "d_width": cfg.model.d_width,
            "g_norm": cfg.model.g_norm, "d_norm": cfg.model.d_norm, "spectral_norm": cfg.model.spectral_norm,
            "conditioning": cfg.model.conditioning, "info_codes": cfg.model.info_codes, "optimizer": cfg.optim.name,
            "backend": cfg.train.backend}


def weights_finite(models) -> bool:
    """G, D (parameters and buffers) and the EMA hold only finite numbers: worth a checkpoint."""
    mods = [models.G_raw, models.D_raw] + ([models.ema.model] if models.ema is not None else [])
    return all(bool(torch.isfinite(t).all()) for m in mods for t in [*m.parameters(), *m.buffers()]
               if t.is_floating_point())


def save_training(acc, cfg, step: int, models, counters, feed) -> Path | None:
    """Collective: checkpoint the run at `step`, unless some rank's weights are not finite (never replace
    good checkpoints with weights that have blown up: pruning would drop the good ones); None then."""
    if sum_over_ranks(float(not weights_finite(models)), acc.device) > 0:
        return None
    state = {"identity": identity(cfg), "counters": vars(counters), "data": feed.state_dict(),
             "world_size": acc.num_processes, "schedule": resume_checks.schedule(cfg)}  # what the counters count in
    if models.ada is not None and models.ada.adaptive:  # p, and the sign counts of all ranks since the last log step
        state["ada"] = models.ada.state_dict(reduce_sum(models.ada.pending.clone()))
    if acc.is_main_process:  # the one rank that stores the EMA generator, with statistics for its weights
        calibrate_ema(cfg, models, step, acc.device)
    write = None
    if models.engines is not None:
        state["zero_stage"] = models.update_g.stage  # for information: any stage loads it (zero_checkpoint)
        write = partial(zero_checkpoint.write_engines, acc, models)
    return save(acc, cfg.output.dir, step, state, models.ema, cfg.checkpoint.keep, write)


@dataclass(frozen=True)
class Restored:
    """What a run resumed from (the start-up panel words it)."""
    step: int
    path: Path
    world_size: int  # of the run that wrote the checkpoint
    changes: list  # what changed settings change (resume_checks.changes), in words


def restore(cfg, acc, path: Path | None, models, counters, feed) -> Restored | None:
    """Collective: load checkpoint `path` into the run (None: a fresh start, nothing to load)."""
    if path is None:
        return None
    run_dir = Path(cfg.output.dir)
    # Hyperparameters and implementation flags are this run's, not the checkpoint's (loading replaces a param
    # group's): the lrs are set every step (Stepper.set_lr), the rest is put back here.
    kept = [[{k: g[k] for k in ("betas", "fused", "foreach") if k in g} for g in opt.param_groups]
            for opt in (models.opt_g, models.opt_d)]
    try:
        state = load(acc, path, identity(cfg), {"generator": models.G_raw, "discriminator": models.D_raw},
                     models.ema, None if models.engines is None else partial(zero_checkpoint.read_engines, models))
    except CheckpointError as e:
        older = [p for p in complete(run_dir) if p.name < path.name]
        if cfg.train.resume == "auto" and older:
            raise CheckpointError(f"{e}. To continue from the checkpoint before it instead: "
                                  f"train.resume={older[-1]} train.overwrite=true") from None
        raise
    for opt, groups in zip((models.opt_g, models.opt_d), kept if models.engines is None else ()):
        for group, flags in zip(opt.param_groups, groups):
            group.update(flags)
            if group.get("fused"):  # the fused kernels keep their step counts on the parameters' device
                for p in group["params"]:
                    if "step" in opt.state.get(p, {}):
                        opt.state[p]["step"] = opt.state[p]["step"].to(p.device, torch.float32)
    for k, v in state.get("counters", {}).items():
        setattr(counters, k, v)
    if "ada" in state and models.ada is not None and models.ada.adaptive:
        models.ada.load_state_dict(state["ada"], acc.process_index)
    feed.load_state_dict(resume_checks.data_state(state, cfg, feed))
    return Restored(state["step"], path, state.get("world_size", acc.num_processes),
                    resume_checks.changes(state, cfg, path))

