"""ADA (Karras et al. 2020): the pipeline's operations, their gating by p, gradients through them, and the
controller that moves p toward the target r_t."""
import math
from types import SimpleNamespace

import pytest
import torch

from gandist.draws import Draws
from gandist.objective.ada import ADA, PIPELINE, ada_augment


def images(b=4, c=3, h=8, w=8):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1


def cfg(**kw):
    base = dict(ada=True, p=0.0, target=0.6, kimg=1.0, pipeline=list(PIPELINE), p_max=1.0)
    return SimpleNamespace(**{**base, **kw})


def test_p_zero_is_the_identity_and_p_one_changes_every_sample():
    x = images(b=64)
    rand = lambda n: Draws(0, 64, 0, 1, "cpu").rand(3, "ada", n)
    assert ada_augment(x, PIPELINE, 0.0, rand) is x
    out = ada_augment(x, PIPELINE, 1.0, rand)
    changed = (out - x).flatten(1).abs().amax(1) > 1e-6
    assert changed.float().mean() > 0.9  # only a sample whose every draw was the identity stays as it was


def test_each_operation_does_what_it_says():
    x = images(b=1)
    gate_open = lambda params: (lambda n: torch.tensor([[0.0, *params]]))
    torch.testing.assert_close(ada_augment(x, ("xflip",), 1.0, gate_open([0.2])), x.flip(3))
    torch.testing.assert_close(ada_augment(x, ("xflip",), 1.0, gate_open([0.7])), x)  # the identity half
    torch.testing.assert_close(ada_augment(x, ("rotate90",), 1.0, gate_open([0.3])), torch.rot90(x, 1, (2, 3)))
    # translation by +1 row (shift 1 of [-1, 1] for 8 px), reflected at the border: row 0 reads row 1
    out = ada_augment(x, ("translation",), 1.0, gate_open([0.99, 0.5]))
    torch.testing.assert_close(out[..., 1:, :], x[..., :-1, :])
    torch.testing.assert_close(out[..., 0, :], x[..., 1, :])
    # a closed gate leaves the image alone, whatever the parameters
    torch.testing.assert_close(ada_augment(x, PIPELINE, 0.5, lambda n: torch.full((1, n), 0.7)), x)


def test_gradients_flow_through_every_operation():
    x = images().requires_grad_(True)
    out = ada_augment(x, PIPELINE, 1.0, lambda n: Draws(0, 4, 0, 1, "cpu").rand(0, "ada", n))
    out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_two_ranks_rows_are_the_one_process_rows():
    x = images(b=8)
    whole = ada_augment(x, PIPELINE, 0.7, lambda n: Draws(5, 8, 0, 1, "cpu").rand(9, "ada_d_real", n))
    parts = [ada_augment(x[r * 4:(r + 1) * 4], PIPELINE, 0.7,
                         lambda n, r=r: Draws(5, 8, r, 2, "cpu").rand(9, "ada_d_real", n)) for r in range(2)]
    torch.testing.assert_close(torch.cat(parts), whole)


def test_controller_moves_p_toward_the_target_and_clamps():
    ada = ADA(cfg(kimg=0.1), "cpu")  # 100 images move p by 1
    ada.observe(torch.tensor([1.0, 1.0, 1.0, -1.0]))  # r_t = 0.5 < 0.6: p would fall, but stays at 0
    assert ada.adjust(ada.pending.tolist()) == {"ada_p": 0.0}
    for _ in range(5):
        ada.observe(torch.ones(10))  # r_t = 1: D overfits
    assert ada.adjust(ada.pending.tolist())["ada_p"] == pytest.approx(0.5)  # 50 images of 100
    assert ada.pending.tolist() == [0.0, 0.0]
    ada.observe(-torch.ones(20))
    assert ada.adjust([-20.0, 20.0])["ada_p"] == pytest.approx(0.3)
    ada.adjust([1000.0, 1000.0])
    assert ada.p == 1.0


def test_p_max_caps_what_the_controller_may_reach():
    ada = ADA(cfg(kimg=0.1, p_max=0.7), "cpu")
    assert ada.adjust([50.0, 50.0])["ada_p"] == pytest.approx(0.5)
    assert ada.adjust([1000.0, 1000.0])["ada_p"] == pytest.approx(0.7)  # r_t = 1 would take p to 1
    assert ada.adjust([-20.0, 20.0])["ada_p"] == pytest.approx(0.5)  # and it falls from the cap as before


def test_state_restores_p_and_the_sums_of_all_ranks_on_rank_0():
    ada = ADA(cfg(), "cpu")
    ada.p = 0.25
    state = ada.state_dict([7.0, 9.0])
    for rank, pending in ((0, [7.0, 9.0]), (1, [0.0, 0.0])):
        other = ADA(cfg(), "cpu")
        other.load_state_dict(state, rank)
        assert other.p == 0.25 and other.pending.tolist() == pending


def test_fixed_p_without_the_controller_counts_nothing():
    ada = ADA(cfg(ada=False, p=0.3), "cpu")
    ada.observe(torch.ones(4))
    assert ada.on and ada.totals() == {} and ada.pending.tolist() == [0.0, 0.0]
    assert not ADA(cfg(ada=False), "cpu").on
    assert math.isnan(ada.r_t)
