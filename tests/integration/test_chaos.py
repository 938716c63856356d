"""Issue 19's proof, one short chaos run: a 2-process fp64 run (torchrun, gloo) that is, at random steps,
SIGKILLed (every process), SIGTERMed, Ctrl-C'd and given a full disk (ENOSPC) while a checkpoint is
written, and that a second run tries to share -- resumed with train.resume=auto after each -- ends with
weights bit-identical to the same run left alone.  The steps are drawn from a seed printed with the
events (GANDIST_CHAOS_SEED=N repeats a run)."""
from __future__ import annotations

import os
import random
import signal
import socket
import time

from safetensors.torch import load_file

from gandist.training.lock import LOCK
from tests.conftest import REPO, run_train
from tests.integration.test_resume import (TORCHRUN_ARGS, Job, _tmp_dirs, assert_same_run, check_complete_checkpoints,
                                           interrupt, last_step, latest_step, says, wait_until)

STEPS, EVERY = 24, 4
ARGS = ["variant=dcgan", f"train.steps={STEPS}", f"checkpoint.every={EVERY}", "checkpoint.keep=2", "optim.ema=0.9",
        "train.fp64=true"]
HOST = socket.gethostname()


def torchrun(out, **extra_env) -> Job:
    return Job(out, *ARGS, nproc=2, launcher="torchrun", torchrun_args=TORCHRUN_ARGS, extra_env=extra_env)


def resumed(job: Job) -> Job:
    """Once the run has resumed: metrics.jsonl's rows after its checkpoint (the lost tail) are gone by then."""
    wait_until(job, lambda: "process(es)" in job.log(), "the start-up line")
    return job


def identical_weights(a, b):
    for name in ("generator", "discriminator", "generator_ema"):
        x, y = (load_file(str(d / "final" / f"{name}.safetensors")) for d in (a, b))
        assert x.keys() == y.keys() and all(bool((x[k] == y[k]).all()) for k in x), f"{name} differs"


def test_killed_stopped_interrupted_and_disk_full_then_resumed_equals_the_run_left_alone(tmp_path):
    seed = int(os.environ.get("GANDIST_CHAOS_SEED", time.time()))
    rng = random.Random(seed)
    alone = torchrun(tmp_path / "alone")  # the reference, beside the chaos (two cores, two ranks each)
    out = tmp_path / "run"
    events = [f"seed {seed}"]

    # SIGKILL, every process, at a random step; before it, a second run on the same directory is refused
    # (the first is frozen meanwhile, so that it is still at work however long the second takes to start)
    job = torchrun(out)
    wait_until(job, lambda: last_step(out) >= 2, "step 2")
    job.signal(signal.SIGSTOP)
    second = run_train(out, *ARGS, check=False)
    job.signal(signal.SIGCONT)
    assert second.returncode == 2, second.stdout + second.stderr
    assert says(second.stderr, f"output.dir {out} is in use by another run (host {HOST}, pid",
                "nothing was touched"), second.stderr
    events.append(interrupt(job, f"SIGKILL step={rng.randint(3, 6)}", rng, 0, {}))
    assert (out / LOCK).exists()  # a killed run cannot release its lock: the next start takes it over

    # SIGTERM to torchrun (passed on to its workers) at a random step: a checkpoint, exit 75
    start, stale = latest_step(out), _tmp_dirs(out)
    job = resumed(torchrun(out))
    events.append(interrupt(job, f"SIGTERM step={rng.randint(start + 2, start + 4)}", rng, start, stale))
    assert says(job.log(), "taking over the run directory's lock", "has ended"), job.log()

    # Ctrl-C: the terminal's SIGINT reaches torchrun alone (its workers have sessions of their own)
    start = latest_step(out)
    job = resumed(torchrun(out))
    target = rng.randint(start + 2, start + 4)
    wait_until(job, lambda: last_step(out) >= target, f"step {target}")
    os.kill(job.procs[0].pid, signal.SIGINT)
    assert job.wait(timeout=120) != [0], job.log()
    stopped = latest_step(out)
    assert stopped > start and says(job.log(), f"Ctrl-C: checkpoint {out}/checkpoints/step_{stopped:08d} saved at "
                                               f"step {stopped}", "train.resume=auto"), job.log()
    assert not (out / "preempted.json").exists() and not (out / LOCK).exists()
    events.append(f"Ctrl-C after step {target}: stopped at step {stopped}")

    # a full disk while the checkpoint of a random later step is written (both ranks' writes fail)
    full = min((stopped // EVERY + rng.randint(1, 2)) * EVERY, STEPS)
    newest = max(stopped, full - EVERY)
    job = torchrun(out, GANDIST_TEST_ENOSPC_AT=full, PYTHONPATH=REPO / "tests" / "inject")
    assert job.wait() != [0], job.log()
    log = job.log(tail=20000)
    assert says(log, f"could not write checkpoint {out}/checkpoints/.tmp-step_{full:08d} (ENOSPC: No space left "
                     f"on device)", "train.resume=auto; every earlier checkpoint is intact"), log
    assert not (out / "checkpoints" / f".tmp-step_{full:08d}").exists()
    assert latest_step(out) == newest
    check_complete_checkpoints(out)
    events.append(f"ENOSPC writing step {full}'s checkpoint: stopped, newest checkpoint {newest}")

    # resumed to the end
    job = torchrun(out)
    assert job.wait() == [0], job.log()
    assert says(job.log(), f"steps {newest}->{STEPS}")
    print("chaos:", "; ".join(events))
    assert alone.wait() == [0], alone.log()
    identical_weights(out, alone.out)
    assert_same_run(out, alone.out, STEPS)
