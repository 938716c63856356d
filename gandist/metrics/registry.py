"""The metrics by name (in the manner of StyleGAN3's metric_main): each is a function of Inception
features already extracted, registered with the layer it reads and whether it needs the real set.

Light to import on purpose: gandist.config checks `eval.metrics` against `list_metrics()` when it loads
a config, so this module imports neither torch-fidelity (the metric functions do, when they run) nor
torch nor anything of gandist's.

The maths is torch-fidelity's (`fid_features_to_statistics`/`fid_statistics_to_metric`,
`isc_features_to_metric`, `kid_features_to_metric`); gandist only chooses the features and the settings.
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


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[dict, dict | None, Options], dict]  # (generated features, real features or None, opts) -> scores
    needs_real: bool
    layer: Callable[[Options], str]  # the Inception layer it reads
    summary: str


_METRICS: dict[str, Metric] = {}


def register_metric(name: str, *, needs_real: bool, layer: Callable[[Options], str], summary: str):
    def deco(fn):
        _METRICS[name] = Metric(name, fn, needs_real, layer, summary)
        return fn
    return deco


def list_metrics() -> list[str]:
    return list(_METRICS)


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


def _two_sets(fake: dict, real: dict, opts: Options, name: str) -> tuple:
    """The generated and the real features of the FID/KID layer, two of each at least."""
    return (_need(fake, opts.feature_layer, f"{name} (generated images)", 2),
            _need(real, opts.feature_layer, f"{name} (real images)", 2))


@register_metric("fid", needs_real=True, layer=lambda o: o.feature_layer,
                 summary="Frechet Inception Distance to the real images (lower is better)")
def fid(fake: dict, real: dict, opts: Options) -> dict:
    # deferred: torch-fidelity is heavy
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    f1, f2 = _two_sets(fake, real, opts, "fid")
    value = fid_statistics_to_metric(fid_features_to_statistics(f1), fid_features_to_statistics(f2), False)
    return {"fid": float(value[KEY_METRIC_FID])}


@register_metric("isc", needs_real=False, layer=lambda o: LOGITS,
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
    """tqdm starts a monitor thread (a daemon that lives until the interpreter exits) for every bar, even a
    disabled one; monitor_interval = 0 is tqdm's switch for not starting it."""
    before = tqdm.monitor_interval
    tqdm.monitor_interval = 0
    try:
        yield
    finally:
        tqdm.monitor_interval = before


@register_metric("kid", needs_real=True, layer=lambda o: o.feature_layer,
                 summary="Kernel Inception Distance to the real images (lower is better; can be slightly < 0)")
def kid(fake: dict, real: dict, opts: Options) -> dict:
    # deferred: torch-fidelity is heavy
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    f1, f2 = _two_sets(fake, real, opts, "kid")
    size = min(opts.kid_subset_size, len(f1), len(f2))
    with _no_tqdm_monitor():  # its (disabled) tqdm bar would otherwise start tqdm's monitor thread, for good
        out = kid_features_to_metric(f1, f2, kid_subsets=opts.kid_subsets, kid_subset_size=size,
                                     rng_seed=opts.seed, verbose=False)
    return {"kid": float(out[KEY_METRIC_KID_MEAN]), "kid_std": float(out[KEY_METRIC_KID_STD])}


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
