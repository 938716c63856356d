"""`python -m gandist.bench`: the commands run end to end and print what they promise.  No timing is
asserted: the figures are to be read, and depend on the machine."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import PY, REPO, TINY, env

REQUIRED = {"variant", "resolution", "batch_size", "device", "processes", "gandist_img_s", "reference_img_s",
            "ratio", "peak_mem_mb"}


def bench(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "gandist.bench", *args], cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=timeout)


def last_json(p: subprocess.CompletedProcess) -> dict:
    assert p.returncode == 0, f"exit {p.returncode}\n--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-5000:]}"
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert REQUIRED <= set(result), REQUIRED - set(result)
    assert result["gandist_img_s"] > 0 and result["reference_img_s"] > 0 and result["ratio"] > 0
    assert result["peak_mem_mb"] > 0
    assert "| gandist Stepper.round |" in p.stdout and "| reference (plain PyTorch) |" in p.stdout
    return result


@pytest.mark.parametrize("variant", ["dcgan", "wgan_gp", "wgan"])
def test_train_bench_runs_and_ends_with_json(variant):
    p = bench("train", "--variant", variant, "--device", "cpu", "--steps", "2", "--warmup", "1", *TINY)
    r = last_json(p)
    assert (r["variant"], r["resolution"], r["batch_size"], r["device"], r["processes"]) == (variant, 32, 8, "cpu", 1)
    assert r["fed_img_s"] > 0  # the embedded dataset's row, by default


def test_train_bench_with_shards(tmp_path):
    out = tmp_path / "shards"
    prep = subprocess.run([PY, "-m", "gandist.data.prepare", "synthetic", "--out", str(out), "--size", "64",
                           "--shard-size", "32", "--no-progress"], cwd=REPO, env=env(), capture_output=True,
                          text=True, timeout=120)
    assert prep.returncode == 0, prep.stderr
    p = bench("train", "--device", "cpu", "--steps", "2", "--warmup", "1", "--data", "shards",
              "--urls", str(out / "train-{000000..000001}.tar"), "--workers", "1", *TINY)
    r = last_json(p)
    assert r["data"] == "shards" and r["fed_img_s"] > 0


def test_train_bench_two_processes():
    p = bench("train", "--device", "cpu", "--processes", "2", "--steps", "2", "--warmup", "1", "--data", "none",
              *TINY)
    r = last_json(p)
    assert r["processes"] == 2 and r["fed_img_s"] is None


def test_train_bench_usage_errors_are_one_line():
    p = bench("train", "--data", "shards", "--steps", "1")
    assert p.returncode == 2 and "--urls" in p.stderr and "Traceback" not in p.stderr
    p = bench("train", "--device", "cpu", "--precision", "fp16", "--steps", "1", *TINY)
    assert p.returncode == 2 and "fp16 needs a GPU" in p.stderr


def test_data_bench_still_has_its_command():
    p = bench("data", "--help", timeout=120)
    assert p.returncode == 0 and "--workers" in p.stdout


def test_draws_bench_counts_a_ranks_own_rows_only():
    p = bench("draws", "--batch-size", "64", "--worlds", "1,4", "--z-dim", "8", "--resolution", "8",
              "--repeats", "1")
    assert p.returncode == 0, p.stderr[-3000:]
    rows = {(r["draw"], r["world"]): r for r in json.loads(p.stdout.strip().splitlines()[-1])["draws"]}
    assert rows[("z (8)", 1)]["raw_numbers"] == 64 * 8 and rows[("z (8)", 4)]["raw_numbers"] == 16 * 8
    assert rows[("image noise (3x8x8)", 4)]["raw_numbers"] == 16 * 3 * 8 * 8
    assert all(r["ms"] > 0 for r in rows.values())
