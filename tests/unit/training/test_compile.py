"""perf.compile: G and D's forward compiled by torch.compile (inductor), D's gradient penalty through the
uncompiled D (a compiled graph has no double backward): the same gradients as without compile."""
from __future__ import annotations

import torch

from gandist.training.tally import Verdict
from gandist import config
from gandist.backends.ddp import make_accelerator
from gandist.data.feed import make_feed
from gandist.draws import Draws
from gandist.training.step import Stepper, build_models
from tests.conftest import REPO, TINY


def stepper_for(tmp_path, compiled: bool) -> Stepper:
    cfg = config.load(REPO / "configs" / "quickstart.yaml", [*TINY, f"output.dir={tmp_path}", "variant=wgan_gp",
                                                             f"perf.compile={str(compiled).lower()}"])
    acc = make_accelerator(cfg)
    return Stepper(cfg, acc, build_models(cfg, acc), make_feed(cfg, 0, 1, acc.device),
                   Draws(0, cfg.train.batch_size, 0, 1, acc.device))


def test_wgan_gp_trains_compiled_with_the_penaltys_gradients_of_the_uncompiled_d(tmp_path):
    eager, fast = stepper_for(tmp_path / "eager", False), stepper_for(tmp_path / "fast", True)
    assert fast.m.D_fwd is not fast.m.D and eager.m.D_fwd is eager.m.D  # compiled forwards, and not
    real, y = eager.feed.batch(0)
    fake = eager.m.G(eager.draws.randn(0, "z_d", eager.cfg.model.z_dim), y).detach()
    grads, values = [], []
    for s in (eager, fast):
        loss, stats = s.objective.d_loss(s.m.D_fwd, real, fake, y, 0, 0, D_penalty=s.m.D)
        loss.backward()
        grads.append([p.grad.clone() for p in s.m.D_raw.parameters()])
        values.append({k: float(v) for k, v in stats.items()})
        s.m.opt_d.zero_grad(set_to_none=True)
    assert values[1]["gp"] > 0 and abs(values[0]["gp"] - values[1]["gp"]) <= 1e-5 * values[0]["gp"]
    for a, b in zip(*grads):  # D's weight gradients, penalty included
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    before = [p.detach().clone() for p in fast.m.D_raw.parameters()]
    for step in range(3):  # and it trains: rounds run, weights move, the losses stay finite
        fast.round(step)
    assert any(not torch.equal(a, b) for a, b in zip(before, fast.m.D_raw.parameters()))
    assert fast.tally.sync() == Verdict() and fast.counters.bad_total == 0
