"""gandist.metrics (registry, inception, sets, the Evaluator's checks): FID / IS / KID through
torch-fidelity, with a random-weights Inception file in torch-fidelity's format (no downloads).  Image
counts are tiny: CPU Inception at 299 px is slow.
FID/KID use the 64-channel pool features here (pytorch-fid's --dims 64) where many images are needed;
the 2048 features and logits run on a few images."""
from __future__ import annotations

import math

import pytest
import torch

from gandist.distributed import share
from gandist.metrics.evaluator import Evaluator
from gandist.metrics.inception import LOGITS, extract, feature_extractor, to_uint8_rgb
from gandist.metrics.registry import MetricError, Options, check_metrics, compute, layers_for, list_metrics
from gandist.metrics.sets import eval_conditions, eval_noise, real_batches
from tests import metrics_fixtures
from tests.metrics_fixtures import U8, noise_images, synthetic_images, tiny_cfg

inception_weights = metrics_fixtures.inception_weights  # the session fixture, by its name here

N = 32  # images per set (KID of a set against itself is biased by about -1/N: it must stay small)


@pytest.fixture(scope="module")
def pool64(inception_weights):
    return feature_extractor(["64"], inception_weights, "cpu")


@pytest.fixture(scope="module")
def sets(pool64):
    """64-dim features of: A (16 embedded-dataset images, in two batches), A2 (16 others of the same
    dataset) and B (16 uniform-noise images)."""
    A, A2, B = synthetic_images(N), synthetic_images(N, start=N), noise_images(N)
    return {"A": extract(pool64, [A[:10], A[10:]]), "A2": extract(pool64, [A2]), "B": extract(pool64, [B]),
            "images": {"A": A, "B": B}}


def test_fid_and_kid_are_zero_for_the_same_set_and_larger_for_a_different_one(sets):
    o = Options(feature_layer="64")
    same = compute(["fid", "kid"], sets["A"], sets["A"], o)
    alike = compute(["fid", "kid"], sets["A"], sets["A2"], o)
    other = compute(["fid", "kid"], sets["A"], sets["B"], o)
    assert sets["A"]["64"].shape == (N, 64)
    assert abs(same["fid"]) < 1e-5 * other["fid"]
    assert other["fid"] > 5 * alike["fid"] > 0
    # KID's unbiased estimator is slightly negative for a set against itself (its diagonal is excluded)
    assert abs(same["kid"]) < 0.1 * other["kid"] and abs(alike["kid"]) < 0.1 * other["kid"]
    assert other["kid"] > 0 and all(math.isfinite(v) for v in (*same.values(), *other.values()))
    assert set(other) == {"fid", "kid", "kid_std"}
    # symmetric in its two sets
    assert compute(["fid"], sets["B"], sets["A"], o)["fid"] == pytest.approx(other["fid"], rel=1e-4)


def test_same_numbers_as_torch_fidelity_calculate_metrics_with_the_weights_file(sets, inception_weights):
    """torch-fidelity's own top-level API loads the random weights file and gives our numbers."""
    import torch_fidelity

    theirs = torch_fidelity.calculate_metrics(
        input1=U8(sets["images"]["A"]), input2=U8(sets["images"]["B"]), fid=True, kid=True,
        feature_layer_fid="64", feature_layer_kid="64", kid_subset_size=N, kid_subsets=100, rng_seed=0,
        feature_extractor_weights_path=str(inception_weights), cuda=False, cache=False, verbose=False,
        save_cpu_ram=True, batch_size=N)
    ours = compute(["fid", "kid"], sets["A"], sets["B"], Options(feature_layer="64", seed=0))
    assert ours["fid"] == pytest.approx(theirs[torch_fidelity.KEY_METRIC_FID], rel=1e-4)
    assert ours["kid"] == pytest.approx(theirs[torch_fidelity.KEY_METRIC_KID_MEAN], rel=1e-4)


def test_inception_score_and_2048_features_on_a_few_images(inception_weights):
    net = feature_extractor(["2048", LOGITS], inception_weights, "cpu")
    varied = extract(net, [synthetic_images(4)])
    same = extract(net, [synthetic_images(1).repeat(2, 1, 1, 1)])
    assert varied["2048"].shape == (4, 2048) and varied[LOGITS].shape == (4, 1008)
    isc = compute(["isc"], varied, None)
    assert set(isc) == {"isc", "isc_std"}
    assert math.isfinite(isc["isc"]) and isc["isc"] > 1.0  # > 1 when the predictions differ
    assert compute(["isc"], same, None)["isc"] == pytest.approx(1.0, abs=1e-9)  # exactly 1 when they don't
    kid = compute(["kid"], varied, varied)  # default layer 2048
    assert math.isfinite(kid["kid"]) and kid["kid"] <= 1e-6


def test_images_reach_inception_as_uint8_rgb_quantised_like_the_saved_pngs(tmp_path, pool64):
    import numpy as np
    from PIL import Image

    from gandist.training.reporting import save_grid

    x = torch.linspace(-1.2, 1.2, 2 * 5 * 7).reshape(2, 1, 5, 7)  # grey, out of range at both ends
    u8 = to_uint8_rgb(x)
    assert u8.dtype == torch.uint8 and u8.shape == (2, 3, 5, 7)
    assert torch.equal(u8[:, 0], u8[:, 1]) and torch.equal(u8[:, 0], u8[:, 2])
    save_grid(x, tmp_path / "two.png", 2)  # padding 2 around each
    png = torch.from_numpy(np.asarray(Image.open(tmp_path / "two.png").convert("RGB")).transpose(2, 0, 1).copy())
    assert torch.equal(u8[0], png[:, 2:7, 2:9]) and torch.equal(u8[1], png[:, 2:7, 11:18])
    assert torch.equal(to_uint8_rgb(u8), u8)
    # grey uint8 batches (MNIST-like) go through the extractor
    assert extract(pool64, [synthetic_images(2, channels=1)])["64"].shape == (2, 64)
    with pytest.raises(MetricError, match=r"\(N, 1 or 3, H, W\)"):
        to_uint8_rgb(torch.zeros(2, 4, 8, 8))


def test_registry_and_metric_names():
    assert list_metrics() == ["fid", "isc", "kid", "judge_fd", "judge_acc", "judge_mix", "prdc"]
    assert check_metrics("FID, kid,fid") == ["fid", "kid"]
    assert check_metrics(["isc"]) == ["isc"]
    with pytest.raises(MetricError, match="unknown metric 'fdi': choose from fid, isc, kid, judge_fd, judge_acc, judge_mix, prdc"):
        check_metrics("fid,fdi")
    with pytest.raises(MetricError, match="no metrics requested"):
        check_metrics("")
    o = Options(feature_layer="192")
    assert layers_for(["isc", "fid", "kid"], o) == ((LOGITS, "192"), ("192",))
    with pytest.raises(MetricError, match="needs the real images"):
        compute(["fid"], {"2048": torch.zeros(3, 2048)}, None)
    with pytest.raises(MetricError, match=r"fid \(real images\): needs at least 2, got 1"):
        compute(["fid"], {"2048": torch.randn(3, 2048)}, {"2048": torch.randn(1, 2048)})


def test_weights_file_errors_name_the_file(tmp_path, monkeypatch):
    missing = tmp_path / "nope.pth"
    with pytest.raises(MetricError, match=f"eval.feature_weights: {missing} does not exist"):
        feature_extractor(["64"], missing, "cpu")
    with pytest.raises(MetricError, match=f"eval.feature_weights: {missing} does not exist"):
        Evaluator(tiny_cfg(), "cpu", feature_weights=str(missing))  # when built, before any work
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a state dict")
    with pytest.raises(MetricError, match=f"{junk} is not a torch-fidelity InceptionV3 weights file"):
        feature_extractor(["64"], junk, "cpu")
    with pytest.raises(MetricError, match="unknown Inception feature layer"):
        feature_extractor(["1000"], junk, "cpu")
    # the default (download) path, made to fail without touching the network or the torch.hub cache
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    monkeypatch.setattr(tfi, "URL_INCEPTION_V3", f"file://{tmp_path}/absent/weights-inception.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(MetricError, match="could not get torch-fidelity's InceptionV3 weights from file://.*"
                                          "set eval.feature_weights=PATH"):
        feature_extractor(["64"], "", "cpu")


def test_generated_set_labels():
    cfg = tiny_cfg("variant=cgan")
    y = eval_conditions(cfg, 23, None)
    assert y.shape == (23, 10) and y.argmax(1).tolist() == [i % 10 for i in range(23)]
    assert eval_conditions(tiny_cfg(), 5, None) is None
    cfg = tiny_cfg("variant=cgan", "data.attributes=[Male,Smiling]", "data.label_key=attr")
    real = torch.tensor([[1, -1], [-1, 1], [1, 1]], dtype=torch.int8)  # CelebA's 1/-1 as the shards give them
    assert eval_conditions(cfg, 4, real).tolist() == [[1, 0], [0, 1], [1, 1], [1, 0]]
    with pytest.raises(MetricError, match="attribute"):
        eval_conditions(cfg, 4, None)
    # the generated set's noise is the same for any number of ranks
    assert torch.equal(eval_noise(cfg, 7), eval_noise(cfg, 7))
    assert [len(share(7, r, 3)) for r in range(3)] == [2, 2, 3]


def test_real_images_from_shards_every_rank_its_share(tmp_path):
    """data.source=shards: the real set is read by gandist.data.shards.eval's iterator, capped at
    num_samples, split across ranks by shard; pixels and labels are the embedded dataset's."""
    from gandist.data.prepare import main as prepare

    out = tmp_path / "shards"
    assert prepare(["synthetic", "--out", str(out), "--size", "20", "--shard-size", "6", "--workers", "1",
                    "--no-shuffle", "--no-progress"]) == 0
    cfg = tiny_cfg("data.source=shards", f"data.urls={out}/train-{{000000..000003}}.tar", "data.workers=0")
    images, labels = zip(*real_batches(cfg, 15, batch_size=4))
    images, labels = torch.cat(images), torch.cat(labels)
    assert torch.equal(images, synthetic_images(15)) and labels.tolist() == [i % 10 for i in range(15)]
    # two ranks: shards 0, 2 -> rank 0 and 1, 3 -> rank 1; each takes at most its share of the 15
    shares = [torch.cat([im for im, _ in real_batches(cfg, 15, r, 2, batch_size=4)]) for r in range(2)]
    assert [len(s) for s in shares] == [7, 8]
    everything = synthetic_images(20)
    assert torch.equal(shares[0], torch.cat([everything[0:6], everything[12:13]]))
    assert torch.equal(shares[1], torch.cat([everything[6:12], everything[18:20]]))
