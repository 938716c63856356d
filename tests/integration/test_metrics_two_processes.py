"""The evaluator across two real processes (torchrun, gloo) gives the scores of one process, on every rank:
Inception's (FID, KID) and the judge's (judge FD, accuracy, precision / recall / density / coverage)."""
from __future__ import annotations

import json
import math

import subprocess

import pytest
import torch

from gandist.metrics import evaluator as E
from tests.conftest import BIN, REPO, env
from tests import metrics_fixtures
from tests.metrics_fixtures import make_random_judge, tiny_cfg

inception_weights = metrics_fixtures.inception_weights  # the session fixture, by its name here


# The worker ends as a program does: after destroy_process_group the interpreter exits normally.  It
# once left with os._exit, because rank 0 now and then aborted at exit ("terminate called without an
# active exception", 2 of 83 runs): importing torchvision / torch-fidelity after init_process_group
# imported torch.distributed.nn, whose default arguments then held the group, so gloo's threads ran on
# into interpreter teardown.  gandist.distributed now imports it before any group exists (see there,
# and test_clean_exit.py).  Started by torchrun, as gandist's runs are.
WORKER = r"""
import json, os, sys, torch
import torch.distributed as dist
sys.path.insert(0, os.environ["REPO"])
from gandist import nets, metrics
from tests.metrics_fixtures import tiny_cfg
from tests.integration.test_metrics_two_processes import judge_cfg
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
cfg = tiny_cfg("variant=cgan", f"eval.feature_weights={os.environ['WEIGHTS']}")
torch.manual_seed(0)
G, _ = nets.build(cfg)
ev = metrics.Evaluator(cfg, "cpu", rank, world, feature_layer="64")
scores = ev(G)
judged = metrics.Evaluator(judge_cfg(os.environ["JUDGE"]), "cpu", rank, world, batch_size=5)(G)
with open(os.environ["OUT"] + f".{rank}", "w") as f:
    json.dump({"scores": scores, "real": ev.real_count, "judge": judged}, f)
dist.destroy_process_group()
"""


def judge_cfg(judge_file):
    """The judge's four metrics of the same class-conditional run, on 12 images (prdc's k = 5 needs 6)."""
    return tiny_cfg("variant=cgan", "eval.metrics=[judge_fd,judge_acc,judge_mix,prdc]", f"eval.judge={judge_file}",
                    "eval.num_samples=12")


def test_evaluator_same_scores_for_one_and_two_processes_and_real_features_read_once(tmp_path, inception_weights,
                                                                                     monkeypatch):
    from gandist import nets

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "scores"
    judge_file = make_random_judge(tmp_path / "judge.safetensors")
    two = subprocess.Popen([str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", str(script)], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=env(REPO=REPO, WEIGHTS=inception_weights, OUT=out, JUDGE=judge_file))

    # meanwhile, one process (a class-conditional G; the labels are balanced classes)
    cfg = tiny_cfg("variant=cgan", f"eval.feature_weights={inception_weights}")
    torch.manual_seed(0)
    G, _ = nets.build(cfg)
    G.train()
    reads = []
    real = E.real_batches
    monkeypatch.setattr(E, "real_batches", lambda *a, **k: (reads.append(1), real(*a, **k))[1])
    ev = E.Evaluator(cfg, "cpu", feature_layer="64", batch_size=4).prepare()
    assert len(reads) == 1 and ev.real_count == 6
    one = ev(G)
    again = ev(G)
    assert G.training  # its mode is restored
    assert len(reads) == 1 and ev.real_count == 6
    assert set(one) == {"fid", "kid", "kid_std"} and one == again
    assert one["fid"] > 0 and math.isfinite(one["kid"])
    judged = E.Evaluator(judge_cfg(judge_file), "cpu", batch_size=4)(G)
    assert set(judged) == {"judge_fd", "judge_fd_ratio", "judge_acc", "judge_mix", "precision", "recall", "density",
                           "coverage"}
    assert 0 <= judged["judge_mix"] <= 1
    assert judged["judge_fd"] > 0 and judged["judge_fd_ratio"] == judged["judge_fd"]  # the file's floor is 1

    stdout, _ = two.communicate(timeout=300)
    assert two.returncode == 0, stdout[-5000:]
    results = [json.loads(open(f"{out}.{r}").read()) for r in range(2)]
    assert results[0] == results[1]  # every rank returns the same dict
    assert results[0]["real"] == 6
    two = results[0]["scores"]
    assert two["fid"] == pytest.approx(one["fid"], rel=1e-3)
    assert two["kid"] == pytest.approx(one["kid"], rel=1e-3, abs=1e-6)
    # the judge's: the distance up to rounding; the counts of P/R/D/C and the accuracy exactly
    two_judged = results[0]["judge"]
    assert two_judged["judge_fd"] == pytest.approx(judged["judge_fd"], rel=1e-4)
    assert {k: v for k, v in two_judged.items() if not k.startswith("judge_fd")} == pytest.approx(
        {k: v for k, v in judged.items() if not k.startswith("judge_fd")}, abs=1e-9)
