"""Faults (issue 7): a dead or hung rank makes the others exit with an error within train.timeout_s;
non-finite losses are skipped and counted, and stop the run after train.max_bad_steps in a row with
the last good checkpoint intact; a corrupt, tampered or mismatched checkpoint gets a clear error
naming the file, and nothing pickled in a checkpoint is ever run.

Real processes and real signals throughout; the checkpoint checks are also exercised in-process,
where every kind of damage is cheap to try.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from gandist.training import checkpoint
from tests.conftest import metrics, run_train
from tests.integration.test_resume import Job, last_step, says, wait_until

HOST = socket.gethostname()


# -- a rank that dies or hangs ------------------------------------------------------------------------

def survivor_exit(job: Job, victim: int, how: int, timeout_s: int) -> tuple[int, float, str]:
    """Signal one rank of a running 2-rank job; return the other's exit status, seconds to exit, log."""
    out = job.out
    wait_until(job, lambda: last_step(out) >= 2, "step 2")
    survivor = job.procs[1 - victim]
    job.signal(how, rank=victim)
    t = time.monotonic()
    try:
        rc = survivor.wait(timeout=timeout_s + 90)
    except subprocess.TimeoutExpired:
        job.kill()
        raise AssertionError(f"the surviving rank still runs {timeout_s + 90} s after its peer died:\n{job.log()}")
    took = time.monotonic() - t
    job.kill()  # the stopped one
    return rc, took, job.logs[1 - victim].read_text()


def test_a_killed_rank_makes_the_other_exit_with_a_clear_error(tmp_path):
    """Ranks started directly (no torchrun to tear the group down): the survivor's own error handling."""
    timeout_s = 60
    job = Job(tmp_path / "run", "train.steps=100000", "checkpoint.every=1000", f"train.timeout_s={timeout_s}",
              nproc=2, launcher="ranks")
    rc, took, log = survivor_exit(job, victim=1, how=signal.SIGKILL, timeout_s=timeout_s)
    print(f"rank 0 exited {took:.1f} s after rank 1 was killed")
    assert rc == 1, log
    assert took < timeout_s, log  # a dead peer is noticed at once (connection reset), not after the timeout
    assert says(log, f"gandist: error (rank 0 on {HOST}): lost contact with another process"), log
    assert "Traceback" not in log


def test_a_hung_rank_makes_the_other_exit_after_train_timeout_s(tmp_path):
    """Rank 0 (which also hosts the rendezvous store) is frozen with SIGSTOP: rank 1 gives up after
    train.timeout_s, the process-group timeout, and exits with an error instead of hanging."""
    timeout_s = 8
    job = Job(tmp_path / "run", "train.steps=100000", "checkpoint.every=1000", f"train.timeout_s={timeout_s}",
              nproc=2, launcher="ranks")
    rc, took, log = survivor_exit(job, victim=0, how=signal.SIGSTOP, timeout_s=timeout_s)
    print(f"rank 1 exited {took:.1f} s after rank 0 was frozen (train.timeout_s={timeout_s})")
    assert rc == 1, log
    assert timeout_s - 1 <= took <= timeout_s + 30, log
    assert says(log, f"gandist: error (rank 1 on {HOST}): lost contact with another process",
                f"train.timeout_s={timeout_s}"), log


# -- non-finite losses ----------------------------------------------------------------------------------

def files_of(ckpt: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(ckpt.iterdir())}


def test_nonfinite_losses_are_skipped_counted_and_stop_the_run_keeping_the_last_good_checkpoint(tmp_path, good_run):
    out = tmp_path / "run"
    shutil.copytree(good_run, out)
    good = out / "checkpoints" / "step_00000002"
    before = files_of(good)

    # An absurd learning rate for D: its first update sends its weights to ~1e30 and every loss after
    # that is inf or NaN.  (Written 1.0e+30: YAML reads a bare 1e30 as a string.)
    p = run_train(out, "train.steps=20", "checkpoint.every=1", "optim.lr_d=1.0e+30", "train.max_bad_steps=3",
                  check=False)
    assert p.returncode == 3, p.stderr
    assert says(p.stderr, "training diverged:", "non-finite for 3 steps in a row (train.max_bad_steps=3)",
                f"the last good checkpoint is {good}"), p.stderr
    assert "Traceback" not in p.stderr
    assert says(p.stdout, f"resumed from {good}", "the weights are not finite; no checkpoint saved")
    rows = metrics(out)
    assert [r["step"] for r in rows][:2] == [1, 2] and rows[-1]["step"] > 2
    bad = [r for r in rows if r["step"] > 2]
    assert any(not math.isfinite(r["loss_g"]) for r in bad)
    assert bad[-1]["bad_steps"] >= 2  # skipped steps are counted (D's and G's)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002"]
    assert files_of(good) == before  # byte for byte, and it passes every check a resume makes:
    from gandist import config, nets
    from gandist.training.checkpoint import identity

    cfg = config.load(out / "config.yaml", [])
    G, D = nets.build(cfg)
    checkpoint.verify(good, identity(cfg), {"generator": G, "discriminator": D}, None, main=True)


# -- corrupt, tampered, mismatched checkpoints ------------------------------------------------------------

class Payload:
    """Pickles as a call to os.system: what a booby-trapped checkpoint file holds."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def plant_pickle(f: Path, marker: Path):
    import torch

    torch.save({"step": 0, "random_state": Payload(marker), "torch_manual_seed": torch.zeros(3)}, f)


def rerecord(ckpt: Path, *names: str):
    """Forge trainer.json's size and hash of the files (an attacker who rewrote the list as well)."""
    state = json.loads((ckpt / "trainer.json").read_text())
    for name in names:
        state["files"][name] = {"bytes": (ckpt / name).stat().st_size, "sha256": checkpoint._sha256(ckpt / name)}
    (ckpt / "trainer.json").write_text(json.dumps(state))


def reshape_first_tensor(f: Path):
    from safetensors.torch import load_file, save_file

    sd = load_file(str(f))
    k = sorted(k for k, v in sd.items() if v.dim() >= 1)[0]
    sd[k] = sd[k][:-1].clone() if sd[k].shape[0] > 1 else sd[k].repeat(2, *[1] * (sd[k].dim() - 1))
    save_file(sd, str(f))
    return k


def damage(ckpt: Path, case: str, marker: Path) -> list[str]:
    """Damage a copy of a checkpoint; returns what the error must say."""
    if case == "truncated":
        f = ckpt / "model_1.safetensors"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        return [f"checkpoint file {f} is corrupt"]
    if case == "bit flip":
        f = ckpt / "optimizer.bin"
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0x40
        f.write_bytes(bytes(data))
        return [f"checkpoint file {f} is corrupt", "sha256"]
    if case == "missing file":
        (ckpt / "optimizer_1.bin").unlink()
        return [f"checkpoint file {ckpt / 'optimizer_1.bin'} is missing"]
    if case == "trainer.json garbage":
        (ckpt / "trainer.json").write_text('{"format": 2, "step": ')
        return [f"checkpoint file {ckpt / 'trainer.json'} is unreadable or corrupt"]
    if case == "pickle, forged list":
        plant_pickle(ckpt / "random_states_0.pkl", marker)
        rerecord(ckpt, "random_states_0.pkl")
        return [f"checkpoint file {ckpt / 'random_states_0.pkl'} is not plain tensor data",
                "weights-only unpickler refused", "never run"]
    if case == "pickle, stray file":
        plant_pickle(ckpt / "custom_checkpoint_0.pkl", marker)
        return [f"checkpoint {ckpt} holds files it did not write: custom_checkpoint_0.pkl"]
    if case == "other shapes":
        key = reshape_first_tensor(ckpt / "model.safetensors")
        rerecord(ckpt, "model.safetensors")
        return [f"checkpoint file {ckpt / 'model.safetensors'} does not fit this run's generator", f"{key} has shape"]
    raise ValueError(case)


CASES = ["truncated", "bit flip", "missing file", "trainer.json garbage", "pickle, forged list",
         "pickle, stray file", "other shapes"]


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("good") / "run"
    run_train(out, "train.steps=2", "checkpoint.every=2")
    return out


def test_the_payload_is_live(tmp_path):
    """Control: the planted file does run code when unpickled the ordinary way."""
    import torch

    marker = tmp_path / "ran"
    plant_pickle(tmp_path / "f.pkl", marker)
    torch.load(tmp_path / "f.pkl", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("case", CASES)
def test_checkpoint_checks_name_the_damaged_file(tmp_path, good_run, case):
    """In-process: the checks train.py runs on every rank before anything is loaded."""
    from gandist import config, nets
    from gandist.training.checkpoint import identity

    ckpt = tmp_path / "step_00000002"
    shutil.copytree(good_run / "checkpoints" / "step_00000002", ckpt)
    marker = tmp_path / "payload_ran"
    expected = damage(ckpt, case, marker)
    cfg = config.load(good_run / "config.yaml", [])
    G, D = nets.build(cfg)
    with pytest.raises(checkpoint.CheckpointError) as e:
        checkpoint.verify(ckpt, identity(cfg), {"generator": G, "discriminator": D}, None, main=True)
    assert says(str(e.value), *expected), str(e.value)
    assert not marker.exists()


def test_damaged_tampered_or_mismatched_checkpoints_stop_real_runs_with_the_file_named(tmp_path, good_run):
    """Real runs, several at a time: exit status 2, one clear line naming the file, no payload run."""
    marker = tmp_path / "payload_ran"
    jobs, expected = {}, {}
    for case in ["truncated", "pickle, forged list", "variant"]:
        out = tmp_path / case.replace(", ", "_").replace(" ", "_") / "run"
        shutil.copytree(good_run / "checkpoints", out / "checkpoints")
        ckpt = out / "checkpoints" / "step_00000002"
        extra = []
        if case == "variant":  # another variant's run pointed at this checkpoint
            extra = ["variant=wgan_gp", f"train.resume={ckpt}"]
            expected[case] = [f"checkpoint {ckpt} does not match this run's config", "variant: checkpoint has 'dcgan'"]
        else:
            expected[case] = damage(ckpt, case, marker)
        jobs[case] = Job(out, "train.steps=4", "checkpoint.every=2", *extra)
    for case, job in jobs.items():
        assert job.wait() == [2], job.log()
        log = job.log()
        assert says(log, "gandist: error (rank 0 on", *expected[case]), log
        assert "Traceback" not in log
        assert not (job.out / "final").exists()
    assert not marker.exists()
