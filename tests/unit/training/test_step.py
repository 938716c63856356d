"""The D and G steps (gandist.training.step): what each one may touch, the labels G is given, the lrs."""
from __future__ import annotations

import pytest
import torch

from gandist.training.tally import Verdict
from gandist import config, nets
from gandist.backends.ddp import make_accelerator
from gandist.data.feed import make_feed
from gandist.draws import Draws
from gandist.training.step import Models, Stepper, build_models
from gandist.training.tally import NonFiniteLoss
from tests.conftest import REPO, TINY


def floats(stats: dict) -> dict:
    """A step's logged values (0-dim device tensors) as Python floats."""
    return {k: float(v) for k, v in stats.items()}


def make_stepper(tmp_path, *overrides):
    cfg = config.load(REPO / "configs" / "quickstart.yaml", [*TINY, f"output.dir={tmp_path}", *overrides])
    acc = make_accelerator(cfg)
    torch.manual_seed(0)
    G, D = nets.build(cfg)
    opt_g = torch.optim.Adam(G.parameters(), 1e-3)
    opt_d = torch.optim.Adam(D.parameters(), 1e-3)
    G, D, opt_g, opt_d = acc.prepare(G, D, opt_g, opt_d)
    m = Models(G, D, acc.unwrap_model(G), acc.unwrap_model(D), opt_g, opt_d)
    data = make_feed(cfg, 0, 1, acc.device)
    return Stepper(cfg, acc, m, data, Draws(0, cfg.train.batch_size, 0, 1, acc.device)), m


def test_g_step_runs_d_frozen_and_changes_only_g(tmp_path):
    stepper, m = make_stepper(tmp_path, "variant=wgan_gp")
    seen = []
    m.D_raw.register_forward_pre_hook(lambda mod, args: seen.append(any(p.requires_grad for p in mod.parameters())))
    _, _, y, _ = stepper.d_step(0, 0)
    assert seen and all(seen)  # D trains in its own step (real, fake, interpolates)
    d_before = [p.detach().clone() for p in m.D_raw.parameters()]
    g_before = [p.detach().clone() for p in m.G_raw.parameters()]
    seen.clear()
    stepper.g_step(0, 0, y)
    assert seen == [False]  # one D forward, with every D parameter frozen
    assert all(p.requires_grad for p in m.D_raw.parameters())  # and unfrozen afterwards
    assert all(torch.equal(a, b) for a, b in zip(d_before, m.D_raw.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(g_before, m.G_raw.parameters()))
    assert all(p.grad is None for p in m.D_raw.parameters())  # nothing left to leak into the next D step


def test_d_step_changes_only_d_and_clip_bounds_every_critic_parameter(tmp_path):
    stepper, m = make_stepper(tmp_path, "variant=wgan")
    g_before = [p.detach().clone() for p in m.G_raw.parameters()]
    stats = floats(stepper.d_step(0, 0)[0])
    assert all(torch.equal(a, b) for a, b in zip(g_before, m.G_raw.parameters()))
    c = stepper.cfg.loss.clip
    assert all(p.abs().max() <= c for p in m.D_raw.parameters())
    assert stats["wasserstein"] == pytest.approx(stats["d_real"] - stats["d_fake"], abs=1e-6)


@pytest.mark.parametrize("aug", ["loss.instance_noise=0.5", "loss.diffaugment=color,translation,cutout"])
def test_real_and_fake_get_independent_noise_and_augmentation(tmp_path, aug):
    # Real and fake images made identical: D's two inputs may differ only by their own draws.
    stepper, m = make_stepper(tmp_path, aug)
    x = torch.linspace(-1, 1, 3 * 32 * 32).view(1, 3, 32, 32).expand(stepper.cfg.train.batch_size, -1, -1, -1)
    stepper.feed.batch = lambda j: (x.clone(), None)
    m.G = lambda z, y: x.clone()
    seen = []
    m.D_raw.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    stepper.d_step(0, 0)
    real_in, fake_in = seen
    assert not torch.equal(real_in, x) and not torch.equal(fake_in, x)  # both were transformed
    assert not torch.equal(real_in, fake_in)  # and not by the same draw


@pytest.mark.parametrize("decay", ["none", "linear"])
def test_learning_rates_are_a_function_of_the_step(tmp_path, decay):
    stepper, m = make_stepper(tmp_path, "train.steps=10", f"optim.lr_decay={decay}", "optim.lr_g=1e-3",
                              "optim.lr_d=4e-3")
    for opt in (m.opt_g, m.opt_d):
        opt.param_groups[0]["lr"] = 123.0  # e.g. what a checkpoint of another config restored
    stepper.round(4)
    f = 0.6 if decay == "linear" else 1.0  # 1 - 4/10
    assert m.opt_g.param_groups[0]["lr"] == pytest.approx(1e-3 * f)
    assert m.opt_d.param_groups[0]["lr"] == pytest.approx(4e-3 * f)


@pytest.mark.parametrize("impl", ["fused", "foreach"])
def test_a_non_finite_step_changes_nothing_is_counted_and_a_streak_stops_the_run_at_the_next_sync(tmp_path, impl):
    cfg = config.load(REPO / "configs" / "quickstart.yaml", [*TINY, f"output.dir={tmp_path}", f"perf.optimizer={impl}",
                                                             "train.max_bad_steps=3"])
    acc = make_accelerator(cfg)
    stepper = Stepper(cfg, acc, build_models(cfg, acc), make_feed(cfg, 0, 1, acc.device),
                      Draws(0, cfg.train.batch_size, 0, 1, acc.device))
    m, d_loss = stepper.m, stepper.objective.d_loss
    stepper.round(0)
    stepper.objective.d_loss = lambda *a, **k: (lambda loss, stats: (loss * float("nan"), stats))(*d_loss(*a, **k))
    d_before = [p.detach().clone() for p in m.D_raw.parameters()]
    moments = [s["exp_avg"].clone() for s in m.opt_d.state.values()]
    steps = [float(s["step"]) for s in m.opt_d.state.values()]
    g_before = [p.detach().clone() for p in m.G_raw.parameters()]
    stepper.round(1)
    stepper.round(2)
    # D's two steps were skipped: weights, moments and Adam's step count as they were; G trained on
    assert all(torch.equal(a, b) for a, b in zip(d_before, m.D_raw.parameters()))
    assert all(torch.equal(a, s["exp_avg"]) for a, s in zip(moments, m.opt_d.state.values()))
    assert [float(s["step"]) for s in m.opt_d.state.values()] == steps
    assert any(not torch.equal(a, b) for a, b in zip(g_before, m.G_raw.parameters()))
    assert stepper.tally.sync() == Verdict()  # two in a row: counted, not yet fatal
    assert stepper.counters.bad_total == 2 and stepper.counters.bad_streaks == {"loss_d": 2, "loss_g": 0}
    stepper.round(3)
    stepper.objective.d_loss = d_loss
    stepper.round(4)  # a good step after the third bad one: the streak the next sync sees is over, but it was 3
    with pytest.raises(NonFiniteLoss, match=r"loss_d was non-finite for 3 steps in a row \(train.max_bad_steps=3\)"):
        stepper.tally.sync()
    assert stepper.counters.bad_total == 3 and stepper.counters.bad_streaks == {"loss_d": 0, "loss_g": 0}


def test_the_g_step_reuses_the_d_steps_fakes_with_one_d_step_a_round(tmp_path):
    calls = []
    for n_critic, reused in ((1, True), (2, False)):
        stepper, m = make_stepper(tmp_path / str(n_critic), f"optim.n_critic={n_critic}")
        m.G_raw.register_forward_hook(lambda mod, args, out: calls.append(out.requires_grad))
        calls.clear()
        stepper.round(0)
        # one G forward a round, with its graph kept for G's step; else one a D step (no graph) and G's own
        assert calls == ([True] if reused else [False, False, True])
