"""gandist-sweep --slurm against stand-in sbatch and squeue programs (the real ones: tests/integration/
test_slurm.py): the array's command line, the job recorded in sweep.json, the tasks SLURM still holds skipped,
and a changed spec refused while tasks that find their member by index are queued."""
from __future__ import annotations

import json
import os
import stat

import pytest
import yaml

from gandist.compare import manifest
from gandist.sweep import cli, slurm
from tests.conftest import REPO


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sbatch records its arguments and answers job 4242; squeue prints what squeue.txt holds."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("sbatch", f'printf "%s\\n" "$@" > {tmp_path}/sbatch.args; echo 4242'),
                       ("squeue", f"cat {tmp_path}/squeue.txt 2>/dev/null")):
        exe = bin_dir / name
        exe.write_text(f"#!/bin/sh\n{body}\n")
        exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(REPO)  # --slurm submits slurm/train.sh from the repository, as sbatch would be used
    return tmp_path


def write_spec(tmp_path, seeds) -> str:
    path = tmp_path / "seeds.yaml"
    path.write_text(yaml.safe_dump({"config": str(REPO / "configs" / "quickstart.yaml"), "set": {"train.steps": 5},
                                    "grid": {"train.seed": seeds}, "out": str(tmp_path / "out"),
                                    "sbatch": ["--nodes=2", "--time=1:00:00"]}))
    return str(path)


def test_one_array_job_through_train_sh_recorded_in_the_manifest(fake_slurm, capsys):
    spec = write_spec(fake_slurm, [1, 2, 3])
    assert cli.main([spec, "--slurm", "--parallel", "2"]) == 0
    assert "submitted job array 4242 (3 member(s))" in capsys.readouterr().out
    out = fake_slurm / "out"
    assert (fake_slurm / "sbatch.args").read_text().splitlines() == [
        "--parsable", "--array=0,1,2%2", "--job-name=out", f"--output={out / 'logs' / 'slurm-%A_%a.out'}",
        "--nodes=2", "--time=1:00:00", "slurm/train.sh", "--sweep", str(out / "sweep.json")]
    written = manifest.read(out)
    assert [j["job"] for j in written["jobs"]] == [4242] and written["jobs"][0]["indices"] == [0, 1, 2]
    # what slurm/train.sh --sweep runs for array task 1: the base config, the overrides, output.dir last
    assert written["members"][1]["args"] == [str(REPO / "configs" / "quickstart.yaml"), "train.steps=5",
                                             "train.seed=2", f"output.dir={out / 'seed=2'}"]


def test_tasks_still_held_are_not_submitted_again(fake_slurm, capsys):
    spec = write_spec(fake_slurm, [1, 2, 3])
    assert cli.main([spec, "--slurm"]) == 0
    (fake_slurm / "squeue.txt").write_text("4242_0 RUNNING\n4242_2 PENDING\n")
    assert slurm.queued([4242]) == {0: "job 4242_0 running", 2: "job 4242_2 pending"}
    capsys.readouterr()
    assert cli.main([spec, "--slurm"]) == 0
    out = capsys.readouterr().out
    assert "skip: queued (job 4242_0 running)" in out and "1 to run" in out, out
    assert "--array=1" in (fake_slurm / "sbatch.args").read_text().splitlines()
    assert [j["indices"] for j in manifest.read(fake_slurm / "out")["jobs"]] == [[0, 1, 2], [1]]


def test_a_changed_spec_is_refused_while_its_tasks_are_queued(fake_slurm, capsys):
    assert cli.main([write_spec(fake_slurm, [1, 2]), "--slurm"]) == 0
    (fake_slurm / "squeue.txt").write_text("4242_1 PENDING\n")
    before = (fake_slurm / "out" / "sweep.json").read_text()
    capsys.readouterr()
    assert cli.main([write_spec(fake_slurm, [0, 1, 2]), "--slurm"]) == 2  # index 1 would now be another member
    err = capsys.readouterr().err
    assert "the members differ" in err and "job 4242_1 pending" in err, err
    assert (fake_slurm / "out" / "sweep.json").read_text() == before
    assert json.loads(before)["members"][1]["name"] == "seed=2"


def test_without_sbatch_or_outside_the_repository_nothing_is_written(fake_slurm, tmp_path, monkeypatch, capsys):
    spec = write_spec(fake_slurm, [1])
    monkeypatch.chdir(tmp_path)  # no slurm/train.sh here
    assert cli.main([spec, "--slurm"]) == 2
    assert "run gandist-sweep from the repository" in capsys.readouterr().err
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert cli.main([spec, "--slurm"]) == 2
    assert "sbatch is not on PATH" in capsys.readouterr().err
    assert not (fake_slurm / "out").exists()
