"""The metrics by name, as StyleGAN3's metric_main: each a function of features already extracted, registered
with the layer it reads, its scores and whether it needs the real set.  Light to import (no torch, no
torch-fidelity until a metric runs): gandist.config checks eval.metrics against it while loading.  The maths
is torch-fidelity's, but for density and coverage (Naeem et al. 2020), which it lacks.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable

from tqdm import tqdm

# torch-fidelity's names of InceptionV3's outputs; they live here because Options and the metrics name them
FEATURE_LAYERS = ("64", "192", "768", "2048")  # pool features FID/KID can use (pytorch-fid's --dims)
DEFAULT_FEATURE_LAYER = "2048"  # the layer of published FID/KID numbers
LOGITS = "logits_unbiased"  # the layer of the Inception Score
JUDGE_FEATURES = "judge_features"  # the judge's penultimate features (gandist/metrics/judge.py)
JUDGE_LOGITS = "judge_logits"  # the judge's class (or attribute) logits
LABELS = "labels"  # not a layer: the classes (or attributes) a conditional generator was asked for


class MetricError(ValueError):
    """An evaluation that cannot run as asked: unknown metric, missing weights file, too few images..."""


@dataclass(frozen=True)
class Options:
    """Settings the metric functions read.  kid_subset_size is capped by the set sizes."""
    feature_layer: str = DEFAULT_FEATURE_LAYER
    seed: int = 0  # torch-fidelity's rng_seed: IS split shuffling, KID subsets
    isc_splits: int = 10
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    nearest_k: int = 5  # k of the k-NN balls of precision, recall, density, coverage (Naeem et al. 2020's)
    judge_floor: float | None = None  # the judge's real-vs-real Frechet distance, for judge_fd_ratio
    judge_columns: tuple | None = None  # the judge's outputs of the run's attributes (attribute-conditional)


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[dict, dict | None, Options], dict]  # (generated features, real features or None, opts) -> scores
    needs_real: bool
    layer: Callable[[Options], str]  # the feature layer it reads (Inception's or the judge's)
    summary: str
    keys: tuple[str, ...]  # the scores it gives


_METRICS: dict[str, Metric] = {}


def register_metric(name: str, *, needs_real: bool, layer: Callable[[Options], str], summary: str,
                    keys: tuple[str, ...] = ()):
    def deco(fn):
        _METRICS[name] = Metric(name, fn, needs_real, layer, summary, keys or (name,))
        return fn
    return deco


def list_metrics() -> list[str]:
    return list(_METRICS)


def score_keys() -> list[str]:
    """Every score a registered metric gives (metrics.jsonl's keys, TensorBoard's scores group)."""
    return [k for m in _METRICS.values() for k in m.keys]


def uses_judge(names: Iterable[str]) -> bool:
    return any(_METRICS[n].layer(Options()) in (JUDGE_FEATURES, JUDGE_LOGITS) for n in check_metrics(list(names)))


def check_metrics(names: str | Iterable[str]) -> list[str]:
    """'fid,kid' or ['fid', 'kid'] -> the list of valid names (order kept, duplicates dropped)."""
    if isinstance(names, str):
        names = names.split(",")
    out = []
    for n in names:
        n = str(n).strip().lower()
        if not n or n in out:
            continue
        if n not in _METRICS:
            raise MetricError(f"unknown metric {n!r}: choose from {', '.join(_METRICS)}")
        out.append(n)
    if not out:
        raise MetricError(f"no metrics requested: choose from {', '.join(_METRICS)}")
    return out


def _need(features: dict, layer: str, what: str, at_least: int):
    f = features[layer]
    if len(f) < at_least:
        raise MetricError(f"{what}: needs at least {at_least}, got {len(f)}")
    return f


def _two_sets(fake: dict, real: dict, layer: str, name: str) -> tuple:
    """The generated and the real features of `layer`, two of each at least."""
    return (_need(fake, layer, f"{name} (generated images)", 2), _need(real, layer, f"{name} (real images)", 2))


def frechet(f1, f2) -> float:
    """The Frechet distance between Gaussians fitted to two (N, D) feature sets (torch-fidelity's FID maths)."""
    # deferred: torch-fidelity is heavy
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    value = fid_statistics_to_metric(fid_features_to_statistics(f1), fid_features_to_statistics(f2), False)
    return float(value[KEY_METRIC_FID])


@register_metric("fid", needs_real=True, layer=lambda o: o.feature_layer,
                 summary="Frechet Inception Distance to the real images (lower is better)")
def fid(fake: dict, real: dict, opts: Options) -> dict:
    return {"fid": frechet(*_two_sets(fake, real, opts.feature_layer, "fid"))}


@register_metric("isc", needs_real=False, layer=lambda o: LOGITS, keys=("isc", "isc_std"),
                 summary="Inception Score of the generated images (higher is better)")
def isc(fake: dict, real: dict | None, opts: Options) -> dict:
    # deferred: torch-fidelity is heavy
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    f = _need(fake, LOGITS, "isc (generated images)", 1)
    # isc_splits splits, but at least 2 images in each (a one-image split scores exactly 1)
    out = isc_features_to_metric(f, splits=min(opts.isc_splits, max(1, len(f) // 2)), shuffle=True,
                                 rng_seed=opts.seed)
    return {"isc": float(out[KEY_METRIC_ISC_MEAN]), "isc_std": float(out[KEY_METRIC_ISC_STD])}


@contextmanager
def _no_tqdm_monitor():
    """No tqdm monitor thread: tqdm starts one even for a disabled bar, and it lives until exit."""
    before = tqdm.monitor_interval
    tqdm.monitor_interval = 0
    try:
        yield
    finally:
        tqdm.monitor_interval = before


@register_metric("kid", needs_real=True, layer=lambda o: o.feature_layer, keys=("kid", "kid_std"),
                 summary="Kernel Inception Distance to the real images (lower is better; can be slightly < 0)")
def kid(fake: dict, real: dict, opts: Options) -> dict:
    # deferred: torch-fidelity is heavy
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    f1, f2 = _two_sets(fake, real, opts.feature_layer, "kid")
    size = min(opts.kid_subset_size, len(f1), len(f2))
    with _no_tqdm_monitor():  # its (disabled) tqdm bar would otherwise start tqdm's monitor thread, for good
        out = kid_features_to_metric(f1, f2, kid_subsets=opts.kid_subsets, kid_subset_size=size,
                                     rng_seed=opts.seed, verbose=False)
    return {"kid": float(out[KEY_METRIC_KID_MEAN]), "kid_std": float(out[KEY_METRIC_KID_STD])}


@register_metric("judge_fd", needs_real=True, layer=lambda o: JUDGE_FEATURES, keys=("judge_fd", "judge_fd_ratio"),
                 summary="Frechet distance in the judge's features to the real images, and its ratio to the "
                         "judge's real-vs-real floor (lower is better; 1 = as close as real images are)")
def judge_fd(fake: dict, real: dict, opts: Options) -> dict:
    value = frechet(*_two_sets(fake, real, JUDGE_FEATURES, "judge_fd"))
    out = {"judge_fd": value}
    if opts.judge_floor:
        out["judge_fd_ratio"] = value / opts.judge_floor
    return out


@register_metric("judge_acc", needs_real=False, layer=lambda o: JUDGE_LOGITS,
                 summary="the judge's accuracy on generated images against the class (or attributes) asked for; "
                         "conditional runs (higher is better; compare with the judge's accuracy on real images)")
def judge_acc(fake: dict, real: dict | None, opts: Options) -> dict:
    logits = _need(fake, JUDGE_LOGITS, "judge_acc (generated images)", 1)
    asked = fake.get(LABELS)
    if asked is None or len(asked) != len(logits):
        raise MetricError("judge_acc: needs the labels the generated images were asked for (a conditional run)")
    if opts.judge_columns is not None:  # attributes: the mean over them of the right-side-of-zero rate
        hit = (logits[:, list(opts.judge_columns)] > 0) == (asked > 0)
    else:
        hit = logits.argmax(1) == asked.long()
    return {"judge_acc": float(hit.float().mean())}


@register_metric("judge_mix", needs_real=True, layer=lambda o: JUDGE_LOGITS,
                 summary="how far the mix of classes the judge sees in generated images is from the real images' "
                         "(total variation distance, 0 = the same mix, 1 = no class in common; for attributes, "
                         "the mean gap in each attribute's rate): an unconditional run's class balance")
def judge_mix(fake: dict, real: dict, opts: Options) -> dict:
    # A judge's features weigh the class mix heavily: an unconditional run that draws some digits twice as often
    # as others scores a judge FD several times the floor even when every sample is a clean digit.
    import torch

    f, r = _two_sets(fake, real, JUDGE_LOGITS, "judge_mix")
    if opts.judge_columns is not None:
        cols = list(opts.judge_columns)
        return {"judge_mix": float(((f[:, cols] > 0).double().mean(0) - (r[:, cols] > 0).double().mean(0))
                                   .abs().mean())}
    k = f.shape[1]
    p, q = (torch.bincount(x.argmax(1), minlength=k).double() / len(x) for x in (f, r))
    return {"judge_mix": float(0.5 * (p - q).abs().sum())}


EXACT = "donot_use_mm_for_euclid_dist"  # symmetric to the bit: a sample on a ball's rim is inside it from both sides


def knn_radii(f, k: int, chunk: int = 4096):
    """Each row's distance to its k-th nearest other row (the radius of its k-NN ball)."""
    # deferred: torch is not imported by this module at load
    import torch

    return torch.cat([torch.cdist(c, f, compute_mode=EXACT).kthvalue(k + 1, dim=1).values for c in f.split(chunk)])


def density_coverage(fake, real, k: int, chunk: int = 4096) -> tuple[float, float]:
    """Naeem et al. 2020: density = real k-NN balls holding each fake, over k (about 1 when matched); coverage =
    share of reals whose k-NN ball holds a fake."""
    import torch

    radii = knn_radii(real, k, chunk)
    inside = 0
    nearest = torch.full((len(real),), float("inf"))
    for c in fake.split(chunk):
        d = torch.cdist(c, real, compute_mode=EXACT)
        inside += int((d <= radii).sum())
        nearest = torch.minimum(nearest, d.min(0).values)
    return inside / (k * len(fake)), float((nearest <= radii).float().mean())


@register_metric("prdc", needs_real=True, layer=lambda o: JUDGE_FEATURES,
                 keys=("precision", "recall", "density", "coverage"),
                 summary="precision and recall (Kynkaanniemi et al. 2019), density and coverage (Naeem et al. 2020) "
                         "in the judge's features, k = 5 nearest neighbours (higher is better; about 1 for real "
                         "images)")
def prdc(fake: dict, real: dict, opts: Options) -> dict:
    # deferred: torch-fidelity is heavy
    from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

    k = opts.nearest_k
    f1 = _need(fake, JUDGE_FEATURES, "prdc (generated images)", k + 1).float()
    f2 = _need(real, JUDGE_FEATURES, "prdc (real images)", k + 1).float()
    pr = prc_features_to_metric(f1, f2, prc_neighborhood=k, prc_batch_size=4096, save_cpu_ram=True, verbose=False)
    density, coverage = density_coverage(f1, f2, k)
    return {"precision": float(pr[KEY_METRIC_PRECISION]), "recall": float(pr[KEY_METRIC_RECALL]),
            "density": density, "coverage": coverage}


def compute(names: Iterable[str], fake: dict, real: dict | None, opts: Options = Options()) -> dict[str, float]:
    """Scores of the named metrics from feature dicts ({layer: (N, D) float tensor}) already extracted."""
    out = {}
    for n in check_metrics(list(names)):
        m = _METRICS[n]
        if m.needs_real and real is None:
            raise MetricError(f"{n}: needs the real images' features")
        out.update(m.fn(fake, real, opts))
    return out


def layers_for(names: Iterable[str], opts: Options) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(Inception layers the generated set needs, layers the real set needs) for these metrics."""
    ms = [_METRICS[n] for n in check_metrics(list(names))]
    fake = tuple(dict.fromkeys(m.layer(opts) for m in ms))
    real = tuple(dict.fromkeys(m.layer(opts) for m in ms if m.needs_real))
    return fake, real
