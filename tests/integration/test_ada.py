"""ADA in real training runs: p moves and is logged, a run resumed from a checkpoint taken between log steps
is bit-identical in fp64 to the uninterrupted one (p and the pending sign counts are in the checkpoint), and
2 processes (torchrun, gloo) end with the 1-process weights and the same p at every log step."""
from __future__ import annotations

import json
import shutil

import pytest

from gandist.training import checkpoint
from tests.conftest import max_weight_diff, metrics, run_train

# kimg 0.05: 16 real images between log steps move p by 0.32, so p visits both clamps within the run
ADA = ["augment.ada=true", "augment.kimg=0.05", "train.fp64=true", "train.log_every=2", "model.sync_bn=true"]


def ps(out) -> list[tuple[int, float]]:
    return [(r["step"], r["ada_p"]) for r in metrics(out) if "ada_p" in r]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("ada") / "whole"
    run_train(out, *ADA, "train.steps=9", "checkpoint.every=3", "checkpoint.keep=5")
    return out


def test_p_moves_with_r_t_and_is_logged(uninterrupted):
    rows = [r for r in metrics(uninterrupted) if "ada_p" in r]
    assert [r["step"] for r in rows] == [2, 4, 6, 8, 9]
    assert len({r["ada_p"] for r in rows}) > 1 and all(0 <= r["ada_p"] <= 1 for r in rows)
    for before, after in zip(rows, rows[1:]):  # p rises while r_t is above the target, falls below it
        moved = after["ada_p"] - before["ada_p"]
        if 0 < after["ada_p"] < 1:
            assert (moved > 0) == (after["r_t"] > 0.6), (before, after)


def test_resumed_between_log_steps_is_bit_identical(tmp_path, uninterrupted):
    out = tmp_path / "resumed"
    shutil.copytree(uninterrupted, out)
    for p in checkpoint.complete(out):
        if checkpoint.step_of(p) > 3:  # step 3 is not a log step: its sign counts are pending
            shutil.rmtree(p)
    shutil.rmtree(out / "final")
    state = json.loads((checkpoint.latest(out) / "trainer.json").read_text())
    assert state["ada"]["pending"][1] == 8  # one D step's reals since the log step at 2
    run_train(out, *ADA, "train.steps=9", "checkpoint.every=3", "checkpoint.keep=5")
    assert max_weight_diff(out, uninterrupted) == 0.0
    assert ps(out) == ps(uninterrupted)


def test_two_processes_match_one(tmp_path, uninterrupted):
    out = tmp_path / "two"
    run_train(out, *ADA, "train.steps=9", "checkpoint.every=3", "checkpoint.keep=5", nproc=2, launcher="torchrun")
    assert max_weight_diff(out, uninterrupted) <= 1e-4
    assert ps(out) == ps(uninterrupted)
