"""The typed run configuration: the one home of every default.

A run's config is built in four layers, each overriding the one before:

    dataclass defaults  <  the variant's preset  <  the YAML file  <  key=value overrides

The defaults are DCGAN's (Radford et al. 2016); a variant's preset (gandist/variants/<name>.py) holds
only where that variant departs from them, as dotted keys, so choosing `variant=wgan_gp` on the
command line brings its architecture, loss and optimizer unless the file or the command line says
otherwise.  Every value is checked inside `load` -- its type, its range, its allowed values (those of
the loss, regulariser, augmentation and metric registries included) and its consistency with the
others -- before any work starts and before any file is touched; errors name the key and where it
came from.  `gandist-train --help-config [SECTION]` prints every key with its help (gandist/config_help.py).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gandist.augment import POLICIES, parse_policy
from gandist.losses import ADVERSARIAL
from gandist.metrics.inception import check_weights
from gandist.metrics.registry import FEATURE_LAYERS, MetricError, list_metrics
from gandist.regularizers import REGULARIZERS
from gandist.variants import VARIANTS
from gandist.zero_limits import COMPILE_REFUSED, EXTRA, FP16_REFUSED, STAGE3_REFUSED


class ConfigError(ValueError):
    """A config value that is unknown, of the wrong type, or out of range."""


def _f(default, *, choices=None, min=None, max=None, help="", factory=None):
    """A config field.  choices: the allowed values (for a list, of each item), or a function returning
    them when they come from a registry that may grow after this module is imported."""
    meta = {"choices": choices, "min": min, "max": max, "help": help}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    arch: str = _f("dcgan", choices=("mlp", "dcgan", "resnet"), help="network family for G and D")
    z_dim: int = _f(100, min=1, help="size of G's noise vector z")
    g_width: int = _f(64, min=1, help="width unit of G: DCGAN's last hidden layer has g_width channels, "
                                       "ResNet's blocks 2 x g_width, the MLP's widest layer 16 x g_width units")
    d_width: int = _f(64, min=1, help="width unit of D, as g_width is G's")
    g_norm: str = _f("batch", choices=("batch", "none"), help="normalisation in G's hidden layers")
    d_norm: str = _f("batch", choices=("batch", "layer", "none"),
                     help="normalisation in D's hidden layers; layer (per sample) for a gradient penalty")
    spectral_norm: bool = _f(False, help="spectral normalisation on every D layer (SNGAN)")
    conditioning: str = _f("none", choices=("none", "concat", "projection"),
                           help="how labels enter G and D; projection applies to D, G uses concat")
    sync_bn: bool | None = _f(None, help="synchronise BatchNorm across processes; null = on when world size > 1")


@dataclass
class LossConfig:
    adversarial: str = _f("bce", choices=lambda: tuple(ADVERSARIAL),
                          help="what D and G minimise: bce (non-saturating), wasserstein (a critic), hinge; "
                               "registered in gandist/losses.py")
    regularizer: str = _f("none", choices=lambda: tuple(REGULARIZERS),
                          help="D's regulariser: gp (WGAN-GP penalty), r1, clip (WGAN weight clipping); "
                               "registered in gandist/regularizers.py")
    gp_weight: float = _f(10.0, min=0.0, help="lambda of the WGAN-GP gradient penalty")
    clip: float = _f(0.01, min=0.0, help="weight-clipping bound c for wgan")
    r1_gamma: float = _f(10.0, min=0.0, help="gamma of the R1 penalty (gamma/2 E||grad D(real)||^2)")
    instance_noise: float = _f(0.0, min=0.0, help="std of Gaussian noise on D's inputs, annealed linearly to 0")
    instance_noise_steps: int = _f(0, min=0, help="steps over which instance noise anneals; 0 = train.steps")
    diffaugment: str = _f("", help=f"DiffAugment on everything D sees: a comma list of {','.join(POLICIES)}; "
                                   f"empty = off")


@dataclass
class OptimConfig:
    name: str = _f("adam", choices=("adam", "rmsprop"), help="optimizer of G and of D")
    lr_g: float = _f(2e-4, min=0.0, help="G's learning rate")
    lr_d: float = _f(2e-4, min=0.0, help="D's learning rate")
    beta1: float = _f(0.5, min=0.0, max=1.0, help="Adam's beta1")
    beta2: float = _f(0.999, min=0.0, max=1.0, help="Adam's beta2")
    lr_decay: str = _f("none", choices=("none", "linear"),
                       help="linear: both lrs fall linearly to 0 at train.steps (the WGAN-GP ResNet recipe)")
    n_critic: int = _f(1, min=1, help="D steps per G step")
    g_steps: int = _f(1, min=1, help="G steps per D round (vanilla GAN keeps D from overpowering G)")
    ema: float = _f(0.0, min=0.0, max=1.0, help="decay of G's exponential moving average; 0 = off")
    ema_start: int = _f(0, min=0, help="step before which the EMA just copies G")
    ema_bn_samples: int = _f(1024, min=1, help="noise samples whose statistics become the EMA generator's "
                                               "BatchNorm statistics before each use")


@dataclass
class DataConfig:
    source: str = _f("synthetic", choices=("synthetic", "shards"),
                     help="synthetic: the embedded dataset (no download); shards: WebDataset shards at data.urls")
    resolution: int = _f(32, choices=(28, 32, 64, 128), help="image size in pixels (square)")
    channels: int = _f(3, choices=(1, 3), help="1 (grey) or 3 (RGB)")
    num_classes: int = _f(10, min=0, help="labels for conditional variants; 0 = unconditional data")
    synthetic_size: int = _f(20000, min=1, help="images in the embedded dataset")
    synthetic_seed: int = _f(0, help="the embedded dataset's own seed (independent of train.seed)")
    urls: str = _f("", help="shard pattern(s): brace ranges, http(s)://, pipe:; ';' separates several")
    label_key: str = _f("cls", choices=("cls", "attr"), help="cls for class labels, attr for CelebA attributes")
    attributes: list = _f(None, factory=list, help="CelebA attribute names to condition on")
    workers: int = _f(2, min=0, help="DataLoader worker processes per rank reading shards; part of the data order "
                                     "(a worker reads its own shards), so it is set, not sized to the machine")
    prefetch: int = _f(4, min=1, help="batches each shard-reading worker keeps ready (DataLoader prefetch_factor)")
    cache_dir: str = _f("", help="local shard cache for remote urls; empty = no cache")
    shuffle_buffer: int = _f(1000, min=0, help="samples each worker shuffles through")


@dataclass
class TrainConfig:
    steps: int = _f(2000, min=1, help="G steps")
    seed: int = _f(0, help="seed of the initial weights and of every random draw")
    batch_size: int = _f(64, min=1, help="global batch: each of N processes takes batch_size/N")
    mixed_precision: str = _f("no", choices=("no", "bf16", "fp16"), help="autocast precision (fp16 needs a GPU)")
    fp16_init_scale: float = _f(65536.0, min=1.0, help="initial loss scale of fp16's GradScaler")
    resume: str = _f("auto", help="auto | no | PATH to a checkpoint directory")
    overwrite: bool = _f(False, help="with resume=no, allow a run directory that holds checkpoints")
    max_bad_steps: int = _f(10, min=1, help="non-finite D steps, or G steps, in a row (each counted "
                                                   "separately) before the run stops")
    log_every: int = _f(10, min=1, help="steps between metrics.jsonl rows")
    sample_every: int = _f(200, min=1, help="steps between sample grids")
    timeout_s: int = _f(600, min=1, help="process-group timeout: a dead rank makes the others fail after this")
    device: str = _f("auto", choices=("auto", "cpu", "cuda"), help="auto: the GPU when there is one")
    fp64: bool = _f(False, help="train in float64: for numerical checks (world-size invariance), slow")
    backend: str = _f("ddp", choices=("ddp", "deepspeed"),
                      help="ddp: accelerate's DistributedDataParallel; deepspeed: one DeepSpeed ZeRO engine each for "
                           "G and D (the deepspeed section; needs the deepspeed extra)")


@dataclass
class PerfConfig:
    """The fast paths: each changes how fast a step runs, not what it computes (beyond rounding); the defaults
    are chosen from `python -m gandist.bench train` measurements (README, Performance)."""
    optimizer: str | None = _f(None, choices=("fused", "foreach", "for-loop", None),
                               help="torch's optimizer implementation; fused also takes the non-finite guard's "
                                    "verdict on the device, with no host sync (the others read it on the host before "
                                    "each step); null = fused for Adam, foreach for RMSprop (torch has no fused one)")
    channels_last: bool | None = _f(True, help="NHWC memory format for G, D and the images (faster convolutions on CPU "
                                                "and GPU); null = on with a GPU")
    noise_on_device: bool | None = _f(None, help="make the random draws on the training device (the same bits as "
                                                  "on the CPU, no host-to-device copy); null = on with a GPU")
    pin_memory: bool | None = _f(None, help="shard batches in page-locked memory, copied to the GPU without "
                                            "blocking; null = on with a GPU")
    reuse_fakes: bool = _f(True, help="with optim.n_critic=1 and g_steps=1, G's step reuses the D step's fakes "
                                      "(one G forward a round, as PyTorch's DCGAN example); otherwise G draws anew")
    compile: bool = _f(False, help="torch.compile G and D's forward; D's gradient penalty (double backward, "
                                   "which inductor cannot do) runs D uncompiled")


@dataclass
class DeepSpeedConfig:
    """Read with train.backend=deepspeed only; they build the DeepSpeed config (gandist.zero.build_config)."""
    zero_stage: int = _f(1, choices=(0, 1, 2, 3), help="ZeRO stage: 0 plain data parallel, 1 optimizer state "
                                                        "partitioned across ranks, 2 and gradients; 3 is refused "
                                                        "(see the error it gives)")
    config: str = _f("", help="PATH to your own DeepSpeed JSON (e.g. launch/deepspeed_zero2.json); replaces the "
                              "other deepspeed keys; batch keys may be \"auto\"; empty = built from these keys")
    gradient_clipping: float = _f(0.0, min=0.0, help="max global gradient norm of each network; 0 = no clipping "
                                                      "(as on the ddp backend)")
    reduce_bucket_size: int = _f(500_000_000, min=1024, help="elements per gradient-reduction bucket (capped at the "
                                                              "network's size)")
    allgather_bucket_size: int = _f(500_000_000, min=1024, help="elements per weight all-gather bucket after a step "
                                                                 "(capped at the network's size)")
    overlap_comm: bool = _f(False, help="overlap gradient reduction with the backward (more bucket memory)")


@dataclass
class CheckpointConfig:
    every: int = _f(500, min=1, help="steps between checkpoints (also at the end and on a stop signal)")
    keep: int = _f(2, min=1, help="newest checkpoints kept")


@dataclass
class LogConfig:
    trackers: list = _f(None, factory=lambda: ["tensorboard"], choices=("tensorboard", "wandb"),
                        help="where logged values and sample grids also go (accelerate's trackers): tensorboard "
                             "writes <output.dir>/tensorboard/; wandb needs `pip install wandb`; [] = none")
    progress: bool = _f(True, help="rich progress bar on rank 0")
    grid_size: int = _f(64, min=1, help="images in each sample grid; a class-conditional grid has one class "
                                        "per row, so it is rounded up to whole rows")


@dataclass
class EvalConfig:
    metrics: list = _f(None, factory=list, choices=lambda: tuple(list_metrics()),
                       help="metrics to evaluate during and at the end of training, e.g. [fid, kid]; empty = none")
    every: int = _f(0, min=0, help="steps between evaluations; 0 = only at the end if metrics are set")
    num_samples: int = _f(10000, min=1, help="generated images per evaluation, and at most as many real ones")
    feature_weights: str = _f("", help="torch-fidelity Inception weights file; empty = its default download")
    feature_layer: int = _f(2048, choices=tuple(int(n) for n in FEATURE_LAYERS),
                            help="Inception features for FID/KID: 2048 gives published numbers; fewer suit few samples")


@dataclass
class OutputConfig:
    dir: str = _f("runs/quickstart", help="the run directory: config, metrics, samples, checkpoints, final weights")


@dataclass
class Config:
    variant: str = _f("dcgan", choices=lambda: tuple(VARIANTS),
                      help="a preset of parts (gandist/variants/<name>.py) applied beneath the file and overrides")
    model: ModelConfig = _f(None, factory=ModelConfig)
    loss: LossConfig = _f(None, factory=LossConfig)
    optim: OptimConfig = _f(None, factory=OptimConfig)
    data: DataConfig = _f(None, factory=DataConfig)
    train: TrainConfig = _f(None, factory=TrainConfig)
    perf: PerfConfig = _f(None, factory=PerfConfig)
    deepspeed: DeepSpeedConfig = _f(None, factory=DeepSpeedConfig)
    checkpoint: CheckpointConfig = _f(None, factory=CheckpointConfig)
    log: LogConfig = _f(None, factory=LogConfig)
    eval: EvalConfig = _f(None, factory=EvalConfig)
    output: OutputConfig = _f(None, factory=OutputConfig)


# ---------------------------------------------------------------------------------------------
# Loading and validation


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
            setattr(obj, part, _coerce(value, hints[part], dotted, where))
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
        m = f.metadata
        choices = allowed(f)
        bad = [v for v in (value if isinstance(value, list) else [value]) if choices and v not in choices]
        if bad:
            raise ConfigError(f"{key}: {bad[0]!r} is not one of {list(choices)} ({where})")
        if m.get("min") is not None and value < m["min"]:
            raise ConfigError(f"{key}: {value!r} is below its minimum {m['min']} ({where})")
        if m.get("max") is not None and value > m["max"]:
            raise ConfigError(f"{key}: {value!r} is above its maximum {m['max']} ({where})")


def allowed(f: dataclasses.Field) -> tuple | None:
    """A field's allowed values (of each item, for a list), or None when any value of its type goes."""
    choices = f.metadata.get("choices")
    return tuple(choices()) if callable(choices) else choices


def load(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build the run's Config from an optional YAML file and `key.sub=value` overrides, every key checked."""
    where_file = str(path) if path else "<no file>"
    file_values: dict = {}
    if path is not None:
        p = Path(path)
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
    _check_consistency(cfg, where_file)
    return cfg


def _check_consistency(cfg: Config, where: str):
    if cfg.data.source == "shards" and not cfg.data.urls:
        raise ConfigError(f"data.urls: data.source is 'shards' but no shard urls are given ({where})")
    if cfg.model.conditioning != "none" and cfg.data.num_classes == 0 and not cfg.data.attributes:
        raise ConfigError(f"model.conditioning: {cfg.model.conditioning!r} needs labels, "
                          f"but data.num_classes is 0 and data.attributes is empty ({where})")
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
    if cfg.eval.metrics:
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


def check_world_size(cfg: Config, world_size: int):
    if cfg.train.batch_size % world_size:
        raise ConfigError(f"train.batch_size: {cfg.train.batch_size} is not divisible by the world size "
                          f"{world_size}; the global batch is split evenly across processes")


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def dump(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def on_gpu(flag: bool | None, device) -> bool:
    """A perf flag whose null means: on when training on a GPU."""
    return device.type == "cuda" if flag is None else flag


def label_dim(cfg: Config) -> int:
    """Width of the conditioning label: class count, or the number of chosen binary attributes."""
    if cfg.model.conditioning == "none":
        return 0
    return len(cfg.data.attributes) if cfg.data.attributes else cfg.data.num_classes
