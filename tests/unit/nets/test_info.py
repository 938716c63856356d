"""InfoGAN's categorical code (model.info_codes): G reads it from its noise, D predicts it, the objective adds
the code's cross-entropy to both losses, and the grid, checkpoints and generator cards know about it."""
from __future__ import annotations

import pytest
import torch

from gandist import config, nets, trained
from gandist.config import ConfigError
from gandist.nets.conditioning import info_code
from gandist.training import checkpoint
from gandist.training.reporting import fixed_inputs
from tests.unit.nets.test_nets import build
from tests.unit.training.test_step import floats, make_stepper


def test_g_reads_a_uniform_one_hot_code_from_its_first_noise_values():
    z = torch.randn(4000, 16, generator=torch.Generator().manual_seed(0))
    codes = info_code(z, 4)
    assert torch.equal(codes, z[:, :4].argmax(1))
    counts = torch.bincount(codes, minlength=4)
    assert counts.min() > 900 and counts.max() < 1100  # uniform over the 4 codes
    _, G, _ = build("model.info_codes=4")
    latent = G.latent(z[:8], None)
    assert torch.equal(latent[:, :4], torch.nn.functional.one_hot(codes[:8], 4).float())
    assert torch.equal(latent[:, 4:], z[:8, 4:])
    # the code is all G sees of those values: raising a non-maximal one changes nothing
    z2 = z[:8].clone()
    low = z2[:, :4].argmin(1)
    z2[torch.arange(8), low] += 0.5 * (z2[:, :4].max(1).values - z2[torch.arange(8), low])
    G.eval()
    assert torch.equal(G(z[:8]), G(z2))


@pytest.mark.parametrize("arch", ["dcgan", "mlp", "resnet"])
def test_d_gives_the_code_logits_beside_its_own_and_keeps_the_other_weights(arch):
    torch.manual_seed(0)
    cfg, _, D = build(f"model.arch={arch}", "model.info_codes=5")
    torch.manual_seed(0)
    _, _, D0 = build(f"model.arch={arch}")
    x = torch.randn(3, 3, 32, 32)
    assert D(x).shape == (3, 6) and D0(x).shape == (3,)
    # the head is last: every other weight is the one the same seed gives without a code
    named = dict(D.named_parameters())
    assert list(named)[-2:] == ["info.weight", "info.bias"]
    assert all(torch.equal(named[k], v) for k, v in D0.named_parameters())


def test_the_objective_adds_the_codes_cross_entropy_to_both_losses(tmp_path):
    stepper, m = make_stepper(tmp_path, "model.info_codes=4", "loss.info_weight=0.5")
    stats, fake, y, codes = stepper.d_step(0, 0)
    stats = floats(stats)
    assert codes.shape == (fake.shape[0],) and 0 <= float(stats["info_acc"]) <= 1
    assert stats["loss_d"] == pytest.approx(stats["loss_d_adv"] + 0.5 * stats["loss_info"], rel=1e-5)
    assert stats["loss_info"] == pytest.approx(float(torch.log(torch.tensor(4.0))), rel=0.2)  # near chance at first
    # G's loss carries the term too: with the code's weight at 0, G's step gets another loss
    with_code = floats(stepper.objective.g_loss(m.D_raw, fake.detach(), y, 0, 0, codes)[1])["loss_g"]
    stepper.objective.cfg.info_weight = 0.0
    without = floats(stepper.objective.g_loss(m.D_raw, fake.detach(), y, 0, 0, codes)[1])["loss_g"]
    assert with_code > without
    with pytest.raises(ValueError, match="without their codes"):
        stepper.objective.g_loss(m.D_raw, fake.detach(), y, 0, 0, None)


def test_the_code_learns_in_a_few_steps(tmp_path):
    stepper, _ = make_stepper(tmp_path, "model.info_codes=4")
    accs = []
    for step in range(60):
        stats, fake, y, codes = stepper.d_step(step, step)
        stepper.g_step(step, step, y, fake, codes)
        accs.append(float(stats["info_acc"]))
    assert sum(accs[-10:]) / 10 > 0.8 > 0.5 > sum(accs[:5]) / 5  # D tells the 4 codes apart; at first it could not


def test_the_grid_has_one_code_a_row(tmp_path):
    cfg = config.load(None, ["model.info_codes=10", "log.grid_size=64"])
    z, y, nrow = fixed_inputs(cfg, "cpu")
    assert y is None and nrow == 10 and len(z) == 70
    assert torch.equal(info_code(z, 10), torch.arange(70) // 10)


def test_a_bad_code_count_is_refused_naming_the_key():
    for bad in ("model.info_codes=1", "model.info_codes=16"):
        with pytest.raises(ConfigError, match="model.info_codes"):
            config.load(None, ["model.z_dim=16", bad])


def test_a_checkpoint_without_a_code_does_not_resume_a_run_with_one(tmp_path):
    with_code = checkpoint.identity(config.load(None, ["model.info_codes=10"]))
    old = {k: v for k, v in checkpoint.identity(config.load(None, [])).items() if k != "info_codes"}
    checkpoint.check_compatible(tmp_path, {"identity": old}, checkpoint.identity(config.load(None, [])))
    with pytest.raises(checkpoint.CheckpointError, match="info_codes: checkpoint has 0, config has 10"):
        checkpoint.check_compatible(tmp_path, {"identity": old}, with_code)


def test_the_generator_card_rebuilds_the_coded_generator(tmp_path):
    cfg = config.load(None, ["model.z_dim=16", "model.g_width=8", "model.info_codes=4"])
    card = trained.generator_card(cfg)
    assert card["network"]["info_codes"] == 4
    G = nets.build_generator(**card["network"])
    assert G.info_codes == 4
    old = {**card, "network": {k: v for k, v in card["network"].items() if k != "info_codes"}}
    assert trained.check_card(old, tmp_path / "generator.json") and nets.build_generator(**old["network"]).info_codes == 0
    with pytest.raises(trained.GeneratorError, match="network.info_codes"):
        trained.check_card({**card, "network": {**card["network"], "info_codes": 16}}, tmp_path / "generator.json")
