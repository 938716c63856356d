"""Health warnings in real training: each condition is made to happen on purpose and must be named, with the
keys to try, in rank 0's output, as a warn_* flag in metrics.jsonl (and TensorBoard's health group) and in
the end summary; the quickstart's opening steps raise none."""
from __future__ import annotations

import torch

from gandist import config
from gandist.backends.ddp import make_accelerator
from gandist.data.feed import make_feed
from gandist.draws import Draws
from gandist.liveness import Progress
from gandist.training import events
from gandist.training.reporting import Reporter
from gandist.training.step import Stepper, build_models
from tests.conftest import REPO, TINY, metrics, run_train
from tests.integration.test_resume import says

QUICKSTART = ["model.z_dim=64", "model.g_width=32", "model.d_width=32", "data.synthetic_size=20000",
              "train.batch_size=64", "train.log_every=25"]  # the shipped values that conftest.TINY replaces


def flagged(out, flag: str) -> list[int]:
    return [r["step"] for r in metrics(out) if r.get(flag) == 1.0]


def test_a_d_with_ten_times_gs_learning_rate_is_named_overpowering(tmp_path):
    out = tmp_path / "run"
    p = run_train(out, "train.batch_size=16", "optim.ema=0", "optim.lr_g=2e-4", "optim.lr_d=2e-3",
                  "train.steps=150", "train.log_every=10", "health.warmup=50")
    assert says(p.stdout, "D overpowering G: D accuracy", "try optim.lr_d"), p.stdout
    assert says(p.stdout, "health: D overpowering G", "log step(s)"), p.stdout  # the end summary
    assert flagged(out, "warn_overpowering")


def test_non_finite_steps_are_named_divergence(tmp_path):
    out = tmp_path / "run"
    p = run_train(out, "train.steps=20", "optim.lr_d=1.0e+30", "train.max_bad_steps=4", check=False)
    assert p.returncode == 3, p.stderr
    assert says(p.stdout, "divergence: ", "non-finite step(s) skipped", "try optim.lr_d"), p.stdout
    assert says(p.stdout, "health: divergence: ", "non-finite for 4 steps in a row"), p.stdout  # the guard's stop
    assert flagged(out, "warn_divergence")


def test_a_g_that_outputs_a_constant_is_named_mode_collapse(tmp_path, capsys):
    """The loop of gandist.train, in this process, with G given the same noise for every sample: in train
    mode its BatchNorm then makes every image the same."""
    cfg = config.load(REPO / "configs" / "quickstart.yaml",
                      [*TINY, f"output.dir={tmp_path}", "health.warmup=10", "train.steps=25", "optim.ema=0"])
    acc = make_accelerator(cfg)
    models = build_models(cfg, acc)
    G = models.G_fwd
    models.G_fwd = lambda z, y: G(torch.zeros_like(z), y)
    feed = make_feed(cfg, 0, 1, acc.device)
    stepper = Stepper(cfg, acc, models, feed, Draws(0, cfg.train.batch_size, 0, 1, acc.device))
    with Reporter(cfg, acc, tmp_path, 0) as report:
        log = events.Log(events.Parts(cfg, acc, models, stepper, feed, report, Progress()))
        for step in range(cfg.train.steps):
            stepper.round(step)
            stepper.tally.sync()
            log(step + 1)
        report.summary(cfg.train.steps, [])
    said = capsys.readouterr().out
    assert says(said, "health, step 13: mode collapse: diversity 0.000", "try loss.adversarial=hinge"), said
    assert says(said, "health: mode collapse", "steps 13..25"), said
    assert flagged(tmp_path, "warn_collapse")[0] == 13


def test_the_quickstarts_first_hundreds_of_steps_raise_no_warning(tmp_path):
    """Its D wins outright at first (accuracy 1.000 and loss_g climbing from 2 to 7 over steps 25-225, measured)
    before G catches up: the checks wait health.warmup steps, and the opening raises nothing."""
    out = tmp_path / "run"
    p = run_train(out, *QUICKSTART, "train.steps=250", timeout=1200)
    assert "health," not in p.stdout, p.stdout
    assert says(p.stdout, "health: no warnings"), p.stdout
    assert not any(k.startswith("warn_") and v for r in metrics(out) for k, v in r.items())


def test_held_out_reals_are_scored_without_changing_the_run(tmp_path):
    """health.heldout_urls: D's r_t on held-out reals is logged at log steps, and D (BatchNorm statistics
    included) ends as it does without the check."""
    from gandist.data.prepare import prepare
    from tests.conftest import max_weight_diff

    prepare("synthetic", None, tmp_path / "shards", size=64, shard_size=32, progress=False, workers=1,
            resplit_sizes={"train": 32, "heldout": 32})
    data = ["data.source=shards", f"data.urls={tmp_path}/shards/train-{{000000..000000}}.tar", "data.workers=1",
            "data.shuffle_buffer=8", "train.steps=4", "train.log_every=2"]
    run_train(tmp_path / "plain", *data)
    run_train(tmp_path / "held", *data, f"health.heldout_urls={tmp_path}/shards/heldout-{{000000..000000}}.tar")
    rows = metrics(tmp_path / "held")
    assert [r["step"] for r in rows] == [2, 4] and all(-1 <= r["r_heldout"] <= 1 for r in rows)
    assert "r_heldout" not in metrics(tmp_path / "plain")[0]
    assert max_weight_diff(tmp_path / "plain", tmp_path / "held") == 0.0
