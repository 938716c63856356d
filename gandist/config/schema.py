"""The typed config schema: the single home of every default, with its help, allowed values and range.

Every key of a run's config is a field of the dataclasses here, declared with `_f`: its default (DCGAN's,
Radford et al. 2016), its help text, and its allowed values (a tuple, or a function reading a registry --
losses, regularisers, metrics, variants -- that may grow after import) or its range.  Nothing else holds a
default: gandist/config/load.py builds, loads and checks a Config from these, and gandist/config/help.py prints
their help.  `allowed` reads a field's allowed values back.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from gandist.metrics.registry import FEATURE_LAYERS, list_metrics
from gandist.objective.ada import PIPELINE
from gandist.objective.augment import POLICIES
from gandist.objective.losses import ADVERSARIAL
from gandist.objective.regularizers import REGULARIZERS
from gandist.variants import VARIANTS


def _f(default, *, choices=None, min=None, max=None, help="", factory=None):
    """A config field.  choices: the allowed values (for a list, of each item), or a function returning
    them when they come from a registry that may grow after this module is imported."""
    meta = {"choices": choices, "min": min, "max": max, "help": help}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def allowed(f: dataclasses.Field) -> tuple | None:
    """A field's allowed values (of each item, for a list), or None when any value of its type goes."""
    choices = f.metadata.get("choices")
    return tuple(choices()) if callable(choices) else choices


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
    info_codes: int = _f(0, min=0, help="InfoGAN's categorical code (Chen et al. 2016): G's first info_codes noise "
                                        "values become a one-hot code of that many classes and D predicts it "
                                        "(loss.info_weight); unsupervised, e.g. 10 on MNIST evens out the class "
                                        "mix; 0 = off")
    sync_bn: bool | None = _f(None, help="synchronise BatchNorm across processes; null = on when world size > 1")


@dataclass
class LossConfig:
    adversarial: str = _f("bce", choices=lambda: tuple(ADVERSARIAL),
                          help="what D and G minimise: bce (non-saturating), wasserstein (a critic), hinge; "
                               "registered in gandist/objective/losses.py")
    regularizer: str = _f("none", choices=lambda: tuple(REGULARIZERS),
                          help="D's regulariser: gp (WGAN-GP penalty), r1, clip (WGAN weight clipping); "
                               "registered in gandist/objective/regularizers.py")
    gp_weight: float = _f(10.0, min=0.0, help="lambda of the WGAN-GP gradient penalty")
    info_weight: float = _f(1.0, min=0.0, help="weight of InfoGAN's code cross-entropy in D's and G's losses "
                                               "(with model.info_codes; the paper's lambda = 1)")
    clip: float = _f(0.01, min=0.0, help="weight-clipping bound c for wgan")
    r1_gamma: float = _f(10.0, min=0.0, help="gamma of the R1 penalty (gamma/2 E||grad D(real)||^2)")
    instance_noise: float = _f(0.0, min=0.0, help="std of Gaussian noise on D's inputs, annealed linearly to 0")
    instance_noise_steps: int = _f(0, min=0, help="steps over which instance noise anneals; 0 = train.steps")
    diffaugment: str = _f("", help=f"DiffAugment on everything D sees: a comma list of {','.join(POLICIES)}; "
                                   f"empty = off")


@dataclass
class AugmentConfig:
    """ADA (Karras et al. 2020): augmentations applied with probability p to every image D sees
    (gandist/objective/ada.py)."""
    ada: bool = _f(False, help="adapt p at log steps so that r_t = E[sign(D(real))] stays near augment.target "
                               "(D overfits when r_t nears 1); off: p stays at augment.p")
    p: float = _f(0.0, min=0.0, max=1.0, help="the probability of each augmentation: the start value with ada, "
                                             "else fixed; 0 with ada off = no augmentation")
    target: float = _f(0.6, min=0.0, max=1.0, help="the r_t that ADA steers toward (0.6 in the paper)")
    p_max: float = _f(1.0, min=0.0, max=1.0, help="the most that ADA may raise p to: the paper finds its "
                                                  "augmentations leak into G's images above p ~ 0.8")
    kimg: float = _f(500.0, min=0.001, help="thousands of real images over which p can go from 0 to 1 (the paper's "
                                            "500; short runs on small sets want less, e.g. 20)")
    pipeline: list = _f(None, factory=lambda: list(PIPELINE), choices=PIPELINE,
                        help="the augmentations, each gated by p: xflip, rotate90 (multiples of 90 degrees), "
                             "translation (integer, up to 1/8 of the size), color (brightness, contrast, saturation)")


@dataclass
class HealthConfig:
    """Warnings, at log steps, when training goes wrong, each naming the keys to try (gandist/training/health.py)."""
    warmup: int = _f(500, min=0, help="steps before the checks start: a DCGAN's D often wins outright in its first "
                                      "few hundred steps (accuracy 1, loss_g climbing) before G catches up")
    patience: int = _f(3, min=1, help="log steps in a row a condition must hold to be reported")
    d_accuracy: float = _f(0.95, min=0.0, max=1.0, help="D overpowering G: D's accuracy on real and fake at or above "
                                                       "this while G's loss climbs")
    r_t_max: float = _f(0.9, min=-1.0, max=1.0, help="D overfitting: r_t = E[sign(D(real))] on training reals at or "
                                                     "above this")
    heldout_urls: str = _f("", help="shards of real images the GAN never trains on (e.g. a split left out of "
                                    "data.urls): D scores a batch of them at log steps; empty = no held-out check")
    gap_max: float = _f(0.3, min=0.0, max=2.0, help="D overfitting: r_t on training reals minus r_t on held-out reals "
                                                   "at or above this")
    diversity_min: float = _f(0.1, min=0.0, help="mode collapse: the fakes' mean pairwise pixel distance over the "
                                                 "reals' below this")


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
    label_key: str = _f("cls", choices=("cls", "attr", "cluster"),
                        help="cls for class labels, attr for CelebA attributes, cluster for the k-means clusters of "
                             "gandist-prepare --clusters K (conditions a GAN of unlabelled data on them; "
                             "data.num_classes=K)")
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
    batch_size: int = _f(64, min=1, help="global batch: each of N processes takes batch_size/N "
                                          "(dist.batch_per_process sets it instead)")
    mixed_precision: str = _f("no", choices=("no", "bf16", "fp16"), help="autocast precision (fp16 needs a GPU)")
    fp16_init_scale: float = _f(65536.0, min=1.0, help="initial loss scale of fp16's GradScaler")
    resume: str = _f("auto", help="auto | no | PATH to a checkpoint directory")
    overwrite: bool = _f(False, help="with resume=no, allow a run directory that holds checkpoints")
    max_bad_steps: int = _f(10, min=1, help="non-finite D steps, or G steps, in a row (each counted "
                                                   "separately) before the run stops")
    log_every: int = _f(10, min=1, help="steps between metrics.jsonl rows")
    sample_every: int = _f(200, min=1, help="steps between sample grids")
    timeout_s: int = _f(600, min=1, help="process-group timeout: a collective that waits longer fails (keep it "
                                         "above the longest save or evaluation)")
    hang_timeout_s: float = _f(90.0, min=1.0, help="a rank whose training makes no progress this long (outside a save, "
                               "an evaluation or the start-up, which have budgets of their own), or whose process "
                               "is silent this long, is named and ended, and the others stop, so that an elastic "
                               "launcher restarts without it (gandist/liveness.py)")
    eval_timeout_s: float = _f(1800.0, min=1.0, help="seconds an evaluation (eval.every) may take before its rank "
                               "counts as stalled; the save's budget is sized from the measured save time")
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
    """Read with train.backend=deepspeed only; they build the DeepSpeed config (backends/zero/engines.py)."""
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
class DistConfig:
    """Levers that cut what crosses slow links between nodes, each giving up something (README, Scaling out).
    The defaults are the exact path: results do not depend on the world size; a run with any lever on says so
    in its start-up panel, and loses world-size invariance (and bit-exact resume at another world size)."""
    comm_hook: str = _f("none", choices=("none", "bf16", "fp16", "powersgd"),
                        help="DDP's gradient compression (torch's comm hooks, through accelerate): bf16/fp16 halve the "
                             "bytes and round the averaged gradients; powersgd sends a low-rank approximation with "
                             "error feedback; none = exact fp32 all-reduce")
    powersgd_rank: int = _f(1, min=1, help="PowerSGD's matrix approximation rank: higher sends more, errs less")
    powersgd_start: int = _f(10, min=2, help="backward passes of each net reduced exactly before PowerSGD starts")
    bucket_mb: float = _f(25.0, min=0.01, help="DDP's gradient bucket cap in MB: smaller buckets start sending "
                                               "earlier in the backward, each costs a collective's latency")
    gradient_as_bucket_view: bool = _f(False, help="gradients alias DDP's buckets (saves a copy and its memory)")
    static_graph: bool = _f(False, help="DDP's static_graph: the same parameters take part every step")
    bn_scope: str = _f("world", choices=("world", "node"),
                       help="what model.sync_bn synchronises: every process, or the processes of one node (a "
                            "process group per node: no BatchNorm traffic between nodes, the statistics of a "
                            "node's batch); model.sync_bn=false synchronises none")
    batch_per_process: int = _f(0, min=0, help="0: train.batch_size is the global batch, split over the processes "
                                               "(the exact path); n > 0: each process takes n samples, so the global "
                                               "batch (train.batch_size, set from this at start) grows to n x world "
                                               "size, and both lrs are scaled by dist.lr_scaling")
    lr_scaling: str = _f("sqrt", choices=("none", "linear", "sqrt"),
                         help="with dist.batch_per_process: the lrs as given are one process's; k processes multiply "
                              "them by sqrt(k) (Adam's rule, Malladi et al. 2022), k (SGD's, Goyal et al. 2017), or "
                              "leave them (BigGAN kept its lrs from batch 256 to 2048)")


@dataclass
class CheckpointConfig:
    every: int = _f(500, min=1, help="steps between checkpoints (also at the end and on a stop signal)")
    keep: int = _f(2, min=1, help="newest checkpoints kept")
    every_minutes: float = _f(0.0, min=0.0, help="also checkpoint when this many minutes have passed since the "
                              "last save (agreed at a log step); 0 = by steps only. Rule: about sqrt(2 x save time "
                              "x mean time between failures)")


@dataclass
class LogConfig:
    trackers: list = _f(None, factory=lambda: ["tensorboard"], choices=("tensorboard", "wandb"),
                        help="where logged values and sample grids also go: tensorboard writes event files into "
                             "<output.dir>/ itself (one run per run directory, with its hyperparameters); wandb "
                             "(accelerate's tracker) needs `pip install wandb`; [] = none")
    progress: bool = _f(True, help="rich progress bar on rank 0")
    grid_size: int = _f(64, min=1, help="images in each sample grid; a class-conditional grid has one class "
                                        "per row, so it is rounded up to whole rows")


@dataclass
class EvalConfig:
    metrics: list = _f(None, factory=list, choices=lambda: tuple(list_metrics()),
                       help="metrics to evaluate during and at the end of training, e.g. [fid, kid], or the judge's "
                            "[judge_fd, judge_acc, prdc] (with eval.judge); empty = none")
    every: int = _f(0, min=0, help="steps between evaluations; 0 = only at the end if metrics are set")
    num_samples: int = _f(10000, min=1, help="generated images per evaluation, and at most as many real ones")
    feature_weights: str = _f("", help="torch-fidelity Inception weights file; empty = its default download")
    feature_layer: int = _f(2048, choices=tuple(int(n) for n in FEATURE_LAYERS),
                            help="Inception features for FID/KID: 2048 gives published numbers; fewer suit few samples")
    judge: str = _f("", help="the judge file (gandist-judge) that judge_fd, judge_acc and prdc read; needed by them")
    real_urls: str = _f("", help="shard pattern(s) of the real images metrics compare with, e.g. a held-out split "
                                 "the GAN never trains on; empty = data.urls")


@dataclass
class OutputConfig:
    dir: str = _f("runs/quickstart", help="the run directory: config, metrics, samples, checkpoints, final weights")
    lock_stale_s: float = _f(300.0, min=2.0, help="a run holds <dir>/lock.json, refreshed every few seconds; a lock "
                             "not refreshed for this long is taken over (its holder on another host is taken for lost)")


@dataclass
class Config:
    variant: str = _f("dcgan", choices=lambda: tuple(VARIANTS),
                      help="a preset of parts (gandist/variants/<name>.py) applied beneath the file and overrides")
    model: ModelConfig = _f(None, factory=ModelConfig)
    loss: LossConfig = _f(None, factory=LossConfig)
    augment: AugmentConfig = _f(None, factory=AugmentConfig)
    health: HealthConfig = _f(None, factory=HealthConfig)
    optim: OptimConfig = _f(None, factory=OptimConfig)
    data: DataConfig = _f(None, factory=DataConfig)
    train: TrainConfig = _f(None, factory=TrainConfig)
    perf: PerfConfig = _f(None, factory=PerfConfig)
    deepspeed: DeepSpeedConfig = _f(None, factory=DeepSpeedConfig)
    dist: DistConfig = _f(None, factory=DistConfig)
    checkpoint: CheckpointConfig = _f(None, factory=CheckpointConfig)
    log: LogConfig = _f(None, factory=LogConfig)
    eval: EvalConfig = _f(None, factory=EvalConfig)
    output: OutputConfig = _f(None, factory=OutputConfig)

    @property
    def reuses_fakes(self) -> bool:
        """G's step scores the fakes D's step just made (one G forward a round, as PyTorch's DCGAN example):
        perf.reuse_fakes, where a round is one D step and one G step."""
        return self.perf.reuse_fakes and self.optim.n_critic == 1 and self.optim.g_steps == 1

    @property
    def label_dim(self) -> int:
        """Width of the conditioning label: class count, or the number of chosen binary attributes (derived from
        the keys above, so it is a property: the nets and metrics read it without importing gandist.config)."""
        if self.model.conditioning == "none":
            return 0
        return len(self.data.attributes) if self.data.attributes else self.data.num_classes
