"""Resuming with another train.batch_size, optim.n_critic or optim.g_steps (issue 19, point 4).

A checkpoint counts steps; the data position and G's noise numbering are derived from them with these keys
(gandist/training/resume_checks.py), so changing one on resume is allowed but the start-up panel (rank 0 only)
says what changes.  Also: a NaN on the command line stops the CLI with one line, not a traceback.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from types import SimpleNamespace

import pytest

from gandist.training import resume_checks
from tests.conftest import PY, REPO, env, run_train

BASE = ["train.steps=2", "checkpoint.every=2", "log.trackers=[]"]
CKPT = "checkpoints/step_00000002"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A finished 2-step run with batch size 8, n_critic 1 and g_steps 1 (TINY's and the defaults)."""
    out = tmp_path_factory.mktemp("resume_changes") / "base"
    run_train(out, *BASE)
    return out


def resume(base, tmp_path, *overrides: str, nproc: int = 1, launcher: str = "python"):
    out = tmp_path / "run"
    shutil.copytree(base, out)
    p = run_train(out, *BASE, "train.steps=3", *overrides, nproc=nproc, launcher=launcher)
    return out, p.stdout + p.stderr


def test_the_checkpoint_records_what_its_counters_count_in(base):
    state = json.loads((base / CKPT / "trainer.json").read_text())
    assert state["schedule"] == {"train.batch_size": 8, "optim.n_critic": 1, "optim.g_steps": 1}


def test_a_changed_batch_size_is_warned_about_with_the_data_position(base, tmp_path):
    out, text = resume(base, tmp_path, "train.batch_size=4")
    assert f"resumed from {out / CKPT}; warning: train.batch_size was 8 in checkpoint {out / CKPT}, is 4 now:" in text
    # step 2 with n_critic 1: D batch 2, of 4 samples now (sample 8), of 8 in the checkpoint's run (sample 16)
    assert ("the data continues from D batch 2 (step 2 x optim.n_critic 1) of 4 samples, i.e. from sample 8, "
            "where the run that wrote the checkpoint had read 16 (2 batches of 8): 8 samples are read again") in text
    assert "the run is not the same as an uninterrupted one" in text
    assert text.count("warning:") == 1 and "Traceback" not in text


def test_a_changed_n_critic_is_warned_about_once_on_two_processes(base, tmp_path):
    out, text = resume(base, tmp_path, "optim.n_critic=2", nproc=2, launcher="torchrun")
    assert f"warning: optim.n_critic was 1 in checkpoint {out / CKPT}, is 2 now:" in text
    assert ("the data continues from D batch 4 (step 2 x optim.n_critic 2) of 8 samples, i.e. from sample 32, "
            "where the run that wrote the checkpoint had read 16 (2 batches of 8): 16 samples of the data order "
            "are skipped") in text
    assert "train.batch_size was" not in text and "G's steps" not in text
    assert text.count("warning:") == 1 and "Traceback" not in text  # rank 0's panel only


def test_an_unchanged_schedule_resumes_without_a_warning(base, tmp_path):
    out, text = resume(base, tmp_path)
    assert f"resumed from {out / CKPT})" in text
    # (the end summary's health line says "no warnings": no resume warning is what is checked here)
    assert "warning" not in text.lower().replace("health: no warnings", "") and "was 8 in checkpoint" not in text


# -- the warning itself, without a run ------------------------------------------------------------------

def _cfg(batch_size=8, n_critic=1, g_steps=1):
    return SimpleNamespace(train=SimpleNamespace(batch_size=batch_size),
                           optim=SimpleNamespace(n_critic=n_critic, g_steps=g_steps))


def test_g_steps_and_several_changes_in_one_warning():
    state = {"step": 10, "schedule": resume_checks.schedule(_cfg(64, 5, 1))}
    (w,) = resume_checks.changes(state, _cfg(32, 5, 2), "ck")
    assert w.startswith("train.batch_size was 64 in checkpoint ck, is 32 now; optim.g_steps was 1 there, is 2 now: ")
    assert "from D batch 50 (step 10 x optim.n_critic 5) of 32 samples, i.e. from sample 1600" in w
    assert "had read 3200 (50 batches of 64): 1600 samples are read again" in w
    assert "continue from G step 20 (step 10 x optim.g_steps 2) instead of 10" in w
    # the same sample position in batches of another size
    (w,) = resume_checks.changes({"step": 3, "schedule": resume_checks.schedule(_cfg(8, 1, 1))}, _cfg(4, 2, 1), "ck")
    assert "from sample 24" in w and "had read 24" in w and "none is skipped or read again" in w


def test_no_warning_when_unchanged_or_for_a_checkpoint_that_did_not_record_it():
    cfg = _cfg(16, 2, 3)
    assert resume_checks.changes({"step": 4, "schedule": resume_checks.schedule(cfg)}, cfg, "ck") == []
    assert resume_checks.changes({"step": 4}, cfg, "ck") == []  # written before the schedule was recorded
    assert resume_checks.changes({"step": 4, "schedule": {"optim.n_critic": 2}}, cfg, "ck") == []


def test_the_shard_feed_is_not_told_its_shards_changed_when_the_batch_size_did():
    feed = SimpleNamespace(total=1000)
    data = {"next_batch": 40, "batches_per_epoch": 1000 // 64, "skipped": 0}
    state = {"step": 40, "data": data, "schedule": resume_checks.schedule(_cfg(64))}
    assert "batches_per_epoch" not in resume_checks.data_state(state, _cfg(32), feed)
    assert resume_checks.data_state(state, _cfg(64), feed) == data  # unchanged: as saved
    assert resume_checks.data_state({**state, "data": {**data, "batches_per_epoch": 3}}, _cfg(32), feed)[
        "batches_per_epoch"] == 3  # the shards did change: the feed's own warning stays
    assert resume_checks.data_state({"step": 1}, _cfg(), SimpleNamespace()) == {}  # the embedded dataset's


# -- a NaN on the command line ----------------------------------------------------------------------------

def test_cli_nan_learning_rate_exits_2_with_one_line(tmp_path):
    out = tmp_path / "run"
    p = subprocess.run([PY, "-m", "gandist.train", "--config", "configs/quickstart.yaml", "optim.lr_g=nan",
                        f"output.dir={out}"], cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert "optim.lr_g: nan is not a finite number" in lines[0] and "the command line" in lines[0]
    assert not out.exists()
