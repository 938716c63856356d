"""Periodic evaluation during training: the scores land in metrics.jsonl."""
from __future__ import annotations

import math

from tests.conftest import metrics, run_train
from tests.metrics_fixtures import make_random_inception_weights


def test_training_logs_kid_every_eval_every_steps(tmp_path):
    weights = make_random_inception_weights(tmp_path / "inception.pth")
    out = tmp_path / "run"
    run_train(out, "train.steps=4", "eval.metrics=[kid]", "eval.every=2", "eval.num_samples=16",
              "eval.feature_layer=64", f"eval.feature_weights={weights}", "train.log_every=4")
    rows = [r for r in metrics(out) if "kid" in r]
    assert [r["step"] for r in rows] == [2, 4]
    assert all(math.isfinite(r["kid"]) for r in rows)
    loss_rows = [r for r in metrics(out) if "loss_d" in r]
    assert loss_rows and all(r["data_skipped"] == 0 for r in loss_rows)


def test_missing_inception_weights_stop_the_run_before_training(tmp_path):
    out = tmp_path / "run"
    p = run_train(out, "train.steps=4", "eval.metrics=[fid]", f"eval.feature_weights={tmp_path}/nope.pth", check=False)
    assert p.returncode == 2
    assert "nope.pth does not exist" in p.stderr
    assert not (out / "metrics.jsonl").exists() or not metrics(out)
