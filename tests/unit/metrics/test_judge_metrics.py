"""The judge's metrics (gandist/metrics/registry.py): the Frechet distance against a direct computation,
precision / recall / density / coverage on sets where the answer is known and against a brute-force
reading of the papers' definitions, and the judge's accuracy against the labels asked for."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gandist.metrics.registry import (JUDGE_FEATURES, JUDGE_LOGITS, LABELS, MetricError, Options, compute,
                                      layers_for, score_keys)

K = 5


def gaussian(n, d=8, seed=0, shift=0.0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64).float() * scale + shift


def prdc(fake, real, k=K):
    return compute(["prdc"], {JUDGE_FEATURES: fake}, {JUDGE_FEATURES: real}, Options(nearest_k=k))


def sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def test_judge_fd_matches_the_formula_and_gives_the_ratio_to_the_floor():
    a, b = gaussian(300, seed=1), gaussian(300, seed=2, shift=0.5, scale=1.5)
    x, y = a.double().numpy(), b.double().numpy()
    m1, m2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    r1 = sqrtm_psd(s1)  # Tr sqrt(S1 S2) = Tr sqrt(S1^1/2 S2 S1^1/2), a symmetric PSD form
    direct = ((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * sqrtm_psd(r1 @ s2 @ r1))
    got = compute(["judge_fd"], {JUDGE_FEATURES: a}, {JUDGE_FEATURES: b}, Options(judge_floor=2.0))
    assert got["judge_fd"] == pytest.approx(direct, rel=1e-4)
    assert got["judge_fd_ratio"] == pytest.approx(direct / 2.0, rel=1e-4)
    assert direct > 1  # a real difference, not rounding
    same = compute(["judge_fd"], {JUDGE_FEATURES: a}, {JUDGE_FEATURES: a}, Options())
    assert abs(same["judge_fd"]) < 1e-6 and "judge_fd_ratio" not in same  # no floor, no ratio


def test_prdc_of_a_set_against_itself_and_against_a_far_one():
    real = gaussian(200)
    same = prdc(real.clone(), real)
    assert same["precision"] == 1 and same["recall"] == 1 and same["coverage"] == 1
    # each real k-NN ball holds its own centre and exactly k others (no ties): density = (M + kM) / kM
    assert same["density"] == pytest.approx(1 + 1 / K)
    far = prdc(real + 1000, real)
    assert far == {"precision": 0, "recall": 0, "density": 0, "coverage": 0}


def test_prdc_of_a_generator_that_covers_half_the_modes():
    a, b = gaussian(100, seed=3), gaussian(100, seed=4, shift=50.0)
    got = prdc(a.clone(), torch.cat([a, b]))
    assert got["precision"] == 1  # every fake lies on a real sample
    assert got["recall"] == pytest.approx(0.5)  # the far mode's reals lie in no fake's ball
    assert got["coverage"] == pytest.approx(0.5)


def brute_prdc(fake: np.ndarray, real: np.ndarray, k: int) -> dict:
    """The papers' definitions, read literally, one sample at a time."""
    def radii(x):
        return np.array([np.sort(np.linalg.norm(x - p, axis=1))[k] for p in x])

    rr, rf = radii(real), radii(fake)
    d = np.linalg.norm(fake[:, None] - real[None], axis=2)  # (fake, real)
    return {"precision": np.mean([(d[j] <= rr).any() for j in range(len(fake))]),
            "recall": np.mean([(d[:, i] <= rf).any() for i in range(len(real))]),
            "density": sum((d[j] <= rr).sum() for j in range(len(fake))) / (k * len(fake)),
            "coverage": np.mean([d[:, i].min() <= rr[i] for i in range(len(real))])}


@pytest.mark.parametrize("k", [1, 3, 5])
def test_prdc_agrees_with_a_brute_force_reading_of_the_definitions(k):
    fake, real = gaussian(90, d=4, seed=5, shift=1.0, scale=1.5), gaussian(120, d=4, seed=6)
    got = prdc(fake, real, k)
    want = brute_prdc(fake.double().numpy(), real.double().numpy(), k)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-6), key
    assert 0 < got["precision"] < 1 and 0 < got["coverage"] < 1  # a case that tells the formulas apart


def test_prdc_needs_more_samples_than_k():
    with pytest.raises(MetricError, match=r"prdc \(real images\): needs at least 6, got 5"):
        prdc(gaussian(20), gaussian(5))


def test_judge_acc_against_the_classes_and_the_attributes_asked_for():
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
    asked = torch.tensor([0, 1, 1, 0])
    assert compute(["judge_acc"], {JUDGE_LOGITS: logits, LABELS: asked}, None)["judge_acc"] == 0.75
    # attributes: the run's two attributes are the judge's outputs 2 and 0; per-attribute agreement, averaged
    attr_logits = torch.tensor([[1.0, 9.0, -1.0], [-1.0, 9.0, 1.0]])
    attr_asked = torch.tensor([[0, 1], [1, 1]], dtype=torch.int8)
    got = compute(["judge_acc"], {JUDGE_LOGITS: attr_logits, LABELS: attr_asked}, None, Options(judge_columns=(2, 0)))
    assert got["judge_acc"] == 0.75
    with pytest.raises(MetricError, match="asked for"):
        compute(["judge_acc"], {JUDGE_LOGITS: logits}, None)


def test_the_judge_metrics_name_their_layers_and_scores():
    assert layers_for(["judge_fd", "prdc", "judge_acc"], Options()) == ((JUDGE_FEATURES, JUDGE_LOGITS),
                                                                        (JUDGE_FEATURES,))
    keys = score_keys()
    for k in ("fid", "kid_std", "judge_fd", "judge_fd_ratio", "judge_acc", "precision", "recall", "density",
              "coverage"):
        assert k in keys


def test_judge_mix_is_the_distance_between_the_class_mixes_the_judge_sees():
    eye = torch.eye(4) * 3.0
    real = eye[[0, 1, 2, 3] * 5]  # an even mix of four classes
    assert compute(["judge_mix"], {JUDGE_LOGITS: real.flip(0)}, {JUDGE_LOGITS: real})["judge_mix"] == 0.0
    half = eye[[0, 0, 1, 1] * 5]  # only two of the four classes: half the mass is in the wrong place
    assert compute(["judge_mix"], {JUDGE_LOGITS: half}, {JUDGE_LOGITS: real})["judge_mix"] == pytest.approx(0.5)
    # attributes: the run's attribute is the judge's output 1; its rate 1.0 in the fakes against 0.5 in the reals
    attr_fake, attr_real = torch.tensor([[0.0, 1.0], [0.0, 2.0]]), torch.tensor([[0.0, 1.0], [0.0, -1.0]])
    got = compute(["judge_mix"], {JUDGE_LOGITS: attr_fake}, {JUDGE_LOGITS: attr_real}, Options(judge_columns=(1,)))
    assert got["judge_mix"] == pytest.approx(0.5)
