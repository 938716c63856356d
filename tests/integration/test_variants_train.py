"""Short real training runs of every variant and of compositions beyond the presets.

The runs go through a small driver that wraps the regularisers, so the tests see what the training
loop really passes to them (the gradient penalty's alpha) and when it calls them (the clip)."""
from __future__ import annotations

import json
import math
import subprocess

import pytest
import torch

from gandist import config, trained
from gandist.data.prepare import prepare
from gandist.variants import VARIANTS
from tests.conftest import REPO, env, metrics, train_cmd
from tests.data_fixtures import CELEBA_ATTRIBUTES, CELEBA_SIZE, make_celeba

STEPS = 20


# -- short real runs -------------------------------------------------------------------------------

DRIVER = r"""
import json, sys
from gandist.objective import regularizers
from gandist.train import main

rec = {"alpha": [], "clip_calls": 0, "clip_max": 0.0}
gp0, clip0 = regularizers.gradient_penalty, regularizers.clip_weights_

def gp(D, real, fake, y, alpha, scaler=None):
    rec["alpha"].append([float(a) for a in alpha])
    return gp0(D, real, fake, y, alpha, scaler)

def clip(D, c):
    clip0(D, c)
    rec["clip_calls"] += 1
    rec["clip_max"] = max(rec["clip_max"], max(float(p.abs().max()) for p in D.parameters()))

regularizers.gradient_penalty, regularizers.clip_weights_ = gp, clip
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    json.dump(rec, f)
sys.exit(code)
"""

# name -> overrides; every variant as a user tries it, plus compositions beyond the presets
RUNS = {v: [f"variant={v}"] for v in sorted(VARIANTS)}
RUNS.update({
    "wgan_gp_resnet": ["variant=wgan_gp", "model.arch=resnet", "model.d_norm=none"],
    "cgan_wgan_gp_projection": ["variant=cgan", "model.conditioning=projection", "model.d_norm=layer",
                                "loss.adversarial=wasserstein", "loss.regularizer=gp", "optim.n_critic=2"],
    "gan_g_steps": ["variant=gan", "optim.g_steps=3"],
    "sngan_hinge_r1_ema_diffaug_info": ["variant=dcgan", "model.arch=resnet", "model.d_norm=none",
                                   "model.spectral_norm=true", "loss.adversarial=hinge", "loss.regularizer=r1",
                                   "loss.diffaugment=color,translation,cutout", "optim.ema=0.9",
                                   "model.conditioning=projection", "model.info_codes=4"],
})
SHORT = {"wgan_gp_resnet": 4, "cgan_wgan_gp_projection": 6, "gan_g_steps": 6, "sngan_hinge_r1_ema_diffaug_info": 6}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Start every run at once (they are small and mostly wait on imports), then collect them."""
    root = tmp_path_factory.mktemp("variant_runs")
    procs = {}
    for name, overrides in RUNS.items():
        out = root / name
        cmd = train_cmd(out, *overrides, f"train.steps={SHORT.get(name, STEPS)}", "train.sample_every=10")
        assert cmd[1:3] == ["-m", "gandist.train"]
        cmd = [cmd[0], "-c", DRIVER, str(root / f"{name}.json"), *cmd[3:]]
        procs[name] = (out, subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT, text=True))
    done = {}
    for name, (out, p) in procs.items():
        log, _ = p.communicate(timeout=600)
        done[name] = (out, p.returncode, log, root / f"{name}.json")
    return done


def _finished(runs, name):
    out, code, log, rec = runs[name]
    assert code == 0, f"{name} exited {code}\n{log[-6000:]}"
    rows = metrics(out)
    assert rows and rows[-1]["step"] == SHORT.get(name, STEPS)
    for r in rows:
        for k in ("loss_d", "loss_g", "d_real", "d_fake"):
            assert math.isfinite(r[k]), (name, r)
        assert r["bad_steps"] == 0
    return out, rows, json.loads(rec.read_text())


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_variant_trains_20_steps_on_the_embedded_dataset_with_finite_losses(runs, variant):
    out, rows, _ = _finished(runs, variant)
    assert len(rows) == STEPS  # log_every=1
    assert (out / "samples" / f"step_{STEPS:06d}.png").is_file()
    assert (out / "final" / "generator.safetensors").is_file()
    resolved = config.load(out / "config.yaml")
    assert resolved.variant == variant
    # the variant's preset really was what trained
    for key, want in VARIANTS[variant].preset.items():
        section, k = key.split(".")
        assert getattr(getattr(resolved, section), k) == want, key


@pytest.mark.parametrize("variant", ["wgan", "wgan_gp"])
def test_wgan_metrics_carry_the_wasserstein_estimate(runs, variant):
    _, rows, _ = _finished(runs, variant)
    for r in rows:
        assert r["wasserstein"] == pytest.approx(r["d_real"] - r["d_fake"], abs=1e-6)
        assert ("gp" in r) == (variant == "wgan_gp")
        if variant == "wgan_gp":
            assert r["gp"] >= 0 and r["loss_d"] == pytest.approx(r["loss_d_adv"] + 10 * r["gp"], rel=1e-5, abs=1e-5)
    _, other, _ = _finished(runs, "dcgan")
    assert not any("wasserstein" in r or "gp" in r for r in other)


def test_gradient_penalty_alpha_is_drawn_per_sample_in_every_critic_step(runs):
    _, _, rec = _finished(runs, "wgan_gp")
    alphas = rec["alpha"]
    assert len(alphas) == STEPS * 5  # n_critic = 5
    for a in alphas:
        assert len(a) == 8 and all(0.0 <= v < 1.0 for v in a)
        assert len(set(a)) == len(a)  # one alpha per sample, not one per batch
    assert len({tuple(a) for a in alphas}) == len(alphas)  # and fresh in every critic step


def test_wgan_clips_every_critic_parameter_after_every_critic_step(runs):
    out, _, rec = _finished(runs, "wgan")
    assert rec["clip_calls"] == STEPS * 5
    assert rec["clip_max"] <= 0.01
    from safetensors.torch import load_file

    from gandist import nets

    D = nets.build(config.load(out / "config.yaml"))[1]
    params = dict(D.named_parameters())
    saved = load_file(str(out / "final" / "discriminator.safetensors"))
    assert set(params) <= set(saved)
    for name in params:
        assert saved[name].abs().max().item() <= 0.01, name
    # clipping really bit: the N(0, 0.02) initial weights had values beyond c
    assert max(saved[n].abs().max().item() for n in params) == pytest.approx(0.01)


def test_no_clip_and_no_penalty_where_the_variant_has_none(runs):
    for name in ("gan", "dcgan", "cgan"):
        _, _, rec = _finished(runs, name)
        assert rec == {"alpha": [], "clip_calls": 0, "clip_max": 0.0}


def test_resnet_wgan_gp_trains(runs):
    _, rows, rec = _finished(runs, "wgan_gp_resnet")
    assert "gp" in rows[-1] and len(rec["alpha"]) == 4 * 5


def test_conditional_wgan_gp_with_a_projection_critic_trains(runs):
    out, rows, rec = _finished(runs, "cgan_wgan_gp_projection")
    assert all("wasserstein" in r and "gp" in r for r in rows)
    assert len(rec["alpha"]) == 6 * 2
    # the sample grid of a class-conditional run has one class per row: 10 columns
    from PIL import Image
    w, h = Image.open(out / "samples" / "step_000006.png").size
    assert w == 10 * 32 + 11 * 2


def test_several_g_steps_per_d_step(runs):
    _finished(runs, "gan_g_steps")


def test_hinge_spectral_norm_r1_diffaugment_ema_and_an_info_code_compose(runs):
    out, rows, _ = _finished(runs, "sngan_hinge_r1_ema_diffaug_info")
    # InfoGAN's code joins D's loss beside the penalty (which sees D's logit alone)
    assert all(r["r1"] >= 0 and r["loss_d"] == pytest.approx(r["loss_d_adv"] + 5 * r["r1"] + r["loss_info"],
                                                             rel=1e-5, abs=1e-5) for r in rows)
    assert all(0 <= r["info_acc"] <= 1 for r in rows)
    G = trained.load_generator(out / "final")  # the card rebuilds the coded G
    assert G.info_codes == 4
    from safetensors.torch import load_file

    g = load_file(str(out / "final" / "generator.safetensors"))
    ema = load_file(str(out / "final" / "generator_ema.safetensors"))
    assert g.keys() == ema.keys()
    # the average lags the trained weights, so it differs from them
    assert any(not torch.equal(g[k], ema[k]) for k in g if g[k].is_floating_point())
    d = load_file(str(out / "final" / "discriminator.safetensors"))
    assert any("parametrizations" in k for k in d)  # spectral norm in the critic


def test_conditional_celeba_config_trains_on_shards_of_a_celeba_folder(tmp_path):
    # The shipped config as a user runs it, on shards the prepare tool writes from a folder in CelebA's
    # format (178x218 JPEGs, the 40 official attributes); only the shard location and the sizes change.
    make_celeba(tmp_path / "celeba", n=16, size=CELEBA_SIZE, partition=False, names=CELEBA_ATTRIBUTES)
    shards = tmp_path / "celeba64"
    prepare("celeba", tmp_path / "celeba", shards, workers=0, progress=False)
    out = tmp_path / "run"
    p = subprocess.run(train_cmd(out, f"data.urls={shards}/train-{{000000..000000}}.tar", "train.steps=3",
                                 "data.workers=0", config="configs/cgan_celeba.yaml"),
                       cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(math.isfinite(r["loss_d"]) and "wasserstein" in r and "gp" in r for r in rows)
    from PIL import Image
    assert Image.open(out / "samples" / "step_000003.png").size[0] == 8 * 64 + 9 * 2  # 64 px faces, 8 per row
