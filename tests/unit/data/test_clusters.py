"""gandist-prepare --clusters K: k-means cluster labels of equal size in the train split, written beside each
sample's own labels, and a training feed conditioned on them (data.label_key=cluster); bad settings named."""
from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from gandist.config import Config
from gandist.data.clusters import balanced, kmeans
from gandist.data.errors import DataError, PrepareError
from gandist.data.prepare import parse_args, prepare
from gandist.data.shards.feed import ShardFeed
from gandist.metrics.evaluator import Evaluator
from gandist.metrics.registry import MetricError
from tests.data_fixtures import make_mnist


def blobs(sizes, dim=5, seed=0) -> tuple[torch.Tensor, np.ndarray]:
    """Gaussian blobs far apart (centres 10 apart, spread 0.1), and each point's blob."""
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([10 * i + 0.1 * torch.randn(n, dim, generator=g) for i, n in enumerate(sizes)])
    return x, np.repeat(np.arange(len(sizes)), sizes)


def test_kmeans_finds_separated_blobs_and_balanced_shares_them_out_evenly():
    x, blob = blobs([10, 20, 30])
    c = kmeans(x, 3, seed=0)
    nearest = torch.cdist(x, c).argmin(1).numpy()
    assert all(len(set(nearest[blob == b])) == 1 for b in range(3)) and len(set(nearest)) == 3
    torch.testing.assert_close(kmeans(x, 3, seed=0), c)  # seeded
    a = balanced(x, c)
    assert np.bincount(a).tolist() == [20, 20, 20]
    # the 10 points of the smallest blob stay together; the largest gives its farthest 10 to the nearest cluster
    assert len(set(a[blob == 0])) == 1 and len(set(a[blob == 2])) == 2
    assert np.bincount(balanced(x[:59], c)).max() == 20  # ceil(59 / 3)


def members(path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    for tar in sorted(path.glob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                key, ext = m.name.split(".", 1)
                out.setdefault(f"{tar.name.split('-')[0]}/{key}", {})[ext] = tf.extractfile(m).read()
    return out


def test_prepare_writes_even_clusters_that_follow_the_digits_and_leaves_the_rest_unchanged(shared_data, tmp_path,
                                                                                          capsys):
    kw = dict(splits=["test"], resplit_sizes={"train": 1000, "test": 300}, progress=False, workers=0,
              shard_size=500)
    index = prepare("mnist", shared_data / "mnist-sample", tmp_path / "c", clusters=10, **kw)
    said = capsys.readouterr().out
    assert index["clusters"] == 10 and "clusters: 10 of at most 100 train images each;" in said
    share = int(said.split("each; ")[1].split("%")[0])
    assert share > 40, said  # the digits' own classes: a random split into 10 would give about 12%
    plain = prepare("mnist", shared_data / "mnist-sample", tmp_path / "plain", **kw)
    assert plain["clusters"] is None
    got, want = members(tmp_path / "c"), members(tmp_path / "plain")
    assert got.keys() == want.keys()
    for key, m in got.items():  # the image and the class label as without clusters, the cluster beside them
        assert m.pop("png") == want[key]["png"] and m.pop("cls") == want[key]["cls"] and set(m) == {"cluster"}
    clusters = {k: int(m["cluster"]) for k, m in got.items()}
    assert np.bincount([c for k, c in clusters.items() if k.startswith("train/")]).tolist() == [100] * 10
    assert {c for k, c in clusters.items() if k.startswith("test/")} <= set(range(10))
    again = prepare("mnist", shared_data / "mnist-sample", tmp_path / "again", clusters=10, **kw)
    assert members(tmp_path / "again") == members(tmp_path / "c") and again["clusters"] == 10  # seeded
    # the feed conditions on the clusters: its labels are those in the shards, not the digits
    urls = str(tmp_path / "c" / index["splits"]["train"]["pattern"])
    by_pixels = {}
    for k, m in members(tmp_path / "c").items():
        if k.startswith("train/"):
            img = np.asarray(Image.open(io.BytesIO(m["png"])))
            by_pixels[img.tobytes()] = int(m["cluster"])
    feed = ShardFeed(feed_cfg(urls, data__label_key="cluster"), 0, 1, "cpu")
    x, y = feed.batch(0)
    pixels = ((x.double() + 1) * 127.5).round().to(torch.uint8).numpy()[:, 0]
    assert [by_pixels[p.tobytes()] for p in pixels] == y.argmax(1).tolist()


def feed_cfg(urls: str, **over) -> Config:
    cfg = Config()
    cfg.data.source, cfg.data.urls, cfg.data.workers, cfg.data.shuffle_buffer = "shards", urls, 0, 16
    cfg.data.resolution, cfg.data.channels = 28, 1
    cfg.model.conditioning = "concat"
    cfg.train.batch_size = 8
    for k, v in over.items():
        section, key = k.split("__")
        setattr(getattr(cfg, section), key, v)
    return cfg


def test_bad_cluster_settings_are_named(tmp_path):
    make_mnist(tmp_path / "src" / "raw", {"t10k": 12}, gz=True)
    kw = dict(splits=["test"], progress=False, workers=0)
    with pytest.raises(PrepareError, match="--clusters must be 2 or more .or 0: none., not 1"):
        prepare("mnist", tmp_path / "src", tmp_path / "o", clusters=1, **kw)
    with pytest.raises(PrepareError, match="--clusters 20: the test split has 12 good image.s., fewer than the"):
        prepare("mnist", tmp_path / "src", tmp_path / "o", clusters=20, **kw)
    assert not list((tmp_path / "o").glob("*.tar"))  # refused before a shard was written
    assert parse_args(["mnist", "--out", "o", "--clusters", "30"]).clusters == 30
    index = prepare("mnist", tmp_path / "src", tmp_path / "plain", **kw)
    urls = str(tmp_path / "plain" / index["splits"]["test"]["pattern"])
    with pytest.raises(DataError, match="data.label_key is 'cluster' but the mnist shards .* have no cluster labels: "
                                        "re-run gandist-prepare with --clusters K"):
        ShardFeed(feed_cfg(urls, data__label_key="cluster"), 0, 1, "cpu")
    index = prepare("mnist", tmp_path / "src", tmp_path / "c", clusters=4, **kw)
    before = {p.name: p.read_bytes() for p in (tmp_path / "c").iterdir()}
    with pytest.raises(PrepareError, match="--clusters 13: the test split has 12"):
        prepare("mnist", tmp_path / "src", tmp_path / "c", clusters=13, **kw)
    assert {p.name: p.read_bytes() for p in (tmp_path / "c").iterdir()} == before  # the index still vouches
    urls = str(tmp_path / "c" / index["splits"]["test"]["pattern"])
    assert json.loads((tmp_path / "c" / "index.json").read_text())["clusters"] == 4
    with pytest.raises(DataError, match="data.num_classes is 3 but the mnist shards .* have 4 clusters"):
        ShardFeed(feed_cfg(urls, data__label_key="cluster", data__num_classes=3), 0, 1, "cpu")
    cfg = feed_cfg(urls, data__label_key="cluster", data__num_classes=4)
    cfg.eval.metrics, cfg.eval.judge = ["judge_acc"], "judge.safetensors"
    with pytest.raises(MetricError, match="judge_acc: the run is conditioned on k-means clusters"):
        Evaluator(cfg, "cpu")
