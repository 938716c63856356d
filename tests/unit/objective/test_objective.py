"""The objective (gandist.objective) is assembled from registries: a new regulariser or loss is one
registered function, accepted by the config and used by the D step with no other change."""
from __future__ import annotations

import pytest
import torch

from gandist import config
from gandist.config import ConfigError
from gandist.config.help import help_text
from gandist.draws import Draws
from gandist.objective import Objective, losses, regularizers
from tests.conftest import REPO, TINY
from tests.unit.training.test_step import floats, make_stepper

QUICK = REPO / "configs" / "quickstart.yaml"


@pytest.fixture
def logit_penalty():
    """A regulariser registered by the test alone: the mean squared logit of real images, weight 0.25."""
    calls = []

    @regularizers.register_penalty("logit_l2", weight=lambda c: 0.25)
    def logit_l2(b: regularizers.CriticInputs) -> torch.Tensor:
        calls.append(b)
        return b.D(b.real, b.y).pow(2).mean()

    yield calls
    del regularizers.REGULARIZERS["logit_l2"]


def test_a_regulariser_added_by_registration_alone_is_configurable_and_used(tmp_path, logit_penalty):
    with pytest.raises(ConfigError, match="loss.regularizer: 'logit_l3' is not one of"):
        config.load(QUICK, ["loss.regularizer=logit_l3"])
    assert "logit_l2" in help_text("loss")
    stepper, m = make_stepper(tmp_path, "variant=wgan", "loss.regularizer=logit_l2", "model.d_norm=layer")
    stats = floats(stepper.d_step(0, 0)[0])
    assert len(logit_penalty) == 1 and logit_penalty[0].real.shape[0] == stepper.cfg.train.batch_size
    assert stats["loss_d"] == pytest.approx(stats["loss_d_adv"] + 0.25 * stats["logit_l2"], rel=1e-5)
    assert stats["logit_l2"] > 0


def test_a_loss_added_by_registration_alone_is_used_by_both_steps(tmp_path):
    # least squares GAN (Mao et al. 2017): D pushes real to 1 and fake to 0, G pushes fake to 1
    losses.register_adversarial("lsgan", lambda r, f: 0.5 * ((r - 1) ** 2).mean() + 0.5 * (f ** 2).mean(),
                                lambda f: 0.5 * ((f - 1) ** 2).mean())
    try:
        stepper, m = make_stepper(tmp_path, "loss.adversarial=lsgan")
        stats, _, y, _ = stepper.d_step(0, 0)
        stats = floats(stats)
        assert stats["loss_d"] == pytest.approx(stats["loss_d_adv"]) and "wasserstein" not in stats
        assert float(stepper.g_step(0, 0, y)["loss_g"]) > 0
    finally:
        del losses.ADVERSARIAL["lsgan"]


def test_penalties_are_weighted_as_the_papers_say(tmp_path):
    gp = floats(make_stepper(tmp_path / "gp", "variant=wgan_gp", "loss.gp_weight=3")[0].d_step(0, 0)[0])
    assert gp["loss_d"] == pytest.approx(gp["loss_d_adv"] + 3 * gp["gp"], rel=1e-5)
    r1 = floats(make_stepper(tmp_path / "r1", "variant=wgan_gp", "loss.regularizer=r1",
                           "loss.r1_gamma=4")[0].d_step(0, 0)[0])
    assert r1["loss_d"] == pytest.approx(r1["loss_d_adv"] + 0.5 * 4 * r1["r1"], rel=1e-5)


def test_instance_noise_anneals_linearly_to_zero():
    cfg = config.load(QUICK, [*TINY, "loss.instance_noise=0.2", "loss.instance_noise_steps=10"])
    obj = Objective(cfg.loss, 100, Draws(0, 8, 0, 1, torch.device("cpu")))
    assert [obj.instance_noise(s) for s in (0, 5, 10, 50)] == pytest.approx([0.2, 0.1, 0.0, 0.0])
    cfg = config.load(QUICK, [*TINY, "loss.instance_noise=0.2"])
    assert Objective(cfg.loss, 100, Draws(0, 8, 0, 1, torch.device("cpu"))).instance_noise(50) == pytest.approx(0.1)
