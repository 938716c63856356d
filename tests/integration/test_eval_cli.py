"""gandist-eval and gandist-sample on a tiny trained run (a class-conditional G with an EMA), with the
random-weights Inception file of tests/metrics_fixtures.py."""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from gandist import eval as gev
from gandist import sample as gsample
from gandist.cli import EXIT_USAGE, UsageError
from tests.conftest import REPO, env, run_train
from tests import metrics_fixtures
from tests.metrics_fixtures import make_random_judge, tiny_cfg

inception_weights = metrics_fixtures.inception_weights  # the session fixture, by its name here


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("metrics_cli") / "run"
    run_train(out, "train.steps=1", "variant=cgan", "optim.ema=0.5")
    assert (out / "final" / "generator_ema.safetensors").is_file()
    return out


def grid_size(n: int, per_row: int, px: int = 32, pad: int = 2) -> tuple[int, int]:
    """torchvision make_grid's (width, height) for n images of px x px."""
    cols = min(per_row, n)
    rows = math.ceil(n / cols)
    return cols * (px + pad) + pad, rows * (px + pad) + pad


# -- gandist-eval -------------------------------------------------------------------------------------

def test_eval_writes_eval_json_with_the_requested_metrics(run, inception_weights, capsys):
    rc = gev.main([str(run), "--metrics", "fid,kid,isc", "--num-samples", "6", "--feature-weights",
                   str(inception_weights), "--feature-layer", "64", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    rec = json.loads((run / "eval.json").read_text())
    assert set(rec["metrics"]) == {"fid", "kid", "kid_std", "isc", "isc_std"}
    assert all(math.isfinite(v) for v in rec["metrics"].values())
    assert rec["metrics"]["fid"] > 0 and rec["metrics"]["isc"] >= 1.0
    assert rec["generator"] == "final/generator_ema.safetensors"  # the EMA generator when the run has one
    assert rec["num_samples"] == 6 and rec["real_samples"] == 6 and rec["feature_layer"] == "64"
    assert rec["feature_weights"] == str(Path(inception_weights).resolve())
    assert "fid" in out and "isc" in out and f"wrote {run / 'eval.json'}" in out

    # the other generator, the sample count from a config override, only what is asked for
    rc = gev.main([str(run), "--metrics", "kid", "--checkpoint", "final", "eval.num_samples=4", "--feature-weights",
                   str(inception_weights), "--feature-layer", "64", "--no-progress"])
    assert rc == 0, capsys.readouterr()
    rec = json.loads((run / "eval.json").read_text())
    assert set(rec["metrics"]) == {"kid", "kid_std"}
    assert rec["generator"] == "final/generator.safetensors" and rec["num_samples"] == 4


def test_eval_with_a_judge_scores_offline_against_its_floor(run, tmp_path, capsys):
    judge_file = make_random_judge(tmp_path / "judge.safetensors")  # its floor: 1.0 from 12 images
    # no Inception weights file and a judge: the judge's metrics only (nothing to download)
    rc = gev.main([str(run), "--judge", str(judge_file), "--num-samples", "20", "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 0, cap
    rec = json.loads((run / "eval.json").read_text())
    assert set(rec["metrics"]) == {"judge_fd", "judge_fd_ratio", "judge_acc", "judge_mix", "precision", "recall",
                                   "density", "coverage"}
    assert rec["metrics"]["judge_fd_ratio"] == rec["metrics"]["judge_fd"] > 0
    assert 0 <= rec["metrics"]["judge_acc"] <= 1 and rec["real_samples"] == 20
    assert rec["judge"]["floor_fd"] == 1.0 and rec["judge"]["real_accuracy"] == 0.5
    assert rec["feature_weights"] is None  # no Inception metric ran
    assert "judge floor (real vs real FD)" in cap.out and "judge_fd_ratio" in cap.out
    assert "the judge's floor was measured on 12 images and this evaluation uses 20" in cap.err

    assert f"--judge: {tmp_path / 'none'} does not exist" in _eval_error(capsys, run, "--judge", tmp_path / "none")
    grey = make_random_judge(tmp_path / "grey.safetensors", resolution=28, channels=1)
    assert "judges resolution 28, but the run's data.resolution is 32" in _eval_error(
        capsys, run, "--metrics", "judge_fd", "--judge", grey)
    assert "eval.judge: judge_fd read the judge" in _eval_error(capsys, run, "--metrics", "judge_fd")


def _eval_error(capsys, *argv) -> str:
    rc = gev.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE, err
    assert "Traceback" not in err
    return err


def test_eval_errors_name_what_is_wrong(run, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert f"run directory {missing} does not exist" in _eval_error(capsys, missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert f"{empty / 'config.yaml'} does not exist" in _eval_error(capsys, empty)

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(run / "config.yaml", unfinished / "config.yaml")
    assert f"{unfinished / 'final' / 'generator.safetensors'} does not exist" in _eval_error(capsys, unfinished)
    (unfinished / "final").mkdir()
    shutil.copy(run / "final" / "generator.safetensors", unfinished / "final")
    err = _eval_error(capsys, unfinished, "--checkpoint", "ema")
    assert "generator_ema.safetensors does not exist" in err and "optim.ema" in err

    assert "unknown metric 'fdi': choose from fid, isc, kid" in _eval_error(capsys, run, "--metrics", "fid,fdi")
    w = tmp_path / "no-weights.pth"
    assert f"--feature-weights: {w} does not exist" in _eval_error(capsys, run, "--feature-weights", w)
    assert f"eval.feature_weights: {w} does not exist" in _eval_error(capsys, run, f"eval.feature_weights={w}")
    assert "unknown key 'eval.metric'" in _eval_error(capsys, run, "eval.metric=fid")
    err = _eval_error(capsys, run, "model.g_width=16", "--feature-weights", run / "config.yaml")
    assert "final/generator_ema.safetensors does not fit the generator" in err
    (unfinished / "final" / "generator.safetensors").write_bytes(b"garbage")
    assert "generator.safetensors is not a readable safetensors file" in _eval_error(
        capsys, unfinished, "--feature-weights", run / "config.yaml")

    # the module entry point, as a user runs it
    p = subprocess.run([sys.executable, "-m", "gandist.eval", str(missing)], cwd=REPO, env=env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and re.search(rf"^gandist-eval: error \(rank 0 on \S+\): run directory "
                                           rf"{re.escape(str(missing))} does not exist$", p.stderr, re.M), p.stderr


# -- gandist-sample -----------------------------------------------------------------------------------

def test_sample_writes_a_grid_with_a_class_per_row_and_single_images(run, tmp_path, capsys):
    grid, each = tmp_path / "grid.png", tmp_path / "each"
    assert gsample.main([str(run), "--n", "12", "--out", str(grid), "--out-dir", str(each)]) == 0
    assert "final/generator_ema.safetensors" in capsys.readouterr().out
    assert Image.open(grid).size == grid_size(12, 10)  # 10 classes: rows of 10, row r = class r
    names = sorted(p.name for p in each.iterdir())
    assert names == [f"{i:06d}_class{i // 10}.png" for i in range(12)]
    im = Image.open(each / names[0])
    assert im.size == (32, 32) and im.mode == "RGB"

    # the same seed gives the same images; another seed others
    again = tmp_path / "again.png"
    gsample.main([str(run), "--n", "12", "--out", str(again)])
    assert again.read_bytes() == grid.read_bytes()
    other = tmp_path / "other.png"
    gsample.main([str(run), "--n", "12", "--out", str(other), "--seed", "1"])
    assert other.read_bytes() != grid.read_bytes()

    # one class: a square grid, every image conditioned on it
    one = tmp_path / "one.png"
    assert gsample.main([str(run), "--n", "9", "--label", "3", "--out", str(one), "--out-dir", str(tmp_path / "c3")]) == 0
    assert Image.open(one).size == grid_size(9, 3)
    assert all(p.name.endswith("_class3.png") for p in (tmp_path / "c3").iterdir())

    # the module entry point with its default output path
    p = subprocess.run([sys.executable, "-m", "gandist.sample", str(run), "--n", "4", "--checkpoint", "final"],
                       cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert Image.open(run / "samples" / "sample_seed0.png").size == grid_size(4, 10)
    assert "final/generator.safetensors" in p.stdout


def test_sample_grey_unconditional_model_and_conditions(tmp_path, capsys):
    """A run directory made by hand (config.yaml + final/generator.safetensors): the CLI's whole contract."""
    from safetensors.torch import save_file

    from gandist import config, nets

    cfg = tiny_cfg("data.channels=1", "variant=dcgan")
    d = tmp_path / "grey"
    (d / "final").mkdir(parents=True)
    (d / "config.yaml").write_text(config.dump(cfg))
    G, _ = nets.build(cfg)
    save_file({k: v.contiguous() for k, v in G.state_dict().items()}, str(d / "final" / "generator.safetensors"))
    grid = tmp_path / "g.png"
    assert gsample.main([str(d), "--n", "5", "--out", str(grid), "--out-dir", str(tmp_path / "each")]) == 0
    assert Image.open(grid).size == grid_size(5, 2)  # int(sqrt(5)) per row
    im = Image.open(tmp_path / "each" / "000004.png")
    assert im.mode == "L" and im.size == (32, 32)

    def sample_error(*argv) -> str:
        assert gsample.main([str(a) for a in argv]) == EXIT_USAGE
        return capsys.readouterr().err

    assert "--label: the model of this run is unconditional" in sample_error(d, "--label", "1")
    assert "--out: " in sample_error(d, "--out", tmp_path / "g.jpg")
    assert "--n: must be at least 1" in sample_error(d, "--n", "0")
    assert f"run directory {tmp_path / 'x'} does not exist" in sample_error(tmp_path / "x")

    classes = tiny_cfg("variant=cgan")
    y, per_row, labels = gsample.conditions(classes, 23, 0)
    assert per_row == 10 and labels == [i // 10 for i in range(23)] and y.argmax(1).tolist() == labels
    with pytest.raises(UsageError, match=r"--label: 10 is not a class of this model \(0..9\)"):
        gsample.conditions(classes, 4, 0, label=10)
    with pytest.raises(UsageError, match="use --label"):
        gsample.conditions(classes, 4, 0, attributes="Male")
    attrs = tiny_cfg("variant=cgan", "data.attributes=[Male,Smiling,Young]", "data.label_key=attr")
    y, _, _ = gsample.conditions(attrs, 2, 0, attributes="Young,Male")
    assert y.tolist() == [[1.0, 0.0, 1.0]] * 2
    y, _, _ = gsample.conditions(attrs, 64, 0)
    assert set(y.flatten().tolist()) == {0.0, 1.0}
    with pytest.raises(UsageError, match="Bald not among the model's attributes"):
        gsample.conditions(attrs, 2, 0, attributes="Bald")
    with pytest.raises(UsageError, match="use --attributes"):
        gsample.conditions(attrs, 2, 0, label=1)
