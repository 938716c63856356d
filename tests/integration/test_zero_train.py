"""The deepspeed backend (issue 13) trained for real: 2 CPU processes (DeepSpeed's CPU accelerator, gloo), torchrun
and accelerate launch, ZeRO-1 and ZeRO-2, G and D as one engine each.

- after one step (and after five) the weights equal the ddp backend's run of the same config (fp32);
- WGAN's weight clipping (written into ZeRO's fp32 copy) keeps equal to ddp's too;
- SIGKILL / SIGUSR1 mid-run, then train.resume=auto, ends with the uninterrupted run's weights and losses
  (the machinery of test_resume.py);
- a ZeRO-2 checkpoint written by 2 processes resumes in 1 (a group of one) and ends as the 2-process run does;
- a ddp checkpoint is refused by a deepspeed run, and the reverse;
- non-finite steps are skipped and counted, and max_bad_steps of them stop the run with status 3.
"""
from __future__ import annotations

import math
import random
import shutil

import pytest

from tests.conftest import max_weight_diff, metrics, run_train
from tests.metrics_fixtures import make_random_inception_weights
from tests.integration.test_resume import (TORCHRUN_ARGS, Job, _tmp_dirs, assert_same_run, interrupt, latest_step,
                                           says)

FP32 = ["model.sync_bn=true"]
DS = ["train.backend=deepspeed"]


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """The ddp backend's 2-process run of (variant, steps), made once."""
    made = {}

    def get(variant, steps):
        if (variant, steps) not in made:
            out = tmp_path_factory.mktemp(f"ddp_{variant}_{steps}")
            run_train(out, f"variant={variant}", f"train.steps={steps}", *FP32, nproc=2, launcher="torchrun")
            made[variant, steps] = out
        return made[variant, steps]

    return get


@pytest.mark.parametrize("variant,stage,launcher", [("dcgan", 1, "torchrun"), ("dcgan", 2, "accelerate"),
                                                    ("wgan_gp", 1, "accelerate"), ("wgan_gp", 2, "torchrun")])
def test_one_step_equals_the_ddp_run(tmp_path, ddp, variant, stage, launcher):
    out = tmp_path / "ds"
    p = run_train(out, f"variant={variant}", "train.steps=1", *FP32, *DS, f"deepspeed.zero_stage={stage}",
                  nproc=2, launcher=launcher)
    assert "deepspeed ZeRO-%d" % stage in p.stdout
    diff = max_weight_diff(out, ddp(variant, 1))
    print(f"{variant} ZeRO-{stage} ({launcher}), 1 step: max |ds - ddp| = {diff:.3e}")
    assert diff <= 1e-5
    ref = metrics(ddp(variant, 1))[-1]
    for k in ("loss_d", "loss_g"):
        assert metrics(out)[-1][k] == pytest.approx(ref[k], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("variant,stage", [("wgan_gp", 2), ("wgan", 1), ("wgan_gp", 0)])
def test_five_steps_stay_with_the_ddp_run(tmp_path, ddp, variant, stage):
    """wgan: the clipping constraint, which ZeRO would undo if it were written into the module only; stage 0:
    DeepSpeed's plain data parallel, where the guard reads p.grad as on ddp."""
    out = tmp_path / "ds"
    run_train(out, f"variant={variant}", "train.steps=5", *FP32, *DS, f"deepspeed.zero_stage={stage}",
              nproc=2, launcher="torchrun")
    diff = max_weight_diff(out, ddp(variant, 5))
    print(f"{variant} ZeRO-{stage}, 5 steps: max |ds - ddp| = {diff:.3e}")
    assert diff <= 1e-5


RESUME = ["variant=wgan_gp", "train.steps=6", "checkpoint.every=2", "checkpoint.keep=2", "optim.ema=0.9",
          "optim.lr_decay=linear", *FP32, *DS, "deepspeed.zero_stage=2"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds_ref") / "run"
    run_train(out, *RESUME, nproc=2, launcher="torchrun")
    return out


def test_killed_and_preempted_then_resumed_equals_uninterrupted(tmp_path, uninterrupted):
    out, rng, events = tmp_path / "run", random.Random(13), []
    for how in ("SIGKILL step=2", "SIGUSR1 step=3"):
        start, stale = latest_step(out), _tmp_dirs(out)
        job = Job(out, *RESUME, nproc=2, launcher="torchrun", torchrun_args=TORCHRUN_ARGS)
        events.append(interrupt(job, how, rng, start, stale))
    print("deepspeed ZeRO-2 x2:", "; ".join(events))
    resumable = latest_step(out)
    job = Job(out, *RESUME, nproc=2, launcher="ranks")
    assert job.wait() == [0, 0], job.log()
    assert says(job.log(), f"steps {resumable}->6")
    assert_same_run(out, uninterrupted, 6)


def test_a_zero2_checkpoint_resumes_on_another_number_of_processes(tmp_path, uninterrupted):
    out = tmp_path / "run"
    shutil.copytree(uninterrupted / "checkpoints" / "step_00000004", out / "checkpoints" / "step_00000004")
    p = run_train(out, *RESUME, "train.resume=" + str(out / "checkpoints" / "step_00000004"), nproc=1)
    assert "written by 2 processes" in p.stdout
    diff = max_weight_diff(out, uninterrupted)
    print(f"ZeRO-2 checkpoint of 2 processes resumed in 1: max |a - b| after 2 more steps = {diff:.3e}")
    assert diff <= 1e-5


def test_a_checkpoint_of_the_other_backend_is_refused(tmp_path, uninterrupted):
    out = tmp_path / "run"
    shutil.copytree(uninterrupted / "checkpoints" / "step_00000004", out / "checkpoints" / "step_00000004")
    ddp_args = [a for a in RESUME if a not in DS]
    p = run_train(out, *ddp_args, check=False)
    assert p.returncode == 2 and "backend: checkpoint has 'deepspeed', config has 'ddp'" in p.stderr, p.stderr


def test_non_finite_steps_are_skipped_counted_and_stop_the_run(tmp_path):
    out = tmp_path / "run"
    p = run_train(out, "train.steps=20", "optim.lr_d=1.0e+30", "optim.lr_g=1.0e+30", "train.max_bad_steps=3", *DS,
                  "deepspeed.zero_stage=2", nproc=2, launcher="torchrun", check=False)
    assert p.returncode != 0, p.stderr[-3000:]  # the workers' 3; torchrun reports a failure
    assert says(p.stderr, "training diverged:", "non-finite for 3 steps in a row (train.max_bad_steps=3)"), \
        p.stderr[-3000:]
    rows = metrics(out)
    assert rows[-1]["bad_steps"] >= 2 and rows[-1]["step"] < 20  # skipped steps are counted (D's and G's)


def test_bf16_with_evaluation_grids_ema_and_export_trains_on_zero2(tmp_path, ddp):
    """The rest of a run on the new backend: bf16 autocast (the engines stay fp32), KID evaluated by every rank
    during training, sample grids from the EMA generator, the final export, close to the ddp backend's bf16 run."""
    weights = make_random_inception_weights(tmp_path / "inception.pth")
    common = ["variant=wgan_gp", "train.steps=4", "train.mixed_precision=bf16", "optim.ema=0.9", *FP32,
              "eval.metrics=[kid]", "eval.every=2", "eval.num_samples=16", "eval.feature_layer=64",
              f"eval.feature_weights={weights}", "train.log_every=2", "train.sample_every=2"]
    out, ref = tmp_path / "ds", tmp_path / "ddp"
    run_train(out, *common, *DS, "deepspeed.zero_stage=2", nproc=2, launcher="torchrun")
    run_train(ref, *common, nproc=2, launcher="torchrun")
    kid = [r for r in metrics(out) if "kid" in r]
    assert [r["step"] for r in kid] == [2, 4] and all(math.isfinite(r["kid"]) for r in kid)
    assert sorted(p.name for p in (out / "samples").glob("step_*.png")) == ["step_000002.png", "step_000004.png"]
    assert {p.name for p in (out / "final").iterdir()} == {p.name for p in (ref / "final").iterdir()}
    losses = [r for r in metrics(out) if "loss_d" in r]
    assert losses and all(math.isfinite(r["loss_d"]) and math.isfinite(r["loss_g"]) for r in losses)
    diff = max_weight_diff(out, ref)
    print(f"wgan_gp bf16 ZeRO-2, 4 steps: max |ds - ddp| = {diff:.3e}")
    assert diff <= 1e-3  # bf16 autocast: the same arithmetic, summed in another order by ZeRO's reductions
