"""slurm/train.sh and slurm/prepare.sh on a real SLURM cluster started on this machine for the session
(tests/slurm_cluster.py: munged, slurmctld, `slurmd -N node1`, `slurmd -N node2`, all on 127.0.0.1).

Without slurm-wlm/munge (or root) every test here FAILS with the reason: nothing is skipped.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY, env, metrics
from tests.slurm_cluster import Cluster, ClusterError, why_unavailable

TRAIN = "slurm/train.sh"
PREPARE = "slurm/prepare.sh"


@pytest.fixture(scope="session")
def slurm():
    why = why_unavailable()
    if why:
        pytest.fail(f"THE SLURM TESTS CANNOT RUN HERE: {why}", pytrace=False)
    root = Path(tempfile.mkdtemp(prefix="gandist-slurm-"))
    cluster = Cluster(root)
    try:
        cluster.start()
    except ClusterError as e:
        pytest.fail(f"THE TEST SLURM CLUSTER DID NOT START: {e}", pytrace=False)
    yield cluster
    cluster.stop()
    if os.environ.get("GANDIST_KEEP_SLURM"):
        print(f"slurm cluster state kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)


def submit(slurm: Cluster, tmp: Path, *args: str) -> int:
    """sbatch from the repository (as a user would), the batch log in tmp/batch-<id>.out."""
    # COLUMNS: rich wraps rank 0's lines at 80 columns when they go to a file
    return slurm.sbatch(f"--output={tmp}/batch-%j.out", *args, cwd=REPO, env=env(COLUMNS=1000))


def report(tmp: Path, job: int, run_dir: Path | None = None) -> str:
    """The batch log and every node log, for assertion messages."""
    parts = []
    batch = tmp / f"batch-{job}.out"
    parts.append(f"--- {batch.name}\n{batch.read_text() if batch.exists() else '(missing)'}")
    if run_dir is not None:
        for f in sorted((run_dir / "slurm").glob("*.log")):
            parts.append(f"--- {f.name}\n{f.read_text()[-3000:]}")
    return "\n".join(parts)


def node_logs(run_dir: Path, job: int, run: int) -> list[Path]:
    return sorted((run_dir / "slurm").glob(f"gandist-{job}-run{run}-node*.log"))


def train_args(out: Path, *overrides: str) -> list[str]:
    return [TRAIN, "configs/quickstart.yaml", *TINY, *overrides, f"output.dir={out}"]


# -- without a cluster ------------------------------------------------------------------------------

def sbatch_headers(script: str) -> list[str]:
    return re.findall(r"^#SBATCH\s+(\S+)", (REPO / script).read_text(), re.M)


def test_scripts_parse_and_pass_shellcheck():
    for script in (TRAIN, PREPARE, ".ci/run"):
        p = subprocess.run(["bash", "-n", str(REPO / script)], capture_output=True, text=True)
        assert p.returncode == 0, f"{script}: {p.stderr}"
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is not installed, so slurm/*.sh cannot be linted: apt-get install shellcheck "
                    "(.ci/run installs it)", pytrace=False)
    p = subprocess.run([shellcheck, TRAIN, PREPARE, ".ci/run"], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, f"shellcheck:\n{p.stdout}{p.stderr}"


def test_train_sh_headers_ask_for_the_warning_signal_and_requeue():
    h = sbatch_headers(TRAIN)
    assert "--requeue" in h and "--ntasks-per-node=1" in h and "--open-mode=append" in h
    assert any(x.startswith("--nodes=") for x in h) and any(x.startswith("--time=") for x in h)
    sig = [x for x in h if x.startswith("--signal=")]
    # B: = to the batch script only; it passes the signal to the training step itself
    assert len(sig) == 1 and re.fullmatch(r"--signal=B:USR1@\d+", sig[0]), sig
    text = (REPO / TRAIN).read_text()
    # the GPU and partition lines a user enables
    assert re.search(r"^##SBATCH --gpus-per-node=\d+", text, re.M) and re.search(r"^##SBATCH --partition=", text, re.M)


def test_train_sh_refuses_to_run_outside_a_job():
    e = {k: v for k, v in env().items() if not k.startswith("SLURM_")}
    p = subprocess.run(["bash", TRAIN, "configs/quickstart.yaml"], cwd=REPO, env=e, capture_output=True, text=True)
    assert p.returncode == 2 and "sbatch slurm/train.sh" in p.stderr, p.stderr


# -- on the cluster -----------------------------------------------------------------------------------

def test_two_node_job_trains_with_one_rank_per_node(slurm, tmp_path):
    out = tmp_path / "run"
    job = submit(slurm, tmp_path, "--nodes=2", *train_args(out, "train.steps=10"))
    info = slurm.wait(job, timeout=300)
    text = report(tmp_path, job, out)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", f"{info}\n{text}"
    assert info["NodeList"] == "node[1-2]" and info["NumNodes"] == "2", info
    assert info["Restarts"] == "0"

    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2, run
    assert sorted(r["rank"] for r in run["ranks"]) == [0, 1]
    assert [r["local_rank"] for r in run["ranks"]] == [0, 0]  # one process on each node
    assert [r["step"] for r in metrics(out)] == list(range(1, 11))
    assert (out / "final" / "generator.safetensors").is_file()
    assert (out / "checkpoints" / "step_00000010" / "trainer.json").is_file()

    # one log per node, each from its own slurmd with its own machine rank
    logs = node_logs(out, job, 1)
    assert [p.name[-9:] for p in logs] == ["node0.log", "node1.log"], text
    for rank, (log, node) in enumerate(zip(logs, ("node1", "node2"))):
        assert f"node {node} " in log.read_text() and f"machine rank {rank} of 2" in log.read_text(), text
    # rank 0's address is the head node's NodeAddr; the port comes from the job id
    assert f"rank 0 on node1 at 127.0.0.1:{20000 + job % 10000}" in text, text


def test_usr1_before_the_end_checkpoints_requeues_and_resumes(slurm, tmp_path):
    """What --signal=B:USR1@300 does near the time limit, sent by hand: the job saves, requeues itself
    (same id) and the second run starts from that checkpoint, not from step 0."""
    out = tmp_path / "run"
    steps = 30
    job = submit(slurm, tmp_path, "--nodes=2", *train_args(out, f"train.steps={steps}"))
    deadline = time.monotonic() + 240
    while not ((out / "metrics.jsonl").is_file() and len(metrics(out)) >= 3):
        info = slurm.job(job)
        assert info["JobState"] in ("PENDING", "CONFIGURING", "RUNNING"), f"{info}\n{report(tmp_path, job, out)}"
        assert time.monotonic() < deadline, f"training did not start in 240 s\n{report(tmp_path, job, out)}"
        time.sleep(0.3)
    slurm.cmd("scancel", "--batch", "--signal=USR1", str(job))  # = what --signal=B:USR1@N sends

    info = slurm.wait(job, timeout=400)
    text = report(tmp_path, job, out)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", f"{info}\n{text}"
    assert info["Restarts"] == "1", f"{info}\n{text}"
    assert "requeueing job" in text

    first = node_logs(out, job, 1)[0].read_text()
    assert "training stopped after SIGUSR1" in first and "exit 75" in first, text
    second = node_logs(out, job, 2)[0].read_text()
    m = re.search(r"steps (\d+)->(\d+), run dir .*?, resumed from (\S+)", second)
    assert m, text
    step, saved = int(m.group(1)), Path(m.group(3))
    assert 3 <= step < steps and int(m.group(2)) == steps, text
    assert saved == out / "checkpoints" / f"step_{step:08d}" and (saved / "trainer.json").is_file(), text
    assert [r["step"] for r in metrics(out)] == list(range(1, steps + 1))  # nothing lost, nothing twice
    assert json.loads((out / "run.json").read_text())["world_size"] == 2
    assert (out / "final" / "generator.safetensors").is_file()


def test_failures_fail_the_job_with_their_exit_status(slurm, tmp_path):
    # a config error, caught by the batch script before any node starts
    bad = tmp_path / "bad"
    job = submit(slurm, tmp_path, "--nodes=2", *train_args(bad, "model.z_dim=zero"))
    info = slurm.wait(job, timeout=120)
    text = report(tmp_path, job)
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "2:0", f"{info}\n{text}"
    assert "model.z_dim" in text and "the config does not load" in text

    # an error inside training on every node (the batch does not divide by 2 ranks): srun's status
    out = tmp_path / "run"
    job = submit(slurm, tmp_path, "--nodes=2", *train_args(out, "train.batch_size=7", "train.steps=5"))
    info = slurm.wait(job, timeout=300)
    text = report(tmp_path, job, out)
    assert info["JobState"] == "FAILED" and info["ExitCode"] != "0:0", f"{info}\n{text}"
    assert info["Restarts"] == "0", "a failure must not be requeued"
    assert "training failed" in text and "not divisible by the world size" in text, text


def test_prepare_job_passes_its_arguments_and_status(slurm, tmp_path):
    shards = tmp_path / "shards"
    # --cpus-per-task overrides the script's header (these test nodes have one CPU)
    job = submit(slurm, tmp_path, "--cpus-per-task=1", PREPARE, "synthetic", "--out", str(shards), "--size", "64",
                 "--shard-size", "32", "--no-progress")
    info = slurm.wait(job, timeout=180)
    text = report(tmp_path, job)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", f"{info}\n{text}"
    assert f"gandist.data.prepare synthetic --out {shards} --size 64 --shard-size 32 --no-progress --workers 1" in text
    index = json.loads((shards / "index.json").read_text())
    assert index, index
    assert len(list(shards.glob("train-*.tar"))) == 2, sorted(p.name for p in shards.iterdir())

    job = submit(slurm, tmp_path, "--cpus-per-task=1", PREPARE, "folder", "--src", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "none"), "--no-progress")
    info = slurm.wait(job, timeout=180)
    text = report(tmp_path, job)
    assert info["JobState"] == "FAILED" and info["ExitCode"] != "0:0", f"{info}\n{text}"
    assert "missing" in text and "gandist-prepare failed" in text, text
