"""dist.batch_per_process on 2 real processes (torchrun, gloo): each process takes the asked-for batch, so the
global batch is twice it, and the lrs follow dist.lr_scaling.  The check: with linear scaling, 2 processes at 3
samples each end with the weights of 1 process at a global batch of 6 and twice the lrs (the exact path is
world-size invariant, so another per-process batch or lr gives other weights).  Resuming that run on 1 process
says what changes."""
from __future__ import annotations

import shutil

import pytest

from gandist import config
from tests.conftest import REPO, TINY, max_weight_diff, metrics, run_train

COMMON = ["train.steps=3", "checkpoint.every=3", "model.sync_bn=true", "train.fp64=true", "log.trackers=[]"]
LR = config.load(str(REPO / "configs" / "quickstart.yaml"), TINY).optim


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    out = tmp_path_factory.mktemp("per_process") / "two"
    p = run_train(out, *COMMON, "dist.batch_per_process=3", "dist.lr_scaling=linear", nproc=2, launcher="torchrun")
    return out, p.stdout + p.stderr


def test_each_process_takes_its_batch_and_the_lrs_scale(two, tmp_path):
    out, text = two
    assert "6 global = 2 x 3 per rank (dist.batch_per_process" in " ".join(text.split())  # the panel wraps
    one = tmp_path / "one"
    run_train(one, *COMMON, "train.batch_size=6", f"optim.lr_g={2 * LR.lr_g}", f"optim.lr_d={2 * LR.lr_d}")
    assert max_weight_diff(one, out) <= 1e-4
    for x, y in zip(metrics(one), metrics(out), strict=True):
        assert y["loss_d"] == pytest.approx(x["loss_d"], rel=1e-6) and y["loss_g"] == pytest.approx(x["loss_g"], rel=1e-6)


def test_resuming_on_one_process_warns_that_the_batch_and_lrs_change(two, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(two[0], out)
    p = run_train(out, *COMMON, "train.steps=4", "dist.batch_per_process=3", "dist.lr_scaling=linear")
    text = " ".join((p.stdout + p.stderr).split())
    assert ("dist.batch_per_process=3 on 1 processes where the checkpoint's run had 2: the global batch is 3 instead "
            "of 6 and the lrs x1 instead of x2 (dist.lr_scaling=linear)") in text
    assert "train.batch_size was 6 in checkpoint" in text and "Traceback" not in text
