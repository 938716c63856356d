"""launch/*.yaml (the accelerate configs the README shows) and training with no launcher at all."""
from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests.conftest import BIN, PY, REPO, TINY, env, metrics

LAUNCH = REPO / "launch"
# name -> (distributed_type accelerate must see, machines, processes)
EXPECTED = {
    "cpu": ("MULTI_GPU", 1, 2),          # torchrun underneath; gandist picks gloo on a machine without GPUs
    "single_gpu": ("NO", 1, 1),
    "multi_gpu": ("MULTI_GPU", 1, 8),
    "multi_node": ("MULTI_GPU", 2, 16),
}


def accelerate_reads(config_file, *cli: str):
    """What `accelerate launch --config_file FILE [cli...] -m gandist.train` settles on, without launching."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(config_file), *cli, "-m", "gandist.train"])
    args, defaults, _ = _validate_launch_command(args)
    return args, defaults


def clean_env(**extra) -> dict:
    """No launcher's variables: a plain `python -m gandist.train`."""
    e = env(**extra)
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
              "GROUP_RANK", "TORCHELASTIC_RUN_ID", "ACCELERATE_USE_CPU", "ACCELERATE_MIXED_PRECISION"):
        e.pop(k, None)
    return e


def check(p: subprocess.CompletedProcess, what: str):
    assert p.returncode == 0, f"{what}: exit {p.returncode}\n--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-5000:]}"


def test_launch_holds_the_documented_configs():
    assert sorted(p.stem for p in LAUNCH.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_parses_and_accelerate_reads_it_as_intended(name):
    path = LAUNCH / f"{name}.yaml"
    raw = yaml.safe_load(path.read_text())
    assert isinstance(raw, dict) and raw["compute_environment"] == "LOCAL_MACHINE", raw
    dist_type, machines, procs = EXPECTED[name]
    args, defaults = accelerate_reads(path)
    assert defaults.distributed_type.value == dist_type
    assert (args.num_machines, args.num_processes) == (machines, procs)
    assert args.multi_gpu == (dist_type == "MULTI_GPU")
    if name in ("cpu", "multi_gpu"):
        assert args.main_process_port == 0  # a free port: runs can share a machine


def test_multi_node_has_the_fields_a_user_edits_and_the_command_line_wins():
    raw = yaml.safe_load((LAUNCH / "multi_node.yaml").read_text())
    for key in ("num_machines", "num_processes", "machine_rank", "main_process_ip", "main_process_port",
                "rdzv_backend"):
        assert key in raw, key
    assert raw["num_processes"] % raw["num_machines"] == 0
    assert raw["rdzv_backend"] in ("static", "c10d")
    # slurm/train.sh fills these in per job on the command line
    args, _ = accelerate_reads(LAUNCH / "multi_node.yaml", "--num_machines", "4", "--num_processes", "4",
                               "--machine_rank", "3", "--main_process_ip", "10.1.2.3", "--main_process_port", "23456",
                               "--rdzv_backend", "c10d")
    assert (args.num_machines, args.num_processes, args.machine_rank) == (4, 4, 3)
    assert (args.main_process_ip, args.main_process_port, args.rdzv_backend) == ("10.1.2.3", 23456, "c10d")


def test_cpu_config_trains_with_two_processes(tmp_path):
    out = tmp_path / "run"
    cmd = [str(BIN / "accelerate"), "launch", "--config_file", str(LAUNCH / "cpu.yaml"), "-m", "gandist.train",
           "--config", str(REPO / "configs/quickstart.yaml"), *TINY, "train.steps=4", f"output.dir={out}"]
    p = subprocess.run(cmd, cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=300)
    check(p, "accelerate launch --config_file launch/cpu.yaml")
    info = json.loads((out / "run.json").read_text())
    assert info["world_size"] == 2 and info["distributed_type"] == "DistributedType.MULTI_CPU", info
    assert sorted(r["rank"] for r in info["ranks"]) == [0, 1]
    assert all(r["device"].startswith("cpu") for r in info["ranks"])
    assert [r["step"] for r in metrics(out)] == [1, 2, 3, 4]
    assert (out / "final" / "generator.safetensors").is_file()


def test_single_gpu_config_runs_one_process_without_torch_distributed(tmp_path):
    out = tmp_path / "run"
    cmd = [str(BIN / "accelerate"), "launch", "--config_file", str(LAUNCH / "single_gpu.yaml"), "-m",
           "gandist.train", "--config", str(REPO / "configs/quickstart.yaml"), *TINY, "train.steps=2",
           f"output.dir={out}"]
    p = subprocess.run(cmd, cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=300)
    check(p, "accelerate launch --config_file launch/single_gpu.yaml")
    info = json.loads((out / "run.json").read_text())
    assert info["world_size"] == 1 and info["distributed_type"] == "DistributedType.NO", info
    assert (out / "final" / "generator.safetensors").is_file()


# Runs gandist.train as `python -m gandist.train` would, counting calls to init_process_group.
NO_LAUNCHER = """
import runpy, sys
import torch.distributed as dist
calls = []
real = dist.init_process_group
def counting(*a, **k):
    calls.append(k.get("backend"))
    return real(*a, **k)
dist.init_process_group = counting
sys.argv = ["gandist.train", *sys.argv[1:]]
try:
    runpy.run_module("gandist.train", run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as e:
    code = e.code
print(f"INIT_PROCESS_GROUP_CALLS={len(calls)} INITIALIZED={dist.is_available() and dist.is_initialized()}")
sys.exit(code)
"""


def test_python_without_launcher_trains_and_never_initialises_torch_distributed(tmp_path):
    out = tmp_path / "run"
    p = subprocess.run([PY, "-c", NO_LAUNCHER, "--config", str(REPO / "configs/quickstart.yaml"), *TINY,
                        "train.steps=3", f"output.dir={out}"], cwd=REPO, env=clean_env(), capture_output=True,
                       text=True, timeout=300)
    check(p, "python -m gandist.train (no launcher)")
    assert "INIT_PROCESS_GROUP_CALLS=0 INITIALIZED=False" in p.stdout, p.stdout[-2000:]
    info = json.loads((out / "run.json").read_text())
    assert info["world_size"] == 1 and info["distributed_type"] == "DistributedType.NO", info
    assert [r["step"] for r in metrics(out)] == [1, 2, 3]
    assert (out / "final" / "generator.safetensors").is_file()

