"""The typed config: layering, overrides, and the errors that stop a run before any work."""
from __future__ import annotations

import pytest
import yaml

from gandist import config
from gandist.config import ConfigError
from tests.conftest import REPO

QUICK = REPO / "configs" / "quickstart.yaml"


def test_file_then_overrides_then_variant_preset():
    cfg = config.load(QUICK, ["train.steps=7", "model.sync_bn=true", "variant=wgan_gp"])
    assert cfg.train.steps == 7 and cfg.model.sync_bn is True
    # the variant's preset comes beneath the file: wgan_gp's own optimizer and critic
    assert (cfg.optim.lr_d, cfg.optim.beta1, cfg.optim.beta2, cfg.optim.n_critic) == (1e-4, 0.0, 0.9, 5)
    assert cfg.loss.regularizer == "gp" and cfg.model.d_norm == "layer"
    # the file's own values still win over the preset
    assert cfg.model.g_width == yaml.safe_load(QUICK.read_text())["model"]["g_width"]


def test_exponent_floats_without_a_dot_are_floats(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  lr_d: 1e-4\n")
    cfg = config.load(f, ["optim.lr_g=2e-5"])
    assert (cfg.optim.lr_d, cfg.optim.lr_g) == (1e-4, 2e-5)
    with pytest.raises(ConfigError, match="optim.lr_g: expected float"):
        config.load(f, ["optim.lr_g=fast"])


def test_defaults_without_file():
    cfg = config.load(None, [])
    assert cfg.variant == "dcgan" and cfg.train.batch_size == 64 and cfg.train.mixed_precision == "no"


@pytest.mark.parametrize("override, words", [
    ("train.stepz=5", ["unknown key 'train.stepz'", "steps"]),
    ("nosuch.key=1", ["unknown key 'nosuch.key'", "train"]),
    ("train.steps=ten", ["train.steps", "expected int", "'ten'"]),
    ("train.steps=0", ["train.steps", "below its minimum 1"]),
    ("train.batch_size=-4", ["train.batch_size", "minimum"]),
    ("train.mixed_precision=fp8", ["train.mixed_precision", "'fp8'", "bf16"]),
    ("variant=biggan", ["variant", "'biggan'", "wgan_gp"]),
    ("optim.beta1=1.5", ["optim.beta1", "above its maximum"]),
    ("model.sync_bn=maybe", ["model.sync_bn", "expected bool"]),
    ("train.steps", ["key.sub=value"]),
    ("data.source=shards", ["data.urls", "no shard urls"]),
    ("loss.regularizer=gp", ["loss.regularizer", "model.d_norm=batch", "layer or none"]),
    ("loss.regularizer=r1", ["loss.regularizer: r1", "model.d_norm=batch"]),
])
def test_bad_overrides_name_the_key_and_what_is_allowed(override, words):
    with pytest.raises(ConfigError) as e:
        config.load(QUICK, [override])
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_errors_in_the_file_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("variant: dcgan\ntrain:\n  steps: 10\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'train.lr' in .*bad.yaml"):
        config.load(bad, [])
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(bad, [])
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "missing.yaml", [])
    bad.write_text("train:\n  batch_size: 1.5\n")
    with pytest.raises(ConfigError, match=r"train.batch_size: expected int, got 1.5 .* in .*bad.yaml"):
        config.load(bad, [])


def test_batch_size_must_divide_by_world_size():
    cfg = config.load(QUICK, ["train.batch_size=10"])
    config.check_world_size(cfg, 2)
    with pytest.raises(ConfigError, match="train.batch_size: 10 is not divisible by the world size 3"):
        config.check_world_size(cfg, 3)


def test_resolved_config_round_trips(tmp_path):
    cfg = config.load(QUICK, ["variant=cgan", "train.steps=3"])
    f = tmp_path / "resolved.yaml"
    f.write_text(config.dump(cfg))
    assert config.load(f, []) == cfg
