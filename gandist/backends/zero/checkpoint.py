"""A deepspeed-backend checkpoint: each ZeRO slice of the optimizer state gathered whole (safe_get_full_*) into
safetensors, "<parameter name>/<state key>" -> tensor, so that N processes at any stage resume as M at any stage.

Not engine.save_checkpoint: its per-rank files do not load at another world size, and they are pickles read
with weights_only=False.  Every function here is collective: all ranks call it, parameters in the same order.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from gandist.backends.zero.engines import require_deepspeed

STEP = "__step__"
# G's and D's files: the weights under accelerate's names (what the ddp backend's save_state writes, which
# gandist.training.checkpoint verifies for both backends), and the deepspeed backend's whole optimizer states
MODEL_FILES = ("model.safetensors", "model_1.safetensors")
OPTIMIZER_FILES = ("optimizer.safetensors", "optimizer_1.safetensors")


def _zero(engine) -> bool:
    """True where a ZeRO-1/2 optimizer holds the state in slices; False at stage 0."""
    return hasattr(engine.optimizer, "single_partition_of_fp32_groups")


def _base(engine) -> torch.optim.Optimizer:
    return engine.optimizer.optimizer if _zero(engine) else engine.optimizer


def gather_optimizer(engine) -> dict[str, torch.Tensor]:
    """Collective: the whole optimizer state of the engine's network, by parameter name, on the CPU."""
    ds, base, zero = require_deepspeed(), _base(engine), _zero(engine)
    held = [base.state.get(p, {}) for g in base.param_groups for p in g["params"]]
    first = held[0] if held else {}  # every rank stepped its slice as often: the same keys everywhere
    keys = sorted(k for k, v in first.items() if k != "step" and torch.is_tensor(v) and v.dim() > 0)
    out = {}
    for name, p in engine.module.named_parameters():
        for k in keys:
            v = ds.utils.safe_get_full_optimizer_state(p, k) if zero else base.state[p][k]
            out[f"{name}/{k}"] = v.detach().float().cpu().contiguous()
    if "step" in first:
        out[STEP] = torch.tensor(float(first["step"]), dtype=torch.float64)
    return out


def check_optimizer(tensors: dict[str, list], module: torch.nn.Module) -> list[str]:
    """What does not fit `module` in an optimizer file's {key: shape}: a list of problems (empty = fits)."""
    params = {n: list(p.shape) for n, p in module.named_parameters()}
    problems, seen = [], {}
    for key, shape in tensors.items():
        if key == STEP:
            continue
        name, _, k = key.rpartition("/")
        if name not in params:
            problems.append(f"unexpected {key}")
        elif shape != params[name]:
            problems.append(f"{key} has shape {shape}, the parameter has {params[name]}")
        seen.setdefault(k, set()).add(name)
    problems += [f"{k} is missing for {n}" for k, names in sorted(seen.items()) for n in sorted(params.keys() - names)]
    return problems


def _step_tensor(step: float, group: dict, p: torch.Tensor) -> torch.Tensor:
    # torch keeps the step as a float32 tensor: on the parameter's device for fused / capturable kernels
    on_device = group.get("fused") or group.get("capturable")
    return torch.tensor(step, dtype=torch.float32, device=p.device if on_device else "cpu")


def load_optimizer(engine, tensors: dict[str, torch.Tensor]) -> None:
    """Collective: the whole optimizer state and the module's weights into the engine (ZeRO's fp32 copy too),
    each rank taking its slice.  Call after loading the module's state dict."""
    ds, base, zero = require_deepspeed(), _base(engine), _zero(engine)
    tensors = dict(tensors)
    step = tensors.pop(STEP, None)
    keys = sorted({k.rpartition("/")[2] for k in tensors})
    named = list(engine.module.named_parameters())
    if not zero:
        for g in base.param_groups:
            for p in g["params"]:
                base.state[p] = {} if step is None else {"step": _step_tensor(float(step), g, p)}
        for name, p in named:
            base.state[p].update({k: tensors[f"{name}/{k}"].to(p.device, p.dtype).clone() for k in keys})
        return
    # A fresh ZeRO optimizer has no state until its first step, which also links each parameter to its slice of
    # the state (private: DeepSpeed 0.19's _lazy_init_hp_params_optimizer_state); make the state and link it here,
    # then write each parameter's slice.  The torch optimizer finds its state made and keeps it (in place).
    for g in base.param_groups:
        for flat in g["params"]:
            state = {k: torch.zeros_like(flat) for k in keys}
            if step is not None:
                state["step"] = _step_tensor(float(step), g, flat)
            base.state[flat] = state
    engine.optimizer._hp_optimizer_states_linked = False
    engine.optimizer._lazy_init_hp_params_optimizer_state()
    with torch.no_grad():
        for name, p in named:
            ds.utils.safe_set_full_fp32_param(p, p.detach().clone())
            for k in keys:
                ds.utils.safe_set_full_optimizer_state(p, tensors[f"{name}/{k}"].to(p.device, torch.float32), k)


def write_engines(acc, models, tmp: Path):
    """Collective: the deepspeed backend's weights and whole optimizer states into `tmp`."""
    opt_g, opt_d = (gather_optimizer(e) for e in (models.engines.G, models.engines.D))
    if acc.is_main_process:
        tmp.mkdir(parents=True, exist_ok=True)
        for name, m in zip(MODEL_FILES, (models.G_raw, models.D_raw)):
            save_file({k: v.detach().cpu().contiguous() for k, v in m.state_dict().items()}, str(tmp / name))
        for name, tensors in zip(OPTIMIZER_FILES, (opt_g, opt_d)):
            save_file(tensors, str(tmp / name))


def read_engines(models, path: Path):
    """Collective: the deepspeed backend's weights and optimizer states from checkpoint `path` into the engines."""
    for name, m, engine, opt in zip(MODEL_FILES, (models.G_raw, models.D_raw),
                                    (models.engines.G, models.engines.D), OPTIMIZER_FILES):
        m.load_state_dict(load_file(str(path / name), device=str(next(m.parameters()).device)))
        load_optimizer(engine, load_file(str(path / opt)))
