"""Mixed precision: the AMP recipe of the gradient penalty, bf16 and fp16 runs, counted skips."""
from __future__ import annotations

import math

import pytest
import torch

from gandist.objective.regularizers import gradient_penalty, r1_penalty
from tests.conftest import metrics, run_train


class Critic(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, 2, 1)
        self.fc = torch.nn.Linear(8 * 4 * 4, 1)

    def forward(self, x, y=None):
        return self.fc(torch.nn.functional.leaky_relu(self.conv(x), 0.2).flatten(1)).squeeze(1)


def inputs():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(6, 3, 8, 8, generator=g), torch.randn(6, 3, 8, 8, generator=g)
    return real, fake, torch.rand(6, generator=g)


@pytest.mark.parametrize("penalty", ["gp", "r1"])
def test_scaled_penalty_is_unscaled_before_use(penalty):
    """With a loss scale of 2^16 the penalty and its weight gradients equal the unscaled ones."""
    torch.manual_seed(0)
    D = Critic()
    real, fake, alpha = inputs()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)

    def run(s):
        D.zero_grad()
        p = gradient_penalty(D, real, fake, None, alpha, s) if penalty == "gp" else r1_penalty(D, real, None, s)
        p.backward()
        # the last bias has no gradient from an input-gradient penalty alone
        return p.detach(), [q.grad.clone() for q in D.parameters() if q.grad is not None]

    p0, g0 = run(None)
    p1, g1 = run(scaler)
    assert len(g0) == len(g1) > 0
    torch.testing.assert_close(p1, p0, rtol=1e-5, atol=1e-7)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_penalty_under_fp16_autocast_with_the_scaler_is_close_to_fp32():
    torch.manual_seed(0)
    D = Critic()
    real, fake, alpha = inputs()
    ref = gradient_penalty(D, real, fake, None, alpha).item()
    # a scale the GradScaler settles on: large, but the scaled seed gradient still fits in fp16
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    with torch.autocast("cpu", dtype=torch.float16):
        got = gradient_penalty(D, real, fake, None, alpha, scaler)
    assert got.dtype == torch.float32  # reduced in fp32
    assert got.item() == pytest.approx(ref, rel=2e-2)
    # too large a scale overflows fp16 (65536 > 65504): the penalty is non-finite, so the scaler
    # sees non-finite gradients, skips that step and lowers its scale
    with torch.autocast("cpu", dtype=torch.float16):
        over = gradient_penalty(D, real, fake, None, alpha, torch.amp.GradScaler("cpu", init_scale=2.0 ** 17))
    assert not torch.isfinite(over)


def test_bf16_wgan_gp_trains_with_finite_losses(tmp_path):
    run_train(tmp_path, "variant=wgan_gp", "train.steps=4", "train.mixed_precision=bf16")
    rows = metrics(tmp_path)
    assert len(rows) == 4
    for r in rows:
        assert all(math.isfinite(r[k]) for k in ("loss_d", "loss_g", "gp", "wasserstein"))
    assert "skipped_steps" not in rows[-1]  # no loss scaler in bf16


def test_fp16_without_a_gpu_is_refused_before_work(tmp_path):
    p = run_train(tmp_path / "run", "train.mixed_precision=fp16", check=False)
    assert p.returncode == 2
    assert "train.mixed_precision: fp16 needs a GPU" in p.stderr and "bf16" in p.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
