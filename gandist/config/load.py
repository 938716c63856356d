"""Loading and checking the run configuration, whose typed schema and defaults live in gandist/config/schema.py.

A run's config is built in four layers, each overriding the one before:

    dataclass defaults  <  the variant's preset  <  the YAML file  <  key=value overrides

The defaults are DCGAN's (Radford et al. 2016), declared once in gandist/config/schema.py; a variant's
preset (gandist/variants/<name>.py) holds only where that variant departs from them, as dotted keys, so
choosing `variant=wgan_gp` on the command line brings its architecture, loss and optimizer unless the file
or the command line says otherwise.  Every value is checked inside `load` -- its type, its range, its
allowed values (those of the loss, regulariser, augmentation and metric registries included) and its
consistency with the others -- before any work starts and before any file is touched; errors name the key
and where it came from.  `gandist-train --help-config [SECTION]` prints every key with its help
(gandist/config/help.py).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from gandist.backends.zero.limits import COMPILE_REFUSED, EXTRA, FP16_REFUSED, STAGE3_REFUSED
from gandist.cli import ConfigError
from gandist.config.schema import Config, allowed
from gandist.config.world import settle
from gandist.metrics.inception import check_weights
from gandist.metrics.registry import MetricError
from gandist.objective.augment import parse_policy
from gandist.variants import VARIANTS


def _coerce(value: Any, tp: Any, key: str, where: str):
    """Return value as type tp, or raise naming key and where it came from."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (tp,) = [a for a in args if a is not type(None)]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if value is False:  # YAML reads a bare `no` as False; `resume: no` means the string
            return "no"
    elif tp is list:
        if isinstance(value, list):
            return value
        if isinstance(value, str):
            return [v for v in value.split(",") if v]
    else:
        raise TypeError(tp)
    name = getattr(tp, "__name__", str(tp))
    raise ConfigError(f"{key}: expected {name}, got {value!r} ({type(value).__name__}) in {where}")


def _check_finite(value: Any, key: str, where: str):
    """Refuse a NaN or an infinity in a float value, or in a list's float items: NaN passes every min/max
    comparison (all are False), and neither means anything as a learning rate, weight or bound."""
    for v in value if isinstance(value, list) else [value]:
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{key}: {v!r} is not a finite number (NaN and infinities are refused) in {where}")


def _parse_cli_value(text: str):
    # YAML's scalar rules, so `train.steps=10` is an int and `model.sync_bn=true` a bool.
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _set(cfg: Any, dotted: str, value: Any, where: str):
    parts = dotted.split(".")
    obj = cfg
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(obj)}
        if part not in fields:
            prefix = ".".join(parts[:i])
            allowed = ", ".join(sorted(fields))
            raise ConfigError(f"unknown key {dotted!r} in {where}: "
                              f"{'section ' + repr(prefix) if prefix else 'the top level'} has {allowed}")
        f = fields[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(f.type if not isinstance(f.type, str) else None):
                raise ConfigError(f"{dotted} is a section, not a value, in {where}")
            hints = typing.get_type_hints(type(obj))
            if dataclasses.is_dataclass(hints[part]):
                if not isinstance(value, dict):
                    raise ConfigError(f"{dotted}: expected a mapping of its keys, got {value!r} in {where}")
                for k, v in value.items():
                    _set(cfg, f"{dotted}.{k}", v, where)
                return
            value = _coerce(value, hints[part], dotted, where)
            _check_finite(value, dotted, where)
            setattr(obj, part, value)
            return
        obj = getattr(obj, part)
        if not dataclasses.is_dataclass(obj):
            raise ConfigError(f"unknown key {dotted!r} in {where}: {'.'.join(parts[:i + 1])} is a value")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _check_ranges(obj: Any, prefix: str, where: str):
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_ranges(value, key + ".", where)
            continue
        _check_finite(value, key, where)  # (each is checked where it is set; this for any other way in)
        m = f.metadata
        choices = allowed(f)
        bad = [v for v in (value if isinstance(value, list) else [value]) if choices and v not in choices]
        if bad:
            raise ConfigError(f"{key}: {bad[0]!r} is not one of {list(choices)} ({where})")
        if m.get("min") is not None and value < m["min"]:
            raise ConfigError(f"{key}: {value!r} is below its minimum {m['min']} ({where})")
        if m.get("max") is not None and value > m["max"]:
            raise ConfigError(f"{key}: {value!r} is above its maximum {m['max']} ({where})")


def load(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (), check_files: bool = True) -> Config:
    """Build the run's Config from an optional YAML file and `key.sub=value` overrides, every key checked."""
    where_file = str(path) if path else "<no file>"
    file_values: dict = {}
    if path is not None:
        p = Path(path)
        if p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.suffix in (".yaml", ".yml") and f.is_file())
            raise ConfigError(f"config file {p} is a folder, not a config file; give one YAML file"
                              + (f", e.g. {', '.join(found[:4])}{', ...' if len(found) > 4 else ''}" if found else ""))
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
        file_values = _flatten(loaded)

    cli_values = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} on the command line must look like key.sub=value")
        k, v = item.split("=", 1)
        cli_values[k.strip()] = _parse_cli_value(v)

    variant = cli_values.get("variant", file_values.get("variant", Config.variant))
    if variant not in VARIANTS:
        src = "the command line" if "variant" in cli_values else where_file
        raise ConfigError(f"variant: {variant!r} is not one of {sorted(VARIANTS)} ({src})")

    cfg = Config()
    for k, v in VARIANTS[variant].preset.items():
        _set(cfg, k, v, f"the {variant} preset")
    for k, v in file_values.items():
        _set(cfg, k, v, where_file)
    for k, v in cli_values.items():
        _set(cfg, k, v, "the command line")
    _check_ranges(cfg, "", f"{where_file} + command line")
    _check_consistency(cfg, where_file, check_files)
    return cfg


def _check_consistency(cfg: Config, where: str, check_files: bool = True):
    if cfg.data.source == "shards" and not cfg.data.urls:
        raise ConfigError(f"data.urls: data.source is 'shards' but no shard urls are given ({where})")
    if cfg.model.conditioning != "none" and cfg.data.num_classes == 0 and not cfg.data.attributes:
        raise ConfigError(f"model.conditioning: {cfg.model.conditioning!r} needs labels, "
                          f"but data.num_classes is 0 and data.attributes is empty ({where})")
    if cfg.model.info_codes == 1 or cfg.model.info_codes >= cfg.model.z_dim:
        raise ConfigError(f"model.info_codes: {cfg.model.info_codes} must be 0 (off) or from 2 to model.z_dim - 1 "
                          f"= {cfg.model.z_dim - 1}: the code takes that many of G's noise values ({where})")
    if cfg.augment.ada and cfg.augment.p > cfg.augment.p_max:
        raise ConfigError(f"augment.p: ADA starts at {cfg.augment.p}, above augment.p_max={cfg.augment.p_max}, "
                          f"the most it may reach ({where})")
    if cfg.train.fp64 and cfg.train.mixed_precision != "no":
        raise ConfigError(f"train.fp64: cannot combine with train.mixed_precision={cfg.train.mixed_precision!r} ({where})")
    if cfg.loss.regularizer in ("gp", "r1") and cfg.model.d_norm == "batch":
        # BatchNorm mixes the samples of a batch, so D's gradient at one input depends on the others
        # and the per-sample gradient norm the penalty constrains is not defined (WGAN-GP, section 4).
        raise ConfigError(f"loss.regularizer: {cfg.loss.regularizer} penalises per-sample gradients, which "
                          f"model.d_norm=batch couples across the batch; use model.d_norm=layer or none ({where})")
    if cfg.perf.optimizer == "fused" and cfg.optim.name != "adam":
        raise ConfigError(f"perf.optimizer: torch has no fused {cfg.optim.name}; use perf.optimizer=foreach with "
                          f"optim.name={cfg.optim.name} ({where})")
    if cfg.model.arch == "resnet" and cfg.data.resolution not in (32, 64):
        raise ConfigError(f"model.arch: resnet supports data.resolution 32 or 64, not {cfg.data.resolution} ({where})")
    if cfg.data.source == "synthetic" and cfg.data.resolution not in (32, 64):
        raise ConfigError(f"data.resolution: the embedded dataset is made at 32 or 64 px, "
                          f"not {cfg.data.resolution} ({where})")
    try:
        parse_policy(cfg.loss.diffaugment)
    except ValueError as e:
        raise ConfigError(f"{e} ({where})") from None
    missing = [t for t in cfg.log.trackers if importlib.util.find_spec(t) is None]
    if missing:
        raise ConfigError(f"log.trackers: {', '.join(missing)} is not installed (pip install {' '.join(missing)}), "
                          f"or leave it out of log.trackers ({where})")
    if cfg.train.backend == "deepspeed":
        _check_deepspeed(cfg, where)
    if cfg.eval.metrics and check_files:  # (gandist-check looks for the file on every rank itself)
        try:
            check_weights(cfg.eval.feature_weights)
        except MetricError as e:
            raise ConfigError(f"{e} ({where})") from None


def _check_deepspeed(cfg: Config, where: str):
    if cfg.deepspeed.zero_stage == 3:
        raise ConfigError(f"deepspeed.zero_stage: {STAGE3_REFUSED} ({where})")
    if cfg.train.mixed_precision == "fp16":
        raise ConfigError(f"train.mixed_precision: {FP16_REFUSED} ({where})")
    if cfg.perf.compile:
        raise ConfigError(f"perf.compile: {COMPILE_REFUSED} ({where})")
    if cfg.deepspeed.config and not Path(cfg.deepspeed.config).is_file():
        raise ConfigError(f"deepspeed.config: {cfg.deepspeed.config} does not exist ({where})")
    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(f"train.backend: deepspeed needs DeepSpeed, which is not installed; install gandist's "
                          f"deepspeed extra: {EXTRA} ({where})")


def check_world_size(cfg: Config, world_size: int, elastic: list[int] = ()):
    """The global batch splits evenly over this world size and over every other one an elastic job may take;
    with dist.batch_per_process it is set here, to that times the world size (gandist/config/world.py)."""
    settle(cfg, world_size)
    if cfg.dist.batch_per_process:
        return  # any world size takes whole per-process batches
    if cfg.train.batch_size % world_size:
        raise ConfigError(f"train.batch_size: {cfg.train.batch_size} is not divisible by the world size "
                          f"{world_size}; the global batch is split evenly across processes")
    bad = [w for w in elastic if cfg.train.batch_size % w]
    if bad:
        raise ConfigError(f"train.batch_size: {cfg.train.batch_size} does not split over world size(s) "
                          f"{', '.join(map(str, bad))}, which this elastic job may take (GANDIST_ELASTIC_NODES x "
                          f"processes per node); choose one that every world size of {elastic} divides")


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def dump(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
