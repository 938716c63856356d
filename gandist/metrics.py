"""Evaluation metrics: FID, IS and KID, computed with torch-fidelity.

    from gandist.metrics import Evaluator
    evaluator = Evaluator(cfg, device, rank, world)   # once: loads Inception, reads nothing yet
    scores = evaluator(G_ema)                          # e.g. {"fid": 31.2, "kid": 0.021, "kid_std": 0.001}

What comes from torch-fidelity: the feature extractor (its InceptionV3 port of the TensorFlow
graph, `inception-v3-compat`, the one published FID/IS/KID numbers use; it takes uint8 N x 3 x H x W
images of any size and resizes them to 299 px itself) and the metric maths (its
`fid_features_to_statistics`/`fid_statistics_to_metric`, `isc_features_to_metric`,
`kid_features_to_metric`).  What gandist does itself is only the feeding: it passes uint8 batches
to the extractor instead of handing `torch_fidelity.calculate_metrics` a Dataset or a
GenerativeModelModuleWrapper, because

- the real images' features are computed once per Evaluator and reused at every periodic evaluation;
- shards stream (an iterable of batches, which calculate_metrics does not take);
- conditional generators get their labels from us (torch-fidelity's generative-model path draws labels
  with `np.int`, which numpy >= 1.24 no longer has), and the noise from gandist's seeded streams;
- every process of a distributed run takes its share of the images (see below).

The Inception weights: `eval.feature_weights` = a local weights file in torch-fidelity's format (a
torch.save'd state dict of FeatureExtractorInceptionV3), or empty for torch-fidelity's default download
(cached by torch.hub under $TORCH_HOME/hub/checkpoints).

The sets: the generated set is `num_samples` images from noise drawn globally from the stream
(train.seed, "eval") -- the same images at every evaluation of a run and for any number of processes --
with balanced class labels (image i has class i mod data.num_classes) for class-conditional models, and
the real set's attribute vectors (in order, repeated if needed) for attribute-conditional ones.  The
real set is the first `num_samples` images of the embedded dataset (all of them if it is smaller), or,
for shards, up to `num_samples` images read in shard order by `gandist.data.stream.eval_batches_for`.

Distributed: every rank generates and embeds its contiguous slice of the generated set and its share of
the real set; features are gathered to every rank, rank 0 computes the metrics and broadcasts them, so
all ranks return the same dict.  Every rank of the run must call the Evaluator together.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

FEATURE_EXTRACTOR = "inception-v3-compat"  # torch-fidelity's name for its InceptionV3
FEATURE_LAYERS = ("64", "192", "768", "2048")  # pool features FID/KID can use (pytorch-fid's --dims)
DEFAULT_FEATURE_LAYER = "2048"  # the layer of published FID/KID numbers
LOGITS = "logits_unbiased"  # torch-fidelity's layer for the Inception Score


class MetricError(ValueError):
    """An evaluation that cannot run as asked: unknown metric, missing weights file, too few images..."""


# -- the registry (name -> function), in the manner of StyleGAN3's metric_main ---------------------

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


def is_valid_metric(name: str) -> bool:
    return name in _METRICS


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


def _need(features: dict, layer: str, what: str, at_least: int) -> torch.Tensor:
    f = features[layer]
    if len(f) < at_least:
        raise MetricError(f"{what}: needs at least {at_least}, got {len(f)}")
    return f


@register_metric("fid", needs_real=True, layer=lambda o: o.feature_layer,
                 summary="Frechet Inception Distance to the real images (lower is better)")
def fid(fake: dict, real: dict, opts: Options) -> dict:
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    f1 = _need(fake, opts.feature_layer, "fid (generated images)", 2)
    f2 = _need(real, opts.feature_layer, "fid (real images)", 2)
    value = fid_statistics_to_metric(fid_features_to_statistics(f1), fid_features_to_statistics(f2), False)
    return {"fid": float(value[KEY_METRIC_FID])}


@register_metric("isc", needs_real=False, layer=lambda o: LOGITS,
                 summary="Inception Score of the generated images (higher is better)")
def isc(fake: dict, real: dict | None, opts: Options) -> dict:
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    f = _need(fake, LOGITS, "isc (generated images)", 1)
    # isc_splits splits, but at least 2 images in each (a one-image split scores exactly 1)
    out = isc_features_to_metric(f, splits=min(opts.isc_splits, max(1, len(f) // 2)), shuffle=True,
                                 rng_seed=opts.seed)
    return {"isc": float(out[KEY_METRIC_ISC_MEAN]), "isc_std": float(out[KEY_METRIC_ISC_STD])}


@register_metric("kid", needs_real=True, layer=lambda o: o.feature_layer,
                 summary="Kernel Inception Distance to the real images (lower is better; can be slightly < 0)")
def kid(fake: dict, real: dict, opts: Options) -> dict:
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    f1 = _need(fake, opts.feature_layer, "kid (generated images)", 2)
    f2 = _need(real, opts.feature_layer, "kid (real images)", 2)
    size = min(opts.kid_subset_size, len(f1), len(f2))
    out = kid_features_to_metric(f1, f2, kid_subsets=opts.kid_subsets, kid_subset_size=size, rng_seed=opts.seed,
                                 verbose=False)
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


# -- images and features -------------------------------------------------------------------------

def quantise(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 with the very operations save_grid (torchvision's save_image) uses for PNGs."""
    return (x.detach().float().clamp(-1, 1) * 0.5 + 0.5).mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def to_uint8_rgb(x: torch.Tensor) -> torch.Tensor:
    """Images for Inception: G's output in [-1, 1] (quantised exactly as save_grid writes PNGs) or uint8,
    1 or 3 channels -> uint8 (N, 3, H, W)."""
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise MetricError(f"expected images of shape (N, 1 or 3, H, W), got {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        x = quantise(x)
    return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x


def feature_extractor(layers: Iterable[str], weights: str | Path | None, device) -> torch.nn.Module:
    """torch-fidelity's InceptionV3 with the given output layers, on `device`.  weights: a local file in
    torch-fidelity's format, or None/'' for torch-fidelity's default download."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
    from torch_fidelity.utils import create_feature_extractor

    layers = list(dict.fromkeys(layers))
    bad = [l for l in layers if l not in (*FEATURE_LAYERS, LOGITS)]
    if bad:
        raise MetricError(f"unknown Inception feature layer(s) {bad}: choose from {', '.join(FEATURE_LAYERS)}")
    path = Path(weights) if weights else None
    if path is not None and not path.is_file():
        raise MetricError(f"eval.feature_weights: {path} does not exist (expected a torch-fidelity InceptionV3 "
                          f"weights file; leave eval.feature_weights empty to download torch-fidelity's own)")
    try:
        net = create_feature_extractor(FEATURE_EXTRACTOR, layers, cuda=False, verbose=False,
                                       feature_extractor_weights_path=str(path) if path else None)
    except Exception as e:
        detail = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        if path is not None:
            raise MetricError(f"eval.feature_weights: {path} is not a torch-fidelity InceptionV3 weights file "
                              f"({detail[:300]})") from e
        raise MetricError(f"could not get torch-fidelity's InceptionV3 weights from {URL_INCEPTION_V3} ({detail[:300]}); "
                          f"without internet access, copy that file here and set eval.feature_weights=PATH") from e
    return net.to(device)


@torch.no_grad()
def extract(net: torch.nn.Module, batches: Iterable[torch.Tensor], on_batch: Callable[[int], None] | None = None
            ) -> dict[str, torch.Tensor]:
    """Features {layer: (N, D) float32 CPU tensor} of image batches (any of to_uint8_rgb's inputs)."""
    device = next(net.parameters()).device
    layers = list(net.get_requested_features_list())
    parts: dict[str, list] = {k: [] for k in layers}
    for x in batches:
        x = to_uint8_rgb(x).to(device)
        for k, v in net.convert_features_tuple_to_dict(net(x)).items():
            parts[k].append(v.float().cpu())
        if on_batch is not None:
            on_batch(len(x))
    return {k: torch.cat(v) if v else torch.zeros(0, 0) for k, v in parts.items()}


# -- where the images come from -------------------------------------------------------------------

def share(n: int, rank: int, world: int) -> range:
    """This rank's contiguous slice of n items (sizes differ by at most one)."""
    return range(rank * n // world, (rank + 1) * n // world)


def real_batches(cfg, limit: int, rank: int = 0, world: int = 1, batch_size: int = 32
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """(uint8 images, labels) of this rank's share of the real set: the first `limit` images of the
    embedded dataset, or up to `limit` images of the shards in data.urls read in order."""
    d = cfg.data
    if d.source == "synthetic":
        from gandist.data.synthetic import SyntheticDataset

        ds = SyntheticDataset(d.synthetic_size, d.resolution, d.channels, d.synthetic_seed)
        rows = share(min(limit, len(ds)), rank, world)
        for i in range(rows.start, rows.stop, batch_size):
            items = [ds[j] for j in range(i, min(i + batch_size, rows.stop))]
            yield torch.stack([im for im, _ in items]), torch.tensor([lab for _, lab in items])
        return
    try:
        from gandist.data.stream import eval_batches_for
    except ImportError as e:
        raise MetricError(f"data.source=shards: evaluation needs gandist.data.stream.eval_batches_for, which is not "
                          f"available ({e})") from e
    quota = len(share(limit, rank, world))
    taken = 0
    for images, labels in eval_batches_for(cfg, rank, world, batch_size):
        if taken >= quota:
            break
        k = min(len(images), quota - taken)
        taken += k
        yield images[:k], (labels[:k] if labels is not None else None)


def eval_noise(cfg, n: int, seed: int | None = None) -> torch.Tensor:
    """The (n, z_dim) noise of the generated set: drawn globally, so any world size gets the same set."""
    from gandist.distributed import generator

    seed = cfg.train.seed if seed is None else seed
    return torch.randn(n, cfg.model.z_dim, generator=generator(seed, 0, "eval"))


def eval_conditions(cfg, n: int, real_labels: torch.Tensor | None) -> torch.Tensor | None:
    """G's condition vectors for the generated set: balanced classes (image i: class i mod num_classes),
    or the real set's attribute vectors in order (repeated), so attribute frequencies match the data."""
    from gandist.config import label_dim
    from gandist.data.source import condition

    ld = label_dim(cfg)
    if not ld:
        return None
    if not cfg.data.attributes:
        return torch.nn.functional.one_hot(torch.arange(n) % ld, ld).float()
    if real_labels is None or len(real_labels) == 0:
        raise MetricError("an attribute-conditioned generator is evaluated with the real set's attribute vectors, "
                          "but the real images came without attribute labels (data.label_key=attr)")
    idx = torch.arange(n) % len(real_labels)
    return condition(real_labels[idx], cfg).float()


# -- gathering across ranks -------------------------------------------------------------------------

def _distributed(world: int) -> bool:
    import torch.distributed as dist

    return world > 1 and dist.is_available() and dist.is_initialized()


def _gather(obj, world: int) -> list:
    """Every rank's obj, in rank order, on every rank."""
    if not _distributed(world):
        return [obj]
    import torch.distributed as dist

    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def _cat_features(parts: list[dict]) -> dict:
    keys = next((p.keys() for p in parts if p), ())
    return {k: torch.cat([p[k] for p in parts if len(p[k])]) if any(len(p[k]) for p in parts) else torch.zeros(0, 0)
            for k in keys}


def _broadcast(obj, world: int):
    if not _distributed(world):
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# -- the evaluator ----------------------------------------------------------------------------------

class Evaluator:
    """Computes `metrics` of a generator against the run's real data; holds Inception and the real
    set's features between calls.  All ranks of a distributed run construct and call it together.

    cfg: the run Config.  metrics/num_samples/feature_weights/feature_layer default to cfg.eval.*; feature_layer is
    the Inception layer for FID and KID ("2048" = published numbers; 64/192/768 for small sample counts,
    as pytorch-fid's --dims); seed defaults to train.seed; progress (rich, rank 0) defaults to
    cfg.log.progress."""

    def __init__(self, cfg, device, rank: int = 0, world: int = 1, *, metrics=None, num_samples: int | None = None,
                 feature_weights: str | None = None, feature_layer: str | int | None = None,
                 batch_size: int = 32, seed: int | None = None, progress: bool | None = None):
        self.cfg, self.device, self.rank, self.world = cfg, torch.device(device), rank, world
        self.metrics = check_metrics(cfg.eval.metrics if metrics is None else metrics)
        self.num_samples = int(cfg.eval.num_samples if num_samples is None else num_samples)
        if self.num_samples < 1:
            raise MetricError(f"eval.num_samples: must be at least 1, got {self.num_samples}")
        self.weights = cfg.eval.feature_weights if feature_weights is None else feature_weights
        if self.weights and not Path(self.weights).is_file():  # now, not hours later at the first evaluation
            raise MetricError(f"eval.feature_weights: {self.weights} does not exist (expected a torch-fidelity "
                              f"InceptionV3 weights file; leave it empty to download torch-fidelity's own)")
        feature_layer = cfg.eval.feature_layer if feature_layer is None else feature_layer
        if str(feature_layer) not in FEATURE_LAYERS:
            raise MetricError(f"feature layer {feature_layer!r}: choose from {', '.join(FEATURE_LAYERS)}")
        self.seed = cfg.train.seed if seed is None else seed
        self.opts = Options(feature_layer=str(feature_layer), seed=self.seed)
        self.batch_size = batch_size
        self.progress = cfg.log.progress if progress is None else progress
        self.fake_layers, self.real_layers = layers_for(self.metrics, self.opts)
        self._nets: dict[tuple, torch.nn.Module] = {}
        self._real: dict | None = None  # the real set's gathered features
        self._real_labels: torch.Tensor | None = None
        self._real_read = False
        self.real_count = 0

    def prepare(self) -> "Evaluator":
        """Load Inception and embed the real set now (a training run calls this before its first step, so
        a missing download or unreadable data stops it at once); otherwise the first call does it."""
        self._read_real()
        self._net(self.fake_layers)
        return self

    @property
    def main(self) -> bool:
        return self.rank == 0

    def print(self, *args):
        if self.main:
            from rich import get_console

            get_console().print(*args)

    def _net(self, layers: tuple) -> torch.nn.Module:
        if layers not in self._nets:
            if _distributed(self.world) and not self.weights:  # one download, then the other ranks read the cache
                problem = None
                if self.main:
                    try:
                        net = feature_extractor(layers, None, self.device)
                    except MetricError as e:
                        problem = str(e)
                problem = _broadcast(problem, self.world)  # the others do not wait forever for a failed rank 0
                if problem:
                    raise MetricError(problem if self.main else f"rank 0 could not load Inception: {problem}")
                if not self.main:
                    net = feature_extractor(layers, None, self.device)
            else:
                net = feature_extractor(layers, self.weights, self.device)
            self._nets[layers] = net
        return self._nets[layers]

    def _bar(self):
        from contextlib import nullcontext

        if not (self.main and self.progress):
            return nullcontext(None)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), transient=True, refresh_per_second=2)

    def _read_real(self):
        """The real set's features (for the metrics that need them) and labels, gathered from all ranks."""
        if self._real_read:
            return
        need_labels = bool(self.cfg.data.attributes) and self.cfg.model.conditioning != "none"
        if not self.real_layers and not need_labels:
            self._real_read = True
            return
        net = self._net(self.real_layers) if self.real_layers else None
        total = self.num_samples
        if self.cfg.data.source == "synthetic":
            total = min(total, self.cfg.data.synthetic_size)
        labels: list[torch.Tensor] = []

        def batches(on_batch=None):
            for images, lab in real_batches(self.cfg, self.num_samples, self.rank, self.world, self.batch_size):
                if lab is not None:
                    labels.append(lab)
                if net is None and on_batch:
                    on_batch(len(images))
                yield images

        with self._bar() as bar:
            task = bar.add_task("real images (Inception)" if net else "real labels", total=total) if bar else None
            step = (lambda k: bar.advance(task, k * self.world)) if bar else None
            if net is not None:
                feats = extract(net, batches(), step)
            else:
                feats = {}
                for _ in batches(step):
                    pass
        self._real = _cat_features(_gather(feats, self.world)) if net is not None else None
        mine = torch.cat(labels) if labels else None
        got = [t for t in _gather(mine, self.world) if t is not None]
        self._real_labels = torch.cat(got) if got else None
        self.real_count = len(next(iter(self._real.values()))) if self._real else (
            len(self._real_labels) if self._real_labels is not None else 0)
        if self.real_layers and self.real_count < 2:
            raise MetricError(f"found {self.real_count} real image(s) to compare with (data.source="
                              f"{self.cfg.data.source}); FID and KID need at least 2")
        self._real_read = True

    @torch.no_grad()
    def _generate(self, G) -> dict:
        n = self.num_samples
        rows = share(n, self.rank, self.world)
        z = eval_noise(self.cfg, n, self.seed)[rows.start:rows.stop]
        y = eval_conditions(self.cfg, n, self._real_labels)
        y = y[rows.start:rows.stop] if y is not None else None
        p = next(G.parameters())
        net = self._net(self.fake_layers)

        def batches():
            for i in range(0, len(z), self.batch_size):
                zi = z[i:i + self.batch_size].to(p.device, p.dtype)
                yi = y[i:i + self.batch_size].to(p.device, p.dtype) if y is not None else None
                yield G(zi, yi)

        was = G.training
        G.eval()
        try:
            with self._bar() as bar:
                task = bar.add_task("generated images (Inception)", total=n) if bar else None
                feats = extract(net, batches(), (lambda k: bar.advance(task, k * self.world)) if bar else None)
        finally:
            G.train(was)
        return _cat_features(_gather(feats, self.world))

    def __call__(self, G: torch.nn.Module) -> dict[str, float]:
        """Scores {fid, isc, isc_std, kid, kid_std (those requested)}, the same on every rank.  G: the
        generator itself (not a DDP wrapper): its eval-mode output is used and its mode restored."""
        self._read_real()
        fake = self._generate(G)
        result = None
        if self.main:
            try:
                result = compute(self.metrics, fake, self._real, self.opts)
            except MetricError as e:
                result = e  # raised on every rank below, not only here
            else:
                bad = [k for k, v in result.items() if not math.isfinite(v)]
                if bad:
                    self.print(f"[yellow]gandist: {', '.join(bad)} not finite (are the generated images finite?)")
        result = _broadcast(result, self.world)
        if isinstance(result, MetricError):
            raise MetricError(str(result))
        return result


def evaluate(cfg, G: torch.nn.Module, device, rank: int = 0, world: int = 1, **kw) -> dict[str, float]:
    """One-off evaluation (builds a fresh Evaluator; a training loop should keep one Evaluator instead,
    so Inception loads and the real features are computed only once)."""
    return Evaluator(cfg, device, rank, world, **kw)(G)
