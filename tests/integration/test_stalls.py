"""Stalled ranks (issue 25) on one machine: launch/elastic.sh agents as "nodes" on 127.0.0.1, a standalone
rendezvous store, gloo, fp64, the embedded data, and stalls injected by tests/inject/sitecustomize.py.

- Four nodes train, and three stalls hit them one after another, one of each kind (the loop asleep in a round,
  a batch read that blocks, a rank that never enters a log step's all-reduce); in one run they hit rank 0, 1,
  0 (rank 0's node also holds the group's store), in the other rank 1, 0, 1: so each kind hits both rank 0's
  node and another's.  Each time the stalled rank is named (rank, host, phase, last step) by the others within
  train.hang_timeout_s plus a few seconds, its node leaves the run saying why, and the others go on from the
  newest checkpoint at the smaller world.  The final weights equal, bit for bit, those of one
  process that trained from scratch, so each continuation is what a fresh run from its checkpoint gives.
- A save and an evaluation longer than train.hang_timeout_s are not named: they have budgets of their own.
"""
from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from gandist.training.run_dir import read_history as read
from tests import metrics_fixtures
from tests.conftest import REPO, run_train
from tests.integration.test_elastic import Node, last_step, starts, store, until
from tests.integration.test_resume import Job, says

HOST = socket.gethostname()
HANG = 5
ARGS = ["train.fp64=true", "train.steps=120", "checkpoint.every=20", "checkpoint.keep=2", "optim.ema=0.9",
        "train.batch_size=12", "train.log_every=5"]  # 12 splits over worlds 1 to 4
PHASE = {"sleep": "step", "read": "data wait", "collective": "log sync"}
RANKS = {"rank 0 first": (0, 1, 0), "rank 1 first": (1, 0, 1)}  # the rank each kind hits, in PHASE's order
INJECT = str(REPO / "tests" / "inject")
inception_weights = metrics_fixtures.inception_weights  # the session fixture, by its name here


@pytest.fixture(scope="module")
def alone(tmp_path_factory) -> Path:
    """The same training in one process, from scratch, never stalled."""
    out = tmp_path_factory.mktemp("alone") / "run"
    run_train(out, *ARGS)
    return out


def stall(where: Path, kind: str, rank: int, **spec):
    (where / f"{kind}-{rank}").write_text(json.dumps(spec))


@pytest.mark.parametrize("order", list(RANKS))
def test_a_stalled_rank_is_named_and_the_others_go_on_without_its_node(tmp_path, alone, order):
    srv, endpoint = store()
    out, stalls = tmp_path / "run", tmp_path / "stalls"
    stalls.mkdir()
    settings = dict(GANDIST_ELASTIC_NODES="1:4", GANDIST_TEST_STALL=stalls, PYTHONPATH=INJECT)
    nodes = [Node(out, endpoint, "stalls", name, f"train.hang_timeout_s={HANG}", *ARGS, **settings) for name in "abcd"]
    try:
        until(lambda: starts(out) == [4] and last_step(out) >= 22, 300, "world 4 at step 22", *nodes)
        for world, kind, rank in zip((4, 3, 2), PHASE, RANKS[order]):
            at = last_step(out)
            stall(stalls, kind, rank)
            t = time.monotonic()
            named = f"rank {rank} on {HOST} stalled in phase '{PHASE[kind]}' after step"
            until(lambda: any(says(n.text(), named) for n in nodes), HANG + 30, f"rank {rank} named", *nodes)
            took = time.monotonic() - t
            print(f"{kind}: rank {rank} at world {world} named after {took:.1f} s (train.hang_timeout_s={HANG})")
            assert took < HANG + 10
            until(lambda: any("this node left the run" in n.text() for n in nodes), 30, "the node leaving", *nodes)
            left = [n for n in nodes if "this node left the run" in n.text()]
            assert len(left) == 1 and left[0].proc.wait(timeout=60) == 1, [n.text()[-2000:] for n in nodes]
            assert says(left[0].text(), f"launch/elastic.sh: error: this node left the run: rank {rank} on {HOST} "
                        f"stalled: no progress for", f"phase '{PHASE[kind]}'", f"train.hang_timeout_s={HANG}")
            nodes.remove(left[0])
            until(lambda: starts(out)[-1:] == [world - 1] and last_step(out) > at + 5, 120,
                  f"training on at world {world - 1}", *nodes)
            print(f"{kind}: first step at world {world - 1} {time.monotonic() - t:.1f} s after the stall")
        assert nodes[0].proc.wait(timeout=240) == 0, nodes[0].text()[-3000:]
    finally:
        for n in nodes:
            n.signal(signal.SIGKILL)
        srv.kill()
    history = read(out)
    assert [s["world_size"] for s in history] == [4, 3, 2, 1]
    assert all(s["resumed_from"] and s["step"] % 20 == 0 for s in history[1:])  # the newest checkpoint each time
    for name in ("generator", "discriminator", "generator_ema"):
        x, y = (load_file(str(d / "final" / f"{name}.safetensors")) for d in (out, alone))
        assert all(bool((x[k] == y[k]).all()) for k in x), f"{name} differs from the run that never stalled"


def test_a_save_or_an_evaluation_longer_than_hang_timeout_s_is_not_named(tmp_path, inception_weights):
    stalls = tmp_path / "stalls"
    stalls.mkdir()
    stall(stalls, "save", 1, seconds=HANG + 3)
    stall(stalls, "eval", 0, seconds=HANG + 3)
    job = Job(tmp_path / "run", f"train.hang_timeout_s={HANG}", "train.steps=10", "checkpoint.every=10",
              "eval.metrics=[kid]", "eval.every=10", "eval.num_samples=16", "eval.feature_layer=64",
              f"eval.feature_weights={inception_weights}", nproc=2, launcher="torchrun",
              extra_env={"GANDIST_TEST_STALL": stalls, "PYTHONPATH": INJECT})
    assert job.wait(timeout=300) == [0], job.log()
    assert sorted(p.name for p in stalls.iterdir()) == ["eval-0.taken", "save-1.taken"]  # both happened
    assert "stalled" not in job.log(tail=100000) and "silent" not in job.log(tail=100000), job.log()


def test_a_sigusr1_while_training_still_imports_is_kept_for_the_first_log_step(tmp_path):
    """SLURM's SIGUSR1 reaches every process, and torchrun's agent passes it on: a worker still importing used to
    die of it (its default action), and the job failed instead of being requeued."""
    out = tmp_path / "run"
    job = Job(out, "train.steps=100000", "checkpoint.every=1000")
    time.sleep(0.5)  # gandist.train imports for seconds: the signal comes in the middle
    job.signal(signal.SIGUSR1)
    assert job.wait(timeout=180) == [75], job.log()
    assert says(job.log(), "SIGUSR1 received: checkpoint", "saved at step 1;"), job.log()
