"""The two image sets of an evaluation and each rank's share.  The generated set's noise is drawn globally,
so it is the same at every evaluation and any world size; the real set is read in order (eval.real_urls,
else data.urls), so scores of two runs compare like for like.
"""
from __future__ import annotations

from typing import Iterator

import torch

from gandist.data.errors import DataError
from gandist.data.shards.eval import eval_batches_for
from gandist.data.shards.io import expand_urls, is_local, local_path
from gandist.data.synthetic import SyntheticDataset
from gandist.data.tensors import condition
from gandist.distributed import generator, share
from gandist.metrics.registry import MetricError


def expected_real(cfg, limit: int) -> int:
    """Real images all ranks read at most: `limit`, or fewer for a smaller embedded dataset."""
    return min(limit, cfg.data.synthetic_size) if reads_synthetic(cfg) else limit


def reads_synthetic(cfg) -> bool:
    """Whether the real set is the embedded dataset (not shards)."""
    return cfg.data.source == "synthetic" and not cfg.eval.real_urls


def shard_urls(setting: str, pattern: str) -> list[str]:
    """The urls of a shard pattern; MetricError naming `setting` for none or a missing local one, before any
    work (a reader would only skip it)."""
    try:
        urls = expand_urls(pattern)
    except (DataError, ValueError) as e:
        raise MetricError(f"{setting}: {e}") from None
    missing = [u for u in urls if is_local(u) and not local_path(u).is_file()]
    if missing:
        raise MetricError(f"{setting}: {missing[0]} does not exist" + (f" (nor {len(missing) - 1} more of its "
                                                                       f"shards)" if len(missing) > 1 else ""))
    return urls


def real_batches(cfg, limit: int, rank: int = 0, world: int = 1, batch_size: int = 32
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """(uint8 images, labels) of this rank's share of the first `limit` real images."""
    d = cfg.data
    if reads_synthetic(cfg):
        ds = SyntheticDataset(d.synthetic_size, d.resolution, d.channels, d.synthetic_seed)
        rows = share(expected_real(cfg, limit), rank, world)
        for i in range(rows.start, rows.stop, batch_size):
            items = [ds[j] for j in range(i, min(i + batch_size, rows.stop))]
            yield torch.stack([im for im, _ in items]), torch.tensor([lab for _, lab in items])
        return
    quota = len(share(limit, rank, world))
    taken = 0
    for images, labels in eval_batches_for(cfg, rank, world, batch_size, urls=cfg.eval.real_urls or None):
        if taken >= quota:
            break
        k = min(len(images), quota - taken)
        taken += k
        yield images[:k], (labels[:k] if labels is not None else None)


def eval_noise(cfg, n: int, seed: int | None = None) -> torch.Tensor:
    """The (n, z_dim) noise of the generated set: drawn globally, so any world size gets the same set."""
    seed = cfg.train.seed if seed is None else seed
    return torch.randn(n, cfg.model.z_dim, generator=generator(seed, 0, "eval"))


def asked_labels(cfg, n: int, real_labels: torch.Tensor | None) -> torch.Tensor | None:
    """Balanced classes, or the real set's attribute vectors in order so their frequencies match; None unconditional."""
    ld = cfg.label_dim
    if not ld:
        return None
    if not cfg.data.attributes:
        return torch.arange(n) % ld
    if real_labels is None or len(real_labels) == 0:
        raise MetricError("an attribute-conditioned generator is evaluated with the real set's attribute vectors, "
                          "but the real images came without attribute labels (data.label_key=attr)")
    return real_labels[torch.arange(n) % len(real_labels)]


def eval_conditions(cfg, n: int, real_labels: torch.Tensor | None) -> torch.Tensor | None:
    """G's condition vectors for the generated set (asked_labels as G takes them)."""
    asked = asked_labels(cfg, n, real_labels)
    if asked is None:
        return None
    if not cfg.data.attributes:
        return torch.nn.functional.one_hot(asked, cfg.label_dim).float()
    return condition(asked, cfg).float()


def generated_batches(G: torch.nn.Module, z: torch.Tensor, y: torch.Tensor | None, batch_size: int
                      ) -> Iterator[torch.Tensor]:
    """G's images for z and y, batch_size at a time on G's device (the caller sets mode and no_grad)."""
    p = next(G.parameters())
    for i in range(0, len(z), batch_size):
        yi = y[i:i + batch_size].to(p.device, p.dtype) if y is not None else None
        yield G(z[i:i + batch_size].to(p.device, p.dtype), yi)
