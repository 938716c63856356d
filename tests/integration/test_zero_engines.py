"""G and D as two DeepSpeed ZeRO engines (backends/zero/engines.py's make_engines) in 2 real CPU processes (torchrun, gloo)
train exactly as one process does on the full batch: a WGAN-GP D step (adversarial loss + gradient penalty,
the penalty's torch.autograd.grad(create_graph=True) taken through engine.module, one engine.backward of the
sum), a G step with D frozen, and a second D step.

The optimizer is SGD: its update is lr x gradient, so the weight changes are the gradients DeepSpeed reduced
(Adam's first step is nearly the gradient's sign and would hide a wrong scale).  D frozen during the G step
must keep D's engine quiet: no gradient reduction of D runs there, and D's next step sees only its own loss.

This file is also the worker: torchrun runs it as a script.
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from gandist import config, nets
from gandist.distributed import share
from gandist.nets.layers import convert_sync_batchnorm
from gandist.objective import Objective

REPO = Path(__file__).resolve().parents[2]
LR = 0.1
TOL = 1e-5  # on gradients (weight change / LR), relative to the largest one when that is above 1


class GlobalDraws:
    """The step's random numbers as gandist's draws give them (this rank's rows of a draw that depends only on
    (step, purpose)), made simply: the whole global draw, then the rows.  Enough for an 8-row batch."""

    def __init__(self, global_batch: int, rows: range):
        self.global_batch, self.rows = global_batch, rows

    def _draw(self, fn, step: int, purpose: str, *shape):
        g = torch.Generator().manual_seed(step * 1000 + sum(map(ord, purpose)))
        return fn(self.global_batch, *shape, generator=g)[self.rows[0]:self.rows[-1] + 1]

    def rand(self, step: int, purpose: str, *shape):
        return self._draw(torch.rand, step, purpose, *shape)

    def randn(self, step: int, purpose: str, *shape):
        return self._draw(torch.randn, step, purpose, *shape)


def make_cfg(overrides):
    return config.load(REPO / "configs" / "quickstart.yaml", ["variant=wgan_gp", *overrides])


def global_real(cfg) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    d = cfg.data
    return torch.rand(cfg.train.batch_size, d.channels, d.resolution, d.resolution, generator=g) * 2 - 1


class Trainer:
    """One process's view: G, D, their optimizers and the objective, on `rows` of the global batch.
    With `engines`, G and D are DeepSpeed engines and D's penalty goes through D's module."""

    def __init__(self, cfg, G, D, rank: int, world: int, engines=None):
        self.cfg, self.G, self.D, self.eng = cfg, G, D, engines
        self.rows = share(cfg.train.batch_size, rank, world)
        self.draws = GlobalDraws(cfg.train.batch_size, self.rows)
        self.objective = Objective(cfg.loss, cfg.train.steps, self.draws)
        if engines is None:
            self.opt_g = torch.optim.SGD(G.parameters(), lr=LR)
            self.opt_d = torch.optim.SGD(D.parameters(), lr=LR)

    def d_step(self, j: int, real: torch.Tensor):
        z = self.draws.randn(j, "z_d", self.cfg.model.z_dim)
        with torch.no_grad():
            fake = self.eng.G(z, None) if self.eng else self.G(z, None)
        # The D step's forwards go through D's module (engine.module): a penalty's autograd.grad through the
        # engine's own forward would run its post-backward reduction on empty buckets.
        loss, _ = self.objective.d_loss(self.D, real[self.rows[0]:self.rows[-1] + 1], fake, None, j, 0)
        if self.eng:
            self.eng.D.backward(loss)  # adversarial + penalty: one backward, one reduction
            self.eng.D.step()
        else:
            loss.backward()
            self.opt_d.step()
            self.opt_d.zero_grad(set_to_none=True)

    def g_step(self, i: int):
        self.D.requires_grad_(False)  # D is a fixed function here; frozen, its gradient hooks never fire
        try:
            z = self.draws.randn(i, "z_g", self.cfg.model.z_dim)
            fake = self.eng.G(z, None) if self.eng else self.G(z, None)
            loss, _ = self.objective.g_loss(self.D, fake, None, i, 0)
            if self.eng:
                self.eng.G.backward(loss)
                self.eng.G.step()
            else:
                loss.backward()
                self.opt_g.step()
                self.opt_g.zero_grad(set_to_none=True)
        finally:
            self.D.requires_grad_(True)


def weights(m: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in m.parameters()]


def grad_diff(before_a, after_a, before_b, after_b) -> float:
    """Largest difference between the two runs' gradients, read off SGD's weight changes, relative to the
    largest gradient when that is above 1 (fp32 weights hold a change of size g only to ~1e-7 g)."""
    diff = max(float(((a0 - a1) - (b0 - b1)).abs().max()) for a0, a1, b0, b1 in zip(before_a, after_a, before_b, after_b))
    scale = max(float((b0 - b1).abs().max()) for b0, b1 in zip(before_b, after_b))
    return diff / max(LR, scale)


class Calls:
    """Counts calls of an object's methods (DeepSpeed's gradient reduction entry points)."""

    def __init__(self, obj, names):
        self.n = 0
        for name in names:
            if hasattr(obj, name):
                setattr(obj, name, self._wrap(getattr(obj, name)))

    def _wrap(self, fn):
        def counted(*a, **k):
            self.n += 1
            return fn(*a, **k)
        return counted


def worker(stage: int, overrides: list[str], out: Path):
    from gandist.backends.zero.engines import ZeroSettings, build_config, make_engines

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    cfg = make_cfg(overrides)
    torch.manual_seed(cfg.train.seed)
    G, D = nets.build(cfg)
    ref = Trainer(cfg, copy.deepcopy(G), copy.deepcopy(D), 0, 1)  # one process, the full batch
    G = convert_sync_batchnorm(G, "cpu")  # G's BatchNorm over the global batch, as gandist runs it
    micro = cfg.train.batch_size // world
    ds = build_config(ZeroSettings(stage=stage, micro_batch=micro, world_size=world))
    eng = make_engines(G, D, torch.optim.SGD(G.parameters(), lr=LR), torch.optim.SGD(D.parameters(), lr=LR), ds)
    zero = Trainer(cfg, eng.G.module, eng.D.module, rank, world, eng)
    d_reductions = Calls(eng.D, ["allreduce_gradients"])
    real = global_real(cfg)
    diffs = {}
    for name, step in (("d_step_1", lambda t: t.d_step(0, real)), ("g_step", lambda t: t.g_step(0)),
                       ("d_step_2", lambda t: t.d_step(1, real))):
        before = (weights(zero.G), weights(zero.D), weights(ref.G), weights(ref.D))
        calls = d_reductions.n
        step(zero)
        step(ref)
        diffs[name] = {"G": grad_diff(before[0], weights(zero.G), before[2], weights(ref.G)),
                       "D": grad_diff(before[1], weights(zero.D), before[3], weights(ref.D)),
                       "d_reductions": d_reductions.n - calls,
                       "d_grads_left": sum(p.grad is not None for p in zero.D.parameters())}
    rows = [None] * world
    dist.all_gather_object(rows, diffs)
    if rank == 0:
        out.write_text(json.dumps({"ranks": rows, "zero_class": type(eng.D.optimizer).__name__}))
    dist.barrier()
    dist.destroy_process_group()


# -- the test --------------------------------------------------------------------------------------

@pytest.mark.parametrize("stage", [1, 2])
def test_two_zero_engines_train_as_one_process_on_the_full_batch(tmp_path, stage):
    from tests.conftest import BIN, TINY, env

    out = tmp_path / "result.json"
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", __file__, str(stage), str(out),
           json.dumps(TINY)]
    p = subprocess.run(cmd, cwd=REPO, env=env(DS_ACCELERATOR="cpu"), capture_output=True, text=True, timeout=180)
    assert p.returncode == 0 and out.is_file(), f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    result = json.loads(out.read_text())
    assert result["zero_class"] == "DeepSpeedZeroOptimizer"
    for rank, diffs in enumerate(result["ranks"]):
        for name, d in diffs.items():
            assert d["G"] < TOL and d["D"] < TOL, f"rank {rank}, {name}: gradients differ from one process's: {d}"
        # D's engine reduced gradients once per D step, never in the G step, and left none behind
        assert [diffs[k]["d_reductions"] for k in ("d_step_1", "g_step", "d_step_2")] == [1, 0, 1], diffs
        assert all(diffs[k]["d_grads_left"] == 0 for k in diffs), diffs


if __name__ == "__main__":
    worker(int(sys.argv[1]), json.loads(sys.argv[3]), Path(sys.argv[2]))


def test_memory_bench_counts_what_the_ranks_hold(capfd):
    """python -m gandist.bench memory, through its module's functions, at 2 processes on tiny nets: DDP holds
    the formula's bytes; ZeRO-2 holds half of the optimizer state (Adam's moments + the fp32 master) per rank,
    and a bucket no larger than the network."""
    import argparse

    from gandist.bench import memory
    from tests.conftest import TINY

    parser = argparse.ArgumentParser()
    memory.add_parser(parser.add_subparsers())
    args = parser.parse_args(["memory", "--configs", str(REPO / "configs" / "quickstart.yaml"), "--widen", "1",
                              "--processes", "2", "--backends", "ddp,zero2", "--", "variant=wgan_gp",
                              *[o for o in TINY if o.startswith("model.")]])
    assert memory.run(args) == 0
    rows = json.loads(capfd.readouterr().out.strip().splitlines()[-1])["rows"]
    assert len(rows) == 4  # G and D, ddp and zero2
    for r in rows:
        P = r["parameters"]
        if r["backend"] == "ddp":
            assert (r["params"], r["grads"], r["buckets"]) == (4 * P, 4 * P, 4 * P)
            assert 8 * P <= r["optimizer"] <= 8 * P + 4 * 64  # + Adam's step counters
        else:
            assert 4 * P <= r["params"] <= 4 * P + 64  # the flat buffer, padded for 2 ranks
            assert abs(r["master"] - 4 * P / 2) <= 64 and abs(r["optimizer"] - 12 * P / 2) <= 256
            assert r["buckets"] == 4 * (-(-P // 1024) * 1024)


SINGLE = """
import torch, torch.distributed as dist
from gandist.backends.zero.engines import ZeroSettings, build_config, make_engines
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:{port}", rank=0, world_size=1)
G, D = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)
e = make_engines(G, D, torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters()),
                 build_config(ZeroSettings(stage=2, micro_batch=2)))
w = D.weight.detach().clone()
e.D.backward(e.D.module(torch.randn(2, 4)).sum())
e.D.step()
assert not torch.equal(w, e.D.module.weight)
dist.destroy_process_group()
print("stepped")
"""


def test_one_process_without_a_launcher_makes_engines():
    """python -m gandist.train starts one process with no launcher, hence no LOCAL_RANK, which DeepSpeed asserts."""
    from tests.conftest import env, free_port

    e = {k: v for k, v in env(DS_ACCELERATOR="cpu").items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE")}
    p = subprocess.run([sys.executable, "-c", SINGLE.format(port=free_port())], cwd=REPO, env=e, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0 and "stepped" in p.stdout, p.stderr[-4000:]
