"""Cluster labels for `gandist-prepare --clusters K`: k-means on each image's pixels, with every cluster given
the same number of training images.

Why: a GAN conditioned on classes learns one mode at a time and covers them all evenly (on MNIST the
conditional recipe comes within 1.2x of the real-vs-real floor where the same networks unconditioned stay near
20x).  Clusters give an unlabelled dataset such modes: G and D are conditioned on an image's cluster
(data.label_key=cluster), and G, asked for clusters uniformly, draws from the whole data as an unconditional G
does.  This is the self-conditioned GAN of Liu et al. 2020 with the clusters fixed before training and found
in pixel space rather than in D's features, which keeps them in the shards, the same for every rank and run.
Equal sizes make the uniform draw of clusters the data's own mix.
"""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from gandist.data.errors import BadSample, PrepareError

_MAX_SIDE = 32  # larger images are averaged down to at most this side first: the layout and tones decide the modes
_ITERS, _RESTARTS = 50, 3


def _vector(job) -> tuple[np.ndarray, int] | None:
    """In a writer process: (process, item) -> (the image as float32 pixels in [0, 1], its class or -1), or None
    for a bad sample."""
    process, item = job
    try:
        sample = process(item)
    except BadSample:
        return None
    arr = np.asarray(Image.open(io.BytesIO(sample["png"])), dtype=np.float32) / 255.0
    x = torch.from_numpy(arr.reshape(arr.shape[0], arr.shape[1], -1)).permute(2, 0, 1)[None]
    if x.shape[-1] > _MAX_SIDE:
        x = torch.nn.functional.adaptive_avg_pool2d(x, _MAX_SIDE)
    return x.flatten().numpy(), int(sample.get("cls", b"-1"))


def split_vectors(split, pool) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(pixel vectors of the split's good samples, their item indices, their classes or -1)."""
    jobs = ((split.process, split.item(i)) for i in range(split.count))
    out = pool.imap(_vector, jobs, chunksize=16) if pool is not None else map(_vector, jobs)
    good = [(i, v) for i, v in enumerate(out) if v is not None]
    if not good:
        return torch.zeros(0, 0), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return (torch.from_numpy(np.stack([v for _, (v, _) in good])), np.array([i for i, _ in good]),
            np.array([c for _, (_, c) in good]))


def cluster_labels(splits: dict, wanted: set[str], k: int, seed: int, pool, log=print) -> dict[str, np.ndarray]:
    """{split name: each item's cluster (-1: a bad sample)} for the `wanted` splits.  The clusters are fitted on
    the train split (else the first) and shared out evenly there; another split's images go to their nearest
    centroid."""
    fit = "train" if "train" in splits else next(iter(splits))
    log(f"clusters: k-means with {k} clusters on the {fit} split's pixels ({splits[fit].count} images)")
    x, idx, cls = split_vectors(splits[fit], pool)
    if len(x) < k:
        raise PrepareError(f"--clusters {k}: the {fit} split has {len(x)} good image(s), fewer than the clusters")
    c = kmeans(x, k, seed)
    out = {}
    for name, sp in splits.items():
        if name not in wanted:
            continue
        if name == fit:
            ix, a = idx, balanced(x, c)
            if (cls >= 0).all():
                common = sum(np.bincount(cls[a == j]).max() for j in range(k) if (a == j).any())
                log(f"clusters: {k} of at most {-(-len(x) // k)} {fit} images each; {common / len(x):.0%} of them "
                    f"share their cluster's commonest class")
        else:
            xs, ix, _ = split_vectors(sp, pool)
            a = torch.cdist(xs, c).argmin(1).numpy() if len(xs) else np.zeros(0, np.int64)
        out[name] = np.full(sp.count, -1)
        out[name][ix] = a
    return out


def kmeans(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """(k, D) centroids: Lloyd's iterations from seeded k-means++ starts, the best of a few restarts."""
    g = torch.Generator().manual_seed(seed)
    best, best_cost = None, float("inf")
    for _ in range(_RESTARTS):
        c = x[torch.randint(len(x), (1,), generator=g)]
        while len(c) < k:  # k-means++: the next start is far from those chosen, with probability ~ distance^2
            d2 = torch.cdist(x, c).min(1).values.square()
            c = torch.cat([c, x[torch.multinomial(d2 + 1e-12, 1, generator=g)]])
        for _ in range(_ITERS):
            a = torch.cdist(x, c).argmin(1)
            sums = torch.zeros_like(c).index_add_(0, a, x)
            n = torch.bincount(a, minlength=k)[:, None]
            c = torch.where(n > 0, sums / n.clamp(min=1), c)  # an empty cluster keeps its centroid
        cost = torch.cdist(x, c).min(1).values.square().sum().item()
        if cost < best_cost:
            best, best_cost = c, cost
    return best


def balanced(x: torch.Tensor, c: torch.Tensor) -> np.ndarray:
    """Each row's cluster, at most ceil(n / k) rows a cluster: rows are placed in order of their distance to a
    centroid, nearest first, each in the nearest centroid that still has room."""
    n, k = len(x), len(c)
    d = torch.cdist(x, c).numpy()
    room = np.full(k, -(-n // k))
    out = np.full(n, -1)
    left = n
    for flat in np.argsort(d, axis=None, kind="stable"):
        i, j = divmod(int(flat), k)
        if out[i] < 0 and room[j] > 0:
            out[i], room[j], left = j, room[j] - 1, left - 1
            if not left:
                break
    return out
