"""The D and G steps (gandist.step): what each one may touch, the labels G is given, the lrs."""
from __future__ import annotations

import pytest
import torch

from gandist import config, nets
from gandist.data.feed import make_feed
from gandist.distributed import Draws, make_accelerator
from gandist.step import Models, Stepper
from tests.conftest import REPO, TINY


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
    _, y = stepper.d_step(0, 0)
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
    stats, _ = stepper.d_step(0, 0)
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
