"""Periodic evaluation during training: the scores (Inception's and the judge's) land in metrics.jsonl."""
from __future__ import annotations

import math

from tests.conftest import metrics, run_train
from tests.metrics_fixtures import make_random_inception_weights, make_random_judge


def test_training_logs_kid_and_the_judges_scores_every_eval_every_steps(tmp_path):
    weights = make_random_inception_weights(tmp_path / "inception.pth")
    judge = make_random_judge(tmp_path / "judge.safetensors")
    out = tmp_path / "run"
    run_train(out, "variant=cgan", "train.steps=4", "eval.metrics=[kid,judge_fd,judge_acc,judge_mix,prdc]", "eval.every=2",
              "eval.num_samples=16", "eval.feature_layer=64", f"eval.feature_weights={weights}",
              f"eval.judge={judge}", "train.log_every=4")
    rows = [r for r in metrics(out) if "kid" in r]
    assert [r["step"] for r in rows] == [2, 4]
    judged = ("judge_fd", "judge_fd_ratio", "judge_acc", "judge_mix", "precision", "recall", "density", "coverage")
    assert all(math.isfinite(r[k]) for r in rows for k in ("kid", *judged))
    assert (out / "plots" / "fid.png").is_file()
    loss_rows = [r for r in metrics(out) if "loss_d" in r]
    assert loss_rows and all(r["data_skipped"] == 0 for r in loss_rows)


def test_missing_inception_weights_stop_the_run_before_training(tmp_path):
    out = tmp_path / "run"
    p = run_train(out, "train.steps=4", "eval.metrics=[fid]", f"eval.feature_weights={tmp_path}/nope.pth", check=False)
    assert p.returncode == 2
    assert "nope.pth does not exist" in p.stderr
    assert not (out / "metrics.jsonl").exists() or not metrics(out)
