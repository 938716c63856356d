"""The typed config: layering, overrides, and the errors that stop a run before any work."""
from __future__ import annotations

import re

import pytest
import yaml

from gandist import config
from gandist.config.load import _flatten
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


def test_ada_may_not_start_above_its_cap():
    with pytest.raises(ConfigError, match=r"augment.p: ADA starts at 0.9, above augment.p_max=0.6"):
        config.load(QUICK, ["augment.ada=true", "augment.p=0.9", "augment.p_max=0.6"])
    assert config.load(QUICK, ["augment.p=0.9", "augment.p_max=0.6"]).augment.p == 0.9  # a fixed p has no cap


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


# -- NaN and infinities (issue 19): NaN passes every min/max comparison, so it is refused explicitly ---------

def _float_keys(obj=None, prefix="") -> list[str]:
    """Every float key of the schema, found from its dataclasses (no hand list)."""
    import dataclasses
    import typing

    obj = config.Config() if obj is None else obj
    hints, keys = typing.get_type_hints(type(obj)), []
    for f in dataclasses.fields(obj):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            keys += _float_keys(getattr(obj, f.name), f"{prefix}{f.name}.")
        elif tp is float or float in typing.get_args(tp):
            keys.append(f"{prefix}{f.name}")
    return keys


@pytest.mark.parametrize("override", ["optim.lr_g=nan", "optim.lr_d=inf", "optim.beta1=-inf", "loss.gp_weight=NaN",
                                      "train.fp16_init_scale=1e999", "deepspeed.gradient_clipping=.inf",
                                      "optim.ema=-.inf", "loss.clip=.nan"])
def test_nan_and_inf_on_the_command_line_are_refused_naming_the_key(override):
    key, value = override.split("=")
    with pytest.raises(ConfigError) as e:
        config.load(QUICK, [override])
    assert str(e.value).startswith(f"{key}: ") and "not a finite number" in str(e.value)
    assert "in the command line" in str(e.value)


@pytest.mark.parametrize("section, key, value", [("optim", "lr_g", ".nan"), ("optim", "lr_d", "nan"),
                                                 ("loss", "gp_weight", ".inf"), ("loss", "r1_gamma", "-.inf"),
                                                 ("optim", "beta2", "-inf"), ("train", "fp16_init_scale", ".NaN")])
def test_nan_and_inf_in_a_yaml_file_are_refused_naming_the_key_and_file(tmp_path, section, key, value):
    f = tmp_path / "c.yaml"
    f.write_text(f"{section}:\n  {key}: {value}\n")
    with pytest.raises(ConfigError, match=rf"^{section}\.{key}: .* is not a finite number .* in {re.escape(str(f))}$"):
        config.load(f, [])


def test_every_float_key_refuses_nan_and_inf():
    keys = _float_keys()
    assert {"optim.lr_g", "optim.beta1", "loss.gp_weight", "train.fp16_init_scale"} <= set(keys)
    for key in keys:
        for bad in ("nan", "inf", "-inf"):
            with pytest.raises(ConfigError, match=rf"^{key}: .*not a finite number"):
                config.load(QUICK, [f"{key}={bad}"])
    # finite values are still fine, and checked against their range as before
    assert config.load(QUICK, ["optim.lr_g=1e-3"]).optim.lr_g == 1e-3
    with pytest.raises(ConfigError, match="optim.beta1: 2.0 is above its maximum"):
        config.load(QUICK, ["optim.beta1=2"])


def test_a_nan_inside_a_list_value_is_refused(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  attributes: [Smiling, .nan]\n")
    with pytest.raises(ConfigError, match=rf"^data\.attributes: nan is not a finite number .* in {re.escape(str(f))}$"):
        config.load(f, [])


def test_a_folder_as_config_says_it_is_a_folder(tmp_path):
    with pytest.raises(ConfigError) as e:
        config.load(REPO / "configs", [])
    assert "is a folder, not a config file" in str(e.value) and "does not exist" not in str(e.value)
    assert "give one YAML file, e.g. " in str(e.value) and str(REPO / "configs" / "cgan_celeba.yaml") in str(e.value)
    with pytest.raises(ConfigError, match=rf"^config file {re.escape(str(tmp_path))} is a folder, not a config file; "
                                          rf"give one YAML file$"):
        config.load(tmp_path, [])


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


# -- every key is checked at load, before any file is touched --------------------------------------

@pytest.mark.parametrize("bad, words", [
    ("eval.metrics=[fid,fdi]", "eval.metrics: 'fdi' is not one of"),
    ("loss.diffaugment=color,rotate", "loss.diffaugment: unknown policy ['rotate']"),
    ("eval.feature_weights=/nonexistent/inception.pth", "eval.feature_weights: /nonexistent/inception.pth does not"),
])
def test_a_bad_key_leaves_an_existing_run_directory_intact(tmp_path, capsys, bad, words):
    """train.resume=no train.overwrite=true deletes a run's checkpoints; a typo anywhere must stop the
    run before that (these keys were once checked only after the run directory was prepared)."""
    from gandist.train import main

    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "step_00000005"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer.json").write_text('{"step": 5}')
    (run / "metrics.jsonl").write_text('{"step": 5}\n')
    before = sorted((p.relative_to(run), p.read_bytes()) for p in run.rglob("*") if p.is_file())
    code = main(["--config", str(QUICK), f"output.dir={run}", "train.resume=no", "train.overwrite=true",
                 "eval.metrics=[kid]", bad])
    assert code == 2
    assert words in capsys.readouterr().err
    assert sorted((p.relative_to(run), p.read_bytes()) for p in run.rglob("*") if p.is_file()) == before


def test_help_config_shows_every_key_with_type_default_choices_and_help(capsys):
    from gandist.train import main

    assert main(["--help-config"]) == 0
    text = capsys.readouterr().out
    cfg = config.Config()
    for section in ("model", "loss", "optim", "data", "train", "checkpoint", "log", "eval", "output"):
        for key in _flatten({section: config.to_dict(cfg)[section]}):
            assert f"  {key}  (" in text, key
    assert "loss.regularizer  (str, default 'none')" in text and "allowed: none, gp, r1, clip" in text
    assert "optim.n_critic  (int, default 1)" in text and "variant presets: wgan: 5; wgan_gp: 5" in text
    # every key has its help written
    lines = text.splitlines()
    keys = [i for i, line in enumerate(lines) if line.startswith("  ") and not line.startswith("   ")]
    no_help = [lines[i] for i in keys if not lines[i + 1].startswith("      ")
               or lines[i + 1].strip().startswith(("allowed:", "range:", "variant presets:"))]
    assert len(keys) > 50 and not no_help
    assert main(["--help-config", "loss"]) == 0
    one = capsys.readouterr().out
    assert "loss.gp_weight" in one and "optim.lr_g" not in one
    assert main(["--help-config", "lossy"]) == 2
    assert "no section 'lossy'; the sections are model, loss" in capsys.readouterr().err


def test_a_class_conditional_grid_shows_whole_rows():
    from gandist.training.reporting import fixed_inputs

    z, y, nrow = fixed_inputs(config.load(QUICK, ["variant=cgan", "log.grid_size=64"]), "cpu")
    assert (len(z), nrow) == (70, 10) and y.argmax(1).tolist() == [i // 10 for i in range(70)]
    z, y, nrow = fixed_inputs(config.load(QUICK, ["log.grid_size=64"]), "cpu")
    assert (len(z), nrow, y) == (64, 8, None)
