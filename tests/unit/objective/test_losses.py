"""The adversarial losses against their closed forms on known logits."""
import math

import pytest
import torch

from gandist.objective import losses

REAL = torch.tensor([2.0, -1.0, 0.5])
FAKE = torch.tensor([-3.0, 0.0, 1.5])


def _sig(t):
    return 1 / (1 + math.exp(-t))


def test_bce_is_the_cross_entropy_of_sigmoid_outputs():
    want_d = -sum(math.log(_sig(r)) for r in REAL.tolist()) / 3 - sum(math.log(1 - _sig(f)) for f in FAKE.tolist()) / 3
    assert losses.d_loss("bce", REAL, FAKE).item() == pytest.approx(want_d, rel=1e-6)
    # non-saturating G loss: -log D(G(z)), not log(1 - D(G(z)))
    want_g = -sum(math.log(_sig(f)) for f in FAKE.tolist()) / 3
    assert losses.g_loss("bce", FAKE).item() == pytest.approx(want_g, rel=1e-6)


def test_bce_g_gradient_does_not_vanish_where_d_rejects_fakes():
    # The reason for the non-saturating form: for a confidently rejected fake the gradient is ~ -1.
    f = torch.tensor([-20.0], requires_grad=True)
    losses.g_loss("bce", f).backward()
    assert f.grad.item() == pytest.approx(-1.0, abs=1e-6)


def test_bce_stays_finite_for_extreme_logits():
    big = torch.tensor([1e4, -1e4])
    assert torch.isfinite(losses.d_loss("bce", big, -big))
    assert torch.isfinite(losses.g_loss("bce", -big))


def test_wasserstein_is_the_difference_of_critic_means():
    assert losses.d_loss("wasserstein", REAL, FAKE).item() == pytest.approx(FAKE.mean().item() - REAL.mean().item())
    assert losses.g_loss("wasserstein", FAKE).item() == pytest.approx(-FAKE.mean().item())


def test_hinge():
    want_d = sum(max(0.0, 1 - r) for r in REAL.tolist()) / 3 + sum(max(0.0, 1 + f) for f in FAKE.tolist()) / 3
    assert losses.d_loss("hinge", REAL, FAKE).item() == pytest.approx(want_d)
    assert losses.g_loss("hinge", FAKE).item() == pytest.approx(-FAKE.mean().item())


def test_losses_are_reduced_in_fp32_under_low_precision():
    r = torch.full((4,), 300.0, dtype=torch.bfloat16)
    assert losses.d_loss("wasserstein", r, -r).dtype == torch.float32
    assert losses.g_loss("bce", r).dtype == torch.float32


def test_unknown_loss_is_an_error():
    with pytest.raises(ValueError, match="unknown adversarial loss"):
        losses.d_loss("lsgan", REAL, FAKE)
    with pytest.raises(ValueError, match="unknown adversarial loss"):
        losses.g_loss("lsgan", FAKE)
