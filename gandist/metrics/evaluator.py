"""The Evaluator: FID / IS / KID and the judge's metrics of a generator against the run's real data.

It feeds torch-fidelity's extractors itself rather than calling `calculate_metrics`, so that the real
features are computed once and reused at every evaluation, shards can stream, labels and noise come from
gandist's seeded draws, and each rank embeds only its share.  Features are gathered to every rank and rank 0's
scores are broadcast: every rank must call it together, and all return the same dict.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from rich import get_console

from gandist.distributed import broadcast_object, gather_object, is_distributed, share
from gandist.metrics import judge
from gandist.metrics.inception import check_weights, extract, feature_extractor
from gandist.metrics.registry import (FEATURE_LAYERS, JUDGE_FEATURES, JUDGE_LOGITS, LABELS, MetricError, Options,
                                      check_metrics, compute, layers_for, uses_judge)
from gandist.metrics.sets import (asked_labels, eval_conditions, eval_noise, expected_real, generated_batches,
                                  real_batches, shard_urls)
from gandist.utils.console import progress_bar

JUDGE_LAYERS = (JUDGE_FEATURES, JUDGE_LOGITS)


def _cat_features(parts: list[dict]) -> dict:
    """One feature dict of the ranks' dicts (in rank order); a layer no rank has rows of stays empty."""
    keys = next((p.keys() for p in parts if p), ())
    return {k: torch.cat([p[k] for p in parts if len(p[k])]) if any(len(p[k]) for p in parts) else torch.zeros(0, 0)
            for k in keys}


class Evaluator:
    """Holds Inception and the real set's features between calls; all ranks construct and call it together.
    Arguments left None default to cfg.eval.* (seed: train.seed); `judge_setting` names the judge's source in
    errors."""

    def __init__(self, cfg, device, rank: int = 0, world: int = 1, *, metrics=None, num_samples: int | None = None,
                 feature_weights: str | None = None, feature_layer: str | int | None = None,
                 judge_file: str | None = None, judge_setting: str = "eval.judge",
                 batch_size: int = 32, seed: int | None = None, progress: bool | None = None):
        self.cfg, self.device, self.rank, self.world = cfg, torch.device(device), rank, world
        self.metrics = check_metrics(cfg.eval.metrics if metrics is None else metrics)
        self.num_samples = int(cfg.eval.num_samples if num_samples is None else num_samples)
        if self.num_samples < 1:
            raise MetricError(f"eval.num_samples: must be at least 1, got {self.num_samples}")
        self.weights = cfg.eval.feature_weights if feature_weights is None else feature_weights
        check_weights(self.weights)  # now, not hours later at the first evaluation
        feature_layer = cfg.eval.feature_layer if feature_layer is None else feature_layer
        if str(feature_layer) not in FEATURE_LAYERS:
            raise MetricError(f"feature layer {feature_layer!r}: choose from {', '.join(FEATURE_LAYERS)}")
        self.seed = cfg.train.seed if seed is None else seed
        self.judge, self.judge_meta, columns = self._check_judge(
            cfg.eval.judge if judge_file is None else judge_file, judge_setting)
        self.opts = Options(feature_layer=str(feature_layer), seed=self.seed,
                            judge_floor=self.judge_meta.get("floor_fd"), judge_columns=columns)
        self.batch_size = batch_size
        self.progress = cfg.log.progress if progress is None else progress
        self.fake_layers, self.real_layers = layers_for(self.metrics, self.opts)
        if cfg.eval.real_urls:
            shard_urls("eval.real_urls", cfg.eval.real_urls)
        self._nets: dict[tuple, torch.nn.Module] = {}
        self._real: dict | None = None  # the real set's gathered features
        self._real_labels: torch.Tensor | None = None
        self._real_read = False
        self.real_count = 0

    def _check_judge(self, path: str, setting: str) -> tuple[str, dict, tuple | None]:
        """(judge file, metadata, its outputs of the run's attributes), checked before any work; ("", {}, None)
        where no metric reads a judge."""
        if not uses_judge(self.metrics):
            return "", {}, None
        if not path:
            raise MetricError(f"{setting}: {', '.join(m for m in self.metrics if uses_judge([m]))} read the judge: "
                              f"train one with gandist-judge and name its file in {setting}")
        accuracy = "judge_acc" in self.metrics
        if accuracy and not self.cfg.label_dim:
            raise MetricError("judge_acc: the judge's accuracy against the class asked for needs a conditional "
                              "run (model.conditioning is none)")
        if accuracy and self.cfg.data.label_key == "cluster":
            raise MetricError("judge_acc: the run is conditioned on k-means clusters (data.label_key=cluster), not "
                              "on the judge's classes; judge_fd, judge_mix and prdc measure it")
        meta = judge.read_meta(path, setting)
        return path, meta, judge.check_fits(meta, self.cfg, path, setting, accuracy=accuracy)

    def prepare(self) -> "Evaluator":
        """Embed the real set now, so that a missing download or unreadable data stops a run before its first step."""
        self._read_real()
        self._nets_for(self.fake_layers)
        return self

    @property
    def main(self) -> bool:
        return self.rank == 0

    def _nets_for(self, layers: tuple) -> list[torch.nn.Module]:
        """The feature extractors giving `layers`: Inception for its own, the judge for the judge's."""
        mine = tuple(l for l in layers if l in JUDGE_LAYERS)
        nets = [self._net(rest)] if (rest := tuple(l for l in layers if l not in JUDGE_LAYERS)) else []
        if mine:
            if mine not in self._nets:
                self._nets[mine] = judge.judge_extractor(mine, self.judge, self.device)
            nets.append(self._nets[mine])
        return nets

    def _net(self, layers: tuple) -> torch.nn.Module:
        if layers not in self._nets:
            if is_distributed() and not self.weights:  # one download, then the other ranks read the cache
                problem = None
                if self.main:
                    try:
                        net = feature_extractor(layers, None, self.device)
                    except MetricError as e:
                        problem = str(e)
                problem = broadcast_object(problem)  # the others do not wait forever for a failed rank 0
                if problem:
                    raise MetricError(problem if self.main else f"rank 0 could not load Inception: {problem}")
                if not self.main:
                    net = feature_extractor(layers, None, self.device)
            else:
                net = feature_extractor(layers, self.weights, self.device)
            self._nets[layers] = net
        return self._nets[layers]

    @contextmanager
    def _counter(self, description: str, total: int):
        """A callback advancing rank 0's progress bar by all ranks' images, or None where no bar is shown."""
        if not (self.main and self.progress):
            yield None
            return
        with progress_bar(transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda k: bar.advance(task, k * self.world)

    def _read_real(self):
        """The real set's features (for the metrics that need them) and labels, gathered from all ranks."""
        if self._real_read:
            return
        need_labels = bool(self.cfg.data.attributes) and self.cfg.model.conditioning != "none"
        if not self.real_layers and not need_labels:
            self._real_read = True
            return
        nets = self._nets_for(self.real_layers) if self.real_layers else None
        labels: list[torch.Tensor] = []

        def batches(on_batch=None):
            for images, lab in real_batches(self.cfg, self.num_samples, self.rank, self.world, self.batch_size):
                if lab is not None:
                    labels.append(lab)
                if on_batch:
                    on_batch(len(images))
                yield images

        total = expected_real(self.cfg, self.num_samples)
        with self._counter("real images (features)" if nets else "real labels", total) as step:
            if nets:
                feats = extract(nets, batches(), step)
            else:
                for _ in batches(step):
                    pass
        self._real = _cat_features(gather_object(feats)) if nets else None
        mine = torch.cat(labels) if labels else None
        got = [t for t in gather_object(mine) if t is not None]
        self._real_labels = torch.cat(got) if got else None
        self.real_count = len(next(iter(self._real.values()))) if self._real else (
            len(self._real_labels) if self._real_labels is not None else 0)
        if self.real_layers and self.real_count < 2:
            raise MetricError(f"found {self.real_count} real image(s) to compare with (data.source="
                              f"{self.cfg.data.source}, eval.real_urls={self.cfg.eval.real_urls!r}); "
                              f"{', '.join(self.metrics)} need at least 2")
        self._real_read = True

    @torch.no_grad()
    def _generate(self, G) -> dict:
        """The generated set's features, gathered from all ranks; G's mode is restored."""
        n = self.num_samples
        rows = share(n, self.rank, self.world)
        z = eval_noise(self.cfg, n, self.seed)[rows.start:rows.stop]
        y = eval_conditions(self.cfg, n, self._real_labels)
        y = y[rows.start:rows.stop] if y is not None else None
        nets = self._nets_for(self.fake_layers)
        was = G.training
        G.eval()
        try:
            with self._counter("generated images (features)", n) as step:
                feats = extract(nets, generated_batches(G, z, y, self.batch_size), step)
        finally:
            G.train(was)
        if y is not None:  # what each image was asked for, gathered with its features (judge_acc)
            feats[LABELS] = asked_labels(self.cfg, n, self._real_labels)[rows.start:rows.stop]
        return _cat_features(gather_object(feats))

    def __call__(self, G: torch.nn.Module) -> dict[str, float]:
        """Collective: scores (registry.score_keys), the same on every rank.  G is the bare generator, not a
        DDP wrapper; its mode is restored."""
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
                    get_console().print(f"[yellow]gandist: {', '.join(bad)} not finite "
                                        f"(are the generated images finite?)")
        result = broadcast_object(result)
        if isinstance(result, MetricError):
            raise MetricError(str(result))
        return result
