"""The gradient penalty, R1 and weight clipping against closed forms; the training loop's use of them."""
import pytest
import torch
import torch.nn as nn

from gandist.objective import regularizers


class LinearCritic(nn.Module):
    """D(x) = <w, x> + b per sample: its input gradient is w everywhere."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = nn.Parameter(torch.tensor(0.3))

    def forward(self, x, y=None):
        return (x * self.w).flatten(1).sum(1) + self.b


class HalfSquareCritic(nn.Module):
    """D(x) = |x|^2 / 2 per sample: its input gradient at x is x itself."""

    def forward(self, x, y=None):
        return 0.5 * x.flatten(1).pow(2).sum(1)


def _batch(n=5, shape=(2, 3, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randn(n, *shape, generator=g)


def test_gradient_penalty_of_a_linear_critic_is_its_closed_form():
    w = torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(1))
    D = LinearCritic(w)
    real, fake = _batch()
    gp = regularizers.gradient_penalty(D, real, fake, None, torch.rand(5))
    assert gp.item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-5)


def test_gradient_penalty_reaches_the_critic_parameters():
    # d/dw (|w| - 1)^2 = 2 (|w| - 1) w / |w|: the penalty is part of D's loss, so it needs a graph.
    w = torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(2))
    D = LinearCritic(w)
    real, fake = _batch()
    regularizers.gradient_penalty(D, real, fake, None, torch.rand(5)).backward()
    n = w.norm()
    torch.testing.assert_close(D.w.grad, 2 * (n - 1) * w / n, rtol=1e-5, atol=1e-6)
    assert D.b.grad is None or D.b.grad.abs().item() == 0.0


def test_gradient_penalty_uses_one_alpha_per_sample_and_the_norm_over_all_its_dimensions():
    real, fake = _batch(n=4)
    alpha = torch.tensor([0.0, 0.25, 0.6, 1.0])
    gp = regularizers.gradient_penalty(HalfSquareCritic(), real, fake, None, alpha)
    # gradient at x_hat_i is x_hat_i = a_i x_i + (1 - a_i) x~_i; its norm runs over C, H and W together
    want = torch.stack([((a * r + (1 - a) * f).norm() - 1) ** 2 for a, r, f in zip(alpha, real, fake)]).mean()
    assert gp.item() == pytest.approx(want.item(), rel=1e-5)
    # one alpha for the whole batch would give another value
    same = regularizers.gradient_penalty(HalfSquareCritic(), real, fake, None, torch.full((4,), 0.25))
    assert abs(same.item() - gp.item()) > 1e-3


def test_gradient_penalty_with_a_grad_scaler_equals_the_unscaled_one():
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    real, fake = _batch()
    alpha = torch.rand(5)
    plain = regularizers.gradient_penalty(HalfSquareCritic(), real, fake, None, alpha)
    scaled = regularizers.gradient_penalty(HalfSquareCritic(), real, fake, None, alpha, scaler)
    assert scaled.item() == pytest.approx(plain.item(), rel=1e-6)


def test_r1_of_a_linear_critic_is_the_squared_weight_norm():
    w = torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(3))
    real, _ = _batch()
    r1 = regularizers.r1_penalty(LinearCritic(w), real, None)
    assert r1.item() == pytest.approx(w.pow(2).sum().item(), rel=1e-5)


def test_r1_is_taken_on_the_real_samples():
    real, _ = _batch(n=3)
    r1 = regularizers.r1_penalty(HalfSquareCritic(), real, None)
    assert r1.item() == pytest.approx(real.flatten(1).pow(2).sum(1).mean().item(), rel=1e-5)


def test_clip_puts_every_parameter_in_range_and_leaves_small_ones_alone():
    D = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 1))
    with torch.no_grad():
        for p in D.parameters():
            p.normal_(0, 1)
    small = D[2].bias.detach().clone().clamp_(-0.005, 0.005)
    with torch.no_grad():
        D[2].bias.copy_(small)
    regularizers.clip_weights_(D, 0.01)
    for p in D.parameters():
        assert p.abs().max().item() <= 0.01
    assert torch.equal(D[2].bias, small)
    assert D[0].weight.abs().max().item() == pytest.approx(0.01)
