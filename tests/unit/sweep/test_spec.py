"""A sweep spec (gandist/sweep/spec.py): its members, their names and overrides, and the refusals -- each one
line naming the file and the key (the member and the key for a bad value), before anything is written."""
from __future__ import annotations

import pytest
import yaml

from gandist.cli import UsageError
from gandist.sweep import cli, spec
from tests.conftest import REPO

QUICK = REPO / "configs" / "quickstart.yaml"


def write(tmp_path, **fields) -> str:
    data = {"config": str(QUICK), "out": str(tmp_path / "out"), **fields}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def test_a_grid_is_every_combination_named_by_its_values(tmp_path):
    s = spec.read(write(tmp_path, set={"train.steps": 20},
                        grid={"optim.lr_d": [1.0e-4, 2.0e-4], "loss.gp_weight": [1, 10], "train.seed": [1, 2]}))
    members = spec.expand(s)
    assert [m.index for m in members] == list(range(8))
    assert members[0].name == "lr_d=0.0001,gp_weight=1,seed=1"
    assert members[7].name == "lr_d=0.0002,gp_weight=10,seed=2"
    assert members[5].overrides == {"train.steps": 20, "optim.lr_d": 2.0e-4, "loss.gp_weight": 1, "train.seed": 2}
    assert members[5].args(s) == [str(QUICK), "train.steps=20", "optim.lr_d=0.0002", "loss.gp_weight=1",
                                  "train.seed=2", f"output.dir={tmp_path / 'out' / members[5].name}"]


def test_named_sets_times_the_grid_and_keys_that_share_a_last_part(tmp_path):
    s = spec.read(write(tmp_path, members={"hinge": {"loss.adversarial": "hinge"}, "base": None},
                        grid={"optim.lr_d": [1.0e-4], "optim.lr_g": [3.0e-4]}))
    assert [m.name for m in spec.expand(s)] == ["hinge,lr_d=0.0001,lr_g=0.0003", "base,lr_d=0.0001,lr_g=0.0003"]
    s = spec.read(write(tmp_path, grid={"model.z_dim": [8], "eval.num_samples": [4], "data.workers": [0, 1]}))
    assert spec.expand(s)[1].name == "z_dim=8,num_samples=4,workers=1"
    s = spec.read(write(tmp_path, grid={"optim.ema": [0.5], "train.seed": [1]}, members={"a": {}}))
    assert spec.expand(s)[0].name == "a,ema=0.5,seed=1"


@pytest.mark.parametrize("value", [1.0e-5, 2.0e-4, 0.1 + 0.2, 1.0e+30, 3, True, None, "no", "1e-4", "hinge",
                                   [1, 2], ["fid", "kid"], "color,translation"])
def test_override_text_reads_back_as_the_same_value(value):
    # config.load reads a key=value override's value as YAML (gandist/config/load.py)
    assert yaml.safe_load(spec.cli_value(value)) == value


def test_every_member_config_is_checked_and_loaded(tmp_path):
    s = spec.read(write(tmp_path, set={"train.steps": 7}, grid={"optim.lr_d": [1.0e-4, 3.0e-4]}))
    members = spec.check(s, spec.expand(s))
    assert [m.cfg.optim.lr_d for m in members] == [1.0e-4, 3.0e-4]
    assert members[1].cfg.output.dir == str(tmp_path / "out" / "lr_d=0.0003") and members[1].cfg.train.steps == 7


def refusal(tmp_path, **fields) -> str:
    path = write(tmp_path, **fields)
    with pytest.raises(UsageError) as e:
        s = spec.read(path)
        spec.check(s, spec.expand(s))
    text = str(e.value)
    assert "\n" not in text and path in text, text
    return text


def test_a_bad_value_on_one_axis_names_the_member_and_the_key(tmp_path):
    text = refusal(tmp_path, grid={"train.seed": [1, 2], "optim.lr_d": [2.0e-4, "fast"]})
    assert "member 1 (seed=1,lr_d=fast)" in text and "optim.lr_d" in text and "'fast'" in text
    text = refusal(tmp_path, grid={"optim.beta1": [0.5, 1.5]})
    assert "member 1 (beta1=1.5)" in text and "optim.beta1: 1.5 is above its maximum" in text
    text = refusal(tmp_path, members={"ok": {}, "typo": {"optim.lrd": 1.0}})
    assert "member 1 (typo)" in text and "'optim.lrd'" in text


@pytest.mark.parametrize("fields, words", [
    ({"grid": {"optim.lr_d": 1.0e-4}}, "grid optim.lr_d must be a non-empty list"),
    ({"grid": {"optim.lr_d": []}}, "grid optim.lr_d must be a non-empty list"),
    ({"grid": {"train.seed": [1, 1]}}, "grid train.seed lists a value twice"),
    ({"set": {"train.seed": 3}, "grid": {"train.seed": [1, 2]}}, "train.seed is given by set and grid"),
    ({"members": {"a": {"train.seed": 3}}, "grid": {"train.seed": [1]}}, "train.seed is given by members a and grid"),
    ({"set": {"output.dir": "x"}, "grid": {"train.seed": [1]}}, "set output.dir"),
    ({"grid": {"output.dir": ["a", "b"]}}, "output.dir is given by grid"),
    ({"grid": {"data.urls": ["a/b-{0..1}.tar"]}}, "cannot name a directory"),
    ({"members": {"a b": {}}}, "cannot name a directory"),
    ({"set": {"train.seed": 1}}, "give a grid"),
    ({"grid": {"train.seed": [1]}, "sbatch": ["--array=0-3"]}, "sbatch --array"),
    ({"grid": {"train.seed": [1]}, "sbatch": "--nodes=2"}, "sbatch must be a list"),
    ({"grid": {"train.seed": [1]}, "grids": {}}, "unknown key 'grids'"),
    ({"grid": {"train.seed": [1]}, "config": "configs/nope.yaml"}, "config configs/nope.yaml does not exist"),
])
def test_a_bad_spec_is_refused_in_one_line_naming_the_key(tmp_path, fields, words):
    assert words in refusal(tmp_path, **fields)


def test_gandist_sweep_refuses_a_bad_member_before_writing_anything(tmp_path, capsys):
    path = write(tmp_path, grid={"optim.lr_d": [2.0e-4, -1.0]})
    assert cli.main([path]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "member 1 (lr_d=-1)" in err and "optim.lr_d" in err, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_the_dry_run_lists_the_members_and_writes_nothing(tmp_path, capsys):
    path = write(tmp_path, set={"train.steps": 5}, grid={"optim.lr_d": [1.0e-4, 2.0e-4]})
    assert cli.main([path, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 member(s)" in out and "2 to run" in out, out
    assert "lr_d=0.0001  pending  start   optim.lr_d=0.0001" in out, out
    assert not (tmp_path / "out").exists()


def test_parallel_below_one_is_refused():
    with pytest.raises(SystemExit):
        cli.parse_args(["x.yaml", "--parallel", "0"])
