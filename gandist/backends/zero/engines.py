"""DeepSpeed ZeRO engines for G and D: the DeepSpeed config (built from typed settings, or a user's JSON
checked against the run) and deepspeed.initialize once per network, on gandist's own process group.

Two engines because accelerate refuses two models on one DeepSpeed Accelerator, and G and D are stepped at
different times by different losses (as in DeepSpeed's GAN tutorial); why D is called as engine.module is in
gandist.backends.zero.update.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from gandist.backends.zero.limits import EXTRA, FP16_REFUSED, STAGE3_REFUSED
from gandist.cli import ConfigError

STAGES = (0, 1, 2)
# The keys of a DeepSpeed config that gandist fills from the run; a user's file may leave them out or say "auto".
BATCH_KEYS = ("train_micro_batch_size_per_gpu", "train_batch_size", "gradient_accumulation_steps")


def require_deepspeed():
    """The deepspeed module, or an error naming the extra that installs it.  Imported late: a DDP run must
    not need the optional extra or pay for its (slow) import."""
    try:
        import deepspeed
    except ImportError as e:
        raise ConfigError(f"train.backend=deepspeed needs DeepSpeed, which is not installed ({e}); "
                          f"install gandist's deepspeed extra: {EXTRA}") from None
    return deepspeed


@dataclass(frozen=True)
class ZeroSettings:
    """What a run decides of DeepSpeed's config; everything else keeps DeepSpeed's defaults."""
    stage: int = 1  # 0: DeepSpeed's data parallel only; 1: optimizer state partitioned; 2: and gradients
    precision: str = "no"  # train.mixed_precision: "no" or "bf16" (autocast, applied by the step); fp16 refused
    micro_batch: int = 1  # this rank's batch: train.batch_size / world size
    world_size: int = 1
    gradient_clipping: float = 0.0  # max global gradient norm per network; 0 = none
    reduce_bucket_size: int = 500_000_000  # elements reduced per gradient bucket (DeepSpeed's default)
    allgather_bucket_size: int = 500_000_000  # elements gathered per bucket after the step (likewise)
    overlap_comm: bool = False  # overlap gradient reduction with backward (uses more memory for buckets)


def check_stage(stage, where: str) -> int:
    if stage == 3:
        raise ConfigError(f"{where}: {STAGE3_REFUSED}")
    if stage not in STAGES:
        raise ConfigError(f"{where}: {stage!r} is not one of {list(STAGES)}")
    return stage


def check_precision(precision: str, where: str) -> str:
    if precision == "fp16":
        raise ConfigError(f"{where}: {FP16_REFUSED}")
    if precision not in ("no", "bf16"):
        raise ConfigError(f"{where}: {precision!r} is not one of ['no', 'bf16']")
    return precision


def build_config(s: ZeroSettings) -> dict:
    """The DeepSpeed config dict of the settings, for deepspeed.initialize(model, optimizer=torch optimizer)."""
    check_stage(s.stage, "deepspeed.zero_stage")
    check_precision(s.precision, "train.mixed_precision")
    if s.micro_batch < 1 or s.world_size < 1:
        raise ConfigError(f"deepspeed: the per-rank batch ({s.micro_batch}) and world size ({s.world_size}) "
                          f"must be at least 1")
    if not (s.gradient_clipping >= 0 and math.isfinite(s.gradient_clipping)):
        raise ConfigError(f"deepspeed.gradient_clipping: {s.gradient_clipping!r} must be a finite number >= 0")
    return {
        # DeepSpeed checks train_batch_size == micro batch x accumulation x world size; it never loads
        # data for gandist, so these only have to be the run's true figures.
        "train_micro_batch_size_per_gpu": s.micro_batch,
        "train_batch_size": s.micro_batch * s.world_size,
        # 1, always: each D step and each G step is one backward and one optimizer step, so every backward
        # is an accumulation boundary where the engine reduces the gradients (more would make engine.step
        # skip updates and carry gradients across steps of different networks' losses).
        "gradient_accumulation_steps": 1,
        # always written: DeepSpeed's default is 1.0, which would clip every gradient to norm 1
        "gradient_clipping": float(s.gradient_clipping),
        # No "fp16"/"bf16" section: the engines keep fp32 weights, gradients and optimizer state, and bf16
        # is the autocast the training step already wraps its forwards in, as on the DDP backend.  DeepSpeed's
        # own bf16 section would store the weights themselves in bf16: a different recipe.
        "zero_optimization": {
            "stage": s.stage,
            "reduce_bucket_size": s.reduce_bucket_size,
            "allgather_bucket_size": s.allgather_bucket_size,
            "overlap_comm": s.overlap_comm,
            "contiguous_gradients": True,
        },
        # ZeRO lists only some optimizers as tested (Adam, AdamW, Adagrad...); gandist also uses RMSprop
        # (WGAN).  ZeRO steps the wrapped optimizer on this rank's slice of a flat parameter vector, which
        # is correct for any optimizer whose update is elementwise, as RMSprop's is.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2 ** 62,  # gandist logs its own metrics; DeepSpeed's progress lines would interleave
        "wall_clock_breakdown": False,
    }


def _fill(user: dict, key: str, value: int, path: Path, why: str):
    """user[key] := value when absent or "auto"; an explicit other value is an error naming the file."""
    given = user.get(key, "auto")
    if given == "auto":
        user[key] = value
    elif given != value or isinstance(given, bool):
        raise ConfigError(f"deepspeed.config {path}: {key} is {given!r} but this run needs {value} ({why}); "
                          f"write \"auto\" or leave it out")


def load_user_config(path: str | Path, micro_batch: int, world_size: int, precision: str = "no") -> dict:
    """A user's DeepSpeed JSON made ready for this run: absent or "auto" batch keys filled in, what gandist
    decides itself checked not to be contradicted, "_"-prefixed comment keys dropped."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"deepspeed.config: {path} does not exist")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"deepspeed.config {path}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") \
            from None
    if not isinstance(raw, dict):
        raise ConfigError(f"deepspeed.config {path}: must hold a JSON object at the top level, not "
                          f"{type(raw).__name__}")
    user = {k: v for k, v in raw.items() if not k.startswith("_")}
    for key in ("optimizer", "scheduler"):
        if key in user:
            raise ConfigError(f"deepspeed.config {path}: {key!r} is not allowed: gandist builds G's and D's optimizers "
                              f"from optim.* and sets their learning rates each step (DeepSpeed would silently "
                              f"ignore the file's {key} beside them)")
    for key in ("fp16", "bf16", "torch_autocast"):
        section = user.get(key)
        if isinstance(section, dict) and section.get("enabled", False):
            if key == "fp16":
                raise ConfigError(f"deepspeed.config {path}: fp16.enabled: {FP16_REFUSED}")
            raise ConfigError(f"deepspeed.config {path}: {key}.enabled is not supported: gandist keeps fp32 weights "
                              f"and applies bf16 as autocast itself; set train.mixed_precision=bf16 instead")
    check_precision(precision, "train.mixed_precision")
    zero = user.get("zero_optimization", {})
    if not isinstance(zero, dict):
        raise ConfigError(f"deepspeed.config {path}: zero_optimization must be an object, not {zero!r}")
    stage = zero.get("stage", 0)
    if isinstance(stage, bool) or not isinstance(stage, int):
        raise ConfigError(f"deepspeed.config {path}: zero_optimization.stage must be an integer, not {stage!r}")
    check_stage(stage, f"deepspeed.config {path}: zero_optimization.stage")
    _fill(user, "train_micro_batch_size_per_gpu", micro_batch, path, "train.batch_size / world size")
    _fill(user, "train_batch_size", micro_batch * world_size, path, "train.batch_size")
    _fill(user, "gradient_accumulation_steps", 1, path, "each D and G step is one backward and one step")
    # DeepSpeed's own default is gradient_clipping 1.0: a file that does not mention it would silently clip
    # every gradient to norm 1, which a GAN recipe never asked for (the DDP backend clips nothing)
    user.setdefault("gradient_clipping", 0.0)
    user.setdefault("zero_allow_untested_optimizer", True)  # see build_config
    user.setdefault("steps_per_print", 2 ** 62)
    return user


@dataclass
class Engines:
    """G's and D's engines; engine.optimizer wraps gandist's torch optimizer (set learning rates there)."""
    G: object
    D: object


def make_engines(G: torch.nn.Module, D: torch.nn.Module, opt_g: torch.optim.Optimizer,
                 opt_d: torch.optim.Optimizer, ds_config: dict) -> Engines:
    """deepspeed.initialize once for G and once for D, on gandist's existing group (a group of one for a
    single process too: DeepSpeed must not start its own).  G and D must already match across ranks."""
    deepspeed = require_deepspeed()
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("make_engines needs an initialised torch.distributed process group (a group of one "
                           "for a single process); DeepSpeed would otherwise try to start its own")
    if "LOCAL_RANK" not in os.environ:
        # DeepSpeed asserts that a launcher set LOCAL_RANK (torchrun, accelerate launch and deepspeed do); a single
        # process started plainly (python -m gandist.train) has none, and its one rank is local rank 0
        if dist.get_world_size() > 1:
            raise RuntimeError("DeepSpeed needs LOCAL_RANK in the environment of each of several processes; start "
                               "them with torchrun or accelerate launch")
        os.environ["LOCAL_RANK"] = "0"
    stage = ds_config.get("zero_optimization", {}).get("stage", 0)
    check_stage(stage, "zero_optimization.stage")
    engines = []
    for model, opt in ((G, opt_g), (D, opt_d)):
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=engine_config(ds_config, model),
                                               dist_init_required=False)
        engines.append(engine)
    return Engines(*engines)


def engine_config(ds_config: dict, model: torch.nn.Module) -> dict:
    """A copy of the config for one engine (DeepSpeed amends the dict it gets), its buckets capped at the
    network's size: ZeRO allocates each bucket whole up front (the default is 2 GB of fp32), and a bucket the
    size of the network already reduces it in one go, so the cap changes no result."""
    cfg = json.loads(json.dumps(ds_config))
    zero = cfg.get("zero_optimization")
    if isinstance(zero, dict):
        # rounded up to a multiple of 1024: ZeRO wants bucket sizes divisible by its alignment factor (2 or 4)
        whole = -(-sum(p.numel() for p in model.parameters()) // 1024) * 1024
        for key, default in (("reduce_bucket_size", 500_000_000), ("allgather_bucket_size", 500_000_000)):
            zero[key] = min(int(zero.get(key, default)), whole)
    return cfg
