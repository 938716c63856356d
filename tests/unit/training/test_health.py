"""The health checks on sequences of logged values: each condition is named once it holds health.patience log
steps in a row after health.warmup, with the keys to try; healthy values raise nothing."""
import pytest
import torch

from gandist import config
from gandist.training.health import Health, diversity
from tests.conftest import REPO


def health(*overrides):
    return Health(config.load(REPO / "configs" / "quickstart.yaml",
                              ["health.warmup=20", "health.patience=3", *overrides]))


def run(h, rows, bad=None):
    """Feed rows of logged values at steps 10, 20, ...; the names of what is reported, per step."""
    said = {}
    for i, row in enumerate(rows):
        step = 10 * (i + 1)
        _, new = h.check(step, row, (bad or [0] * len(rows))[i])
        said.update({step: [f.name for f in new]} if new else {})
    return said


HEALTHY = {"loss_g": 1.5, "r_t": 0.4, "d_fake_caught": 0.7, "diversity": 0.9}


def test_healthy_values_raise_nothing():
    h = health()
    assert run(h, [HEALTHY] * 20) == {}
    assert h.summary_rows() == [("health", "no warnings")]


def test_d_overpowering_g_needs_near_perfect_d_and_climbing_g_loss():
    rows = [{**HEALTHY, "r_t": 1.0, "d_fake_caught": 0.99, "loss_g": 2.0 + 0.5 * i} for i in range(8)]
    said = run(health(), rows)
    # 3 log steps in a row after step 20; "climbs" compares with the mean of the 3 before, from step 40
    assert said == {50: ["D overfitting"], 60: ["D overpowering G"]}
    flat = [{**r, "loss_g": 2.0} for r in rows]  # a perfect D with a steady G loss is not "overpowering"
    assert "D overpowering G" not in sum(run(health(), flat).values(), [])


def test_d_overfitting_from_r_t_or_the_held_out_gap():
    rows = [{**HEALTHY, "r_t": 0.95}] * 6
    assert run(health(), rows) == {50: ["D overfitting"]}
    gap = [{**HEALTHY, "r_t": 0.7, "r_heldout": 0.2}] * 6
    h = health()
    assert run(h, gap) == {50: ["D overfitting"]}
    (name, text), = h.summary_rows()
    assert name == "health: D overfitting" and "held-out" in text and "augment.ada=true" in text


def test_mode_collapse_and_its_episodes():
    low = {**HEALTHY, "diversity": 0.05}
    said = run(health(), [low] * 5 + [HEALTHY] * 2 + [low] * 4)
    assert said == {50: ["mode collapse"], 100: ["mode collapse"]}  # each episode, when it starts


def test_divergence_is_named_at_once_even_in_warmup():
    h = health()
    assert run(h, [HEALTHY] * 4, bad=[1, 2, 2, 5]) == {10: ["divergence"], 40: ["divergence"]}
    assert "optim.lr_d" in h.summary_rows()[0][1]
    resumed = Health(h.cfg, resumed=True)  # the checkpoint's count is old news
    assert run(resumed, [HEALTHY] * 3, bad=[7, 7, 8]) == {30: ["divergence"]}


def test_a_critic_is_not_judged_by_its_signs():
    rows = [{**HEALTHY, "r_t": 1.0, "d_fake_caught": 1.0, "loss_g": float(i)} for i in range(8)]
    assert run(health("variant=wgan_gp", "model.d_norm=layer", "loss.adversarial=wasserstein"), rows) == {}


def test_diversity_of_a_constant_is_zero_and_of_the_data_one():
    real = torch.rand(16, 3, 8, 8)
    assert diversity(real[:1].expand(16, -1, -1, -1), real) == 0
    assert diversity(real, real) == pytest.approx(1.0)
    assert 0.9 < diversity(torch.rand(16, 3, 8, 8), real) < 1.1
