"""Shared test helpers: launching real training processes, tiny model settings, the shared data."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from tests.slurm_cluster import Cluster, ClusterError, why_unavailable

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
PY = sys.executable
BIN = Path(PY).parent

# Small enough that a CPU step takes milliseconds; the nets keep their real structure.
TINY = ["model.z_dim=16", "model.g_width=8", "model.d_width=8", "data.synthetic_size=256",
        "train.batch_size=8", "log.progress=false", "train.log_every=1", "train.sample_every=1000",
        "checkpoint.every=1000"]


def env(**extra) -> dict:
    e = dict(os.environ)
    e.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"})
    e.update({k: str(v) for k, v in extra.items()})
    return e


def tool(name: str, hint: str) -> str:
    """A linter's path: on PATH, or in this virtualenv's bin (the dev extra brings shellcheck and hadolint)."""
    path = shutil.which(name) or (str(BIN / name) if (BIN / name).is_file() else None)
    if path is None:
        pytest.fail(f"{name} is not installed, so this check cannot run: {hint} (`make install` brings it)",
                    pytrace=False)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_cmd(out: Path, *overrides: str, nproc: int = 1, launcher: str = "python",
              config: str = "configs/quickstart.yaml") -> list[str]:
    """The command line of a training run with the tiny settings (later overrides win)."""
    args = ["--config", str(REPO / config), *TINY, f"output.dir={out}", *overrides]
    if launcher == "python":
        assert nproc == 1
        return [PY, "-m", "gandist.train", *args]
    if launcher == "torchrun":
        return [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={nproc}", "-m", "gandist.train", *args]
    if launcher == "accelerate":
        # accelerate's --cpu with several processes needs MPI; --multi_gpu runs torchrun underneath,
        # and gandist picks gloo on CPU itself when no GPU is there.
        kind = "--multi_gpu" if nproc > 1 else "--cpu"
        return [str(BIN / "accelerate"), "launch", kind, f"--num_processes={nproc}", "--num_machines=1",
                f"--main_process_port={free_port()}", "--mixed_precision=no", "--dynamo_backend=no",
                "-m", "gandist.train", *args]
    raise ValueError(launcher)


def run_train(out: Path, *overrides: str, nproc: int = 1, launcher: str = "python", timeout: int = 300,
              check: bool = True, config: str = "configs/quickstart.yaml") -> subprocess.CompletedProcess:
    cmd = train_cmd(out, *overrides, nproc=nproc, launcher=launcher, config=config)
    p = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}\nexit {p.returncode}\n--- stdout\n{p.stdout[-4000:]}\n"
                             f"--- stderr\n{p.stderr[-6000:]}")
    return p


def metrics(out: Path) -> list[dict]:
    return [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines() if l.strip()]


def max_weight_diff(a: Path, b: Path) -> float:
    """Largest absolute difference between two runs' final G and D weights."""
    from gandist.diff_weights import weight_diffs

    return max(weight_diffs(a, b).values())


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, the real samples: an extra check beside the format-exact files the tests make
    themselves (tests/data_fixtures.py), so a fresh clone passes without it.  Missing, its tests are
    reported as skipped with the reason; under CI=true, where it must be there, they fail."""
    if not SHARED_DATA.is_dir():
        why = f"the shared sample data is missing: expected {SHARED_DATA} (see ../shared/README.md)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{why}; CI=true requires it")
        pytest.skip(why)
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny tensors: on a busy 2-core machine a second thread only
    adds synchronisation (it made the nets tests 10-30x slower).  Use: pytestmark = usefixtures(...)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def slurm():
    """The SLURM cluster started on this machine for the session (tests/slurm_cluster.py), shared by every
    module that submits jobs.  Without slurm-wlm/munge (or root) its tests skip with the reason; under
    CI=true, where they must run, they fail with it."""
    why = why_unavailable()
    if why and os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"THE SLURM TESTS CANNOT RUN HERE (CI=true requires them): {why}", pytrace=False)
    if why:
        pytest.skip(f"no SLURM cluster can start here: {why}")
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
