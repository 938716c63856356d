"""World-size invariance: at a fixed seed and global batch, 2 processes (gloo, launched for real
with torchrun, accelerate launch, or as two accelerate "nodes") end with the 1-process weights.

The runs use train.fp64: the construction (global batch sliced per rank, global draws sliced per
rank, BatchNorm over the global batch, DDP's gradient mean, per-rank penalty means) is exact, and
fp64 keeps float32 rounding noise from being amplified by Adam's per-element normalisation into
differences that say nothing about it (fp32 figures are in the README).
"""
from __future__ import annotations

import subprocess

import pytest

from tests.conftest import BIN, REPO, env, free_port, max_weight_diff, metrics, run_train, train_cmd

VARIANTS = ["gan", "dcgan", "wgan", "wgan_gp", "cgan"]
COMMON = ["train.steps=5", "model.sync_bn=true", "train.fp64=true"]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The 1-process reference run of each variant, made once."""
    made = {}

    def get(variant):
        if variant not in made:
            out = tmp_path_factory.mktemp(f"single_{variant}")
            run_train(out, f"variant={variant}", *COMMON)
            made[variant] = out
        return made[variant]

    return get


def assert_same_run(a, b):
    assert max_weight_diff(a, b) <= 1e-4
    ra, rb = metrics(a), metrics(b)
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    for x, y in zip(ra, rb):  # logged scalars are cross-rank values: independent of the world size
        for k in ("loss_d", "loss_g", "d_real", "d_fake", "gp", "wasserstein"):
            if k in x:
                assert y[k] == pytest.approx(x[k], rel=1e-6, abs=1e-9), k


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_two_processes_match_one(tmp_path, single, variant, launcher):
    out = tmp_path / "two"
    run_train(out, f"variant={variant}", *COMMON, nproc=2, launcher=launcher)
    import json
    assert json.loads((out / "run.json").read_text())["world_size"] == 2
    assert_same_run(single(variant), out)
    if variant == "wgan_gp":
        assert "gp" in metrics(out)[-1] and "wasserstein" in metrics(out)[-1]


def test_two_nodes_on_one_machine_match_one_process(tmp_path, single):
    out = tmp_path / "nodes"
    port = free_port()
    args = train_cmd(out, "variant=dcgan", *COMMON, launcher="python")[3:]  # after `python -m gandist.train`
    procs = []
    for machine_rank in (0, 1):
        cmd = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_machines=2", f"--machine_rank={machine_rank}",
               "--main_process_ip=127.0.0.1", f"--main_process_port={port}", "--num_processes=2",
               "--mixed_precision=no", "--dynamo_backend=no", "-m", "gandist.train", *args]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    import json
    info = json.loads((out / "run.json").read_text())
    assert info["world_size"] == 2 and [r["rank"] for r in info["ranks"]] == [0, 1]
    assert_same_run(single("dcgan"), out)


def test_batch_size_not_divisible_by_world_size_is_an_error(tmp_path):
    p = run_train(tmp_path / "x", "train.batch_size=7", nproc=2, launcher="torchrun", check=False)
    assert p.returncode != 0
    assert "train.batch_size: 7 is not divisible by the world size 2" in p.stderr
