"""A finished multi-process run exits cleanly: once the process group is destroyed, nothing keeps it
(and gloo's threads) alive into interpreter teardown, where a thread that can no longer take the GIL
aborts the process ("terminate called without an active exception", issue 11 point 8).

The cause was torch.distributed.nn.functional: ten of its functions take `group=group.WORLD` as a
default argument, evaluated at import, and torchvision and torch-fidelity import it (through
torch._dynamo) after the group exists.  gandist.distributed imports it first.  The probe below runs
in a fresh one-rank gloo process, with and without gandist imported first, so the test can fail.

And a stop signal that comes after the run has finished does not kill it in teardown."""
from __future__ import annotations

import json
import signal
import subprocess

import pytest

from tests.conftest import PY, REPO, env, free_port, train_cmd

PROBE = r"""
import gc, json, os, sys
if sys.argv[1] == "gandist-first":
    import gandist.distributed  # what every gandist entry point does before a group exists
import torch.distributed as dist
dist.init_process_group("gloo", rank=0, world_size=1)
import torchvision  # noqa: F401  (as torch-fidelity's Inception does, after the group exists)
pg = dist.distributed_c10d._get_default_group()
before = sys.getrefcount(pg)
dist.destroy_process_group()
gc.collect()
kept = sys.getrefcount(pg) - 2  # less getrefcount's own argument and `pg`
del pg
gc.collect()
threads = sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))
print(json.dumps({"kept": kept, "before": before, "threads": threads}))
"""


def probe(order: str) -> dict:
    p = subprocess.run([PY, "-c", PROBE, order], cwd=REPO, capture_output=True, text=True, timeout=300,
                       env=env(MASTER_ADDR="127.0.0.1", MASTER_PORT=free_port()))
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_the_group_and_its_threads_are_gone_after_destroy_when_gandist_is_imported_first():
    clean = probe("gandist-first")
    assert clean["kept"] == 0, clean
    assert not [t for t in clean["threads"] if t.startswith(("gloo", "pt_gloo"))], clean


def test_without_it_torch_keeps_the_group_alive_past_destroy():
    # what the test above guards against; if torch ever stops doing this, this test says so
    leaky = probe("torch-only")
    assert leaky["kept"] >= 1 and any(t.startswith(("gloo", "pt_gloo")) for t in leaky["threads"]), leaky


# -- a stop signal after the run ----------------------------------------------------------------------

LATE_SIGNAL = r"""
import os, sys
from gandist.train import main

class LateSignal:
    # deleted with __main__'s globals, after Python has disabled its signal handlers (interpreter teardown)
    def __init__(self):
        self.kill, self.pid, self.signum = os.kill, os.getpid(), int(os.environ["LATE_SIGNAL"])

    def __del__(self):
        self.kill(self.pid, self.signum)

late = LateSignal()
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM], ids=["SIGUSR1", "SIGTERM"])
def test_a_stop_signal_in_interpreter_teardown_does_not_kill_a_finished_run(tmp_path, signum):
    """SLURM's time-limit warning (SIGUSR1) can reach a run that has just finished, and the launcher
    scripts repeat a stop signal until training has exited.  In teardown Python has put the default
    action (terminate) back in place of gandist's handler: the finished run died with -10 and
    slurm/train.sh requeued it."""
    cmd = train_cmd(tmp_path / "run", "train.steps=2")
    p = subprocess.run([cmd[0], "-c", LATE_SIGNAL, *cmd[3:]], cwd=REPO, env=env(LATE_SIGNAL=int(signum)),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (p.returncode, p.stderr[-3000:])
    assert (tmp_path / "run" / "final" / "generator.safetensors").is_file()


AFTER_MAIN = r"""
import signal, subprocess, sys
from gandist.train import main

assert main(sys.argv[1:]) == 0
# a child started now must be able to trap SIGTERM (bash cannot trap a signal it starts with ignored)
child = subprocess.run(["bash", "-c", "trap 'exit 7' TERM; kill -TERM $$; sleep 5; exit 0"])
print("child", child.returncode, "term ignored here", signal.getsignal(signal.SIGTERM) == signal.SIG_IGN)
"""


def test_a_program_that_runs_training_in_process_keeps_its_signals(tmp_path):
    """What makes teardown safe must not leak: stop signals ignored at the end of main() were inherited
    by every process the caller started afterwards (pytest's later entrypoint tests could not trap
    SIGTERM, and their training ran on as orphans)."""
    cmd = train_cmd(tmp_path / "run", "train.steps=2")
    p = subprocess.run([cmd[0], "-c", AFTER_MAIN, *cmd[3:]], cwd=REPO, env=env(), capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "child 7 term ignored here False" in p.stdout, p.stdout[-2000:]
