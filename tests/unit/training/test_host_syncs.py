"""A round reads nothing back from the device and runs no collective of gandist's own (issue: no host syncs
inside a step); the tallies reach the host at log and checkpoint steps only, in two all-reduces."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from gandist.training.tally import Verdict
from gandist import config, distributed
from gandist.backends.ddp import make_accelerator
from gandist.data.feed import make_feed
from gandist.draws import Draws
from gandist.training.reporting import Reporter
from gandist.training.step import Stepper, build_models
from tests.conftest import REPO, TINY

READS = ("item", "tolist", "__float__", "__int__", "__bool__")
COLLECTIVES = ("all_reduce", "all_gather", "all_gather_object", "broadcast", "broadcast_object_list",
               "reduce_scatter", "barrier")


@pytest.fixture
def counted(monkeypatch):
    """Every host read of a tensor and every collective call, by name.  A 1-rank gloo group that says it is
    distributed makes gandist's collectives run for real instead of being skipped."""
    calls = []
    for name in READS:
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _f=original, _n=name, **k: (calls.append(_n),
                                                                                            _f(self, *a, **k))[1])
    for name in COLLECTIVES:
        original = getattr(dist, name)
        monkeypatch.setattr(dist, name, lambda *a, _f=original, _n=name, **k: (calls.append(_n), _f(*a, **k))[1])
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:0", rank=0, world_size=1)
    try:
        yield calls
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("variant", ["dcgan", "wgan_gp", "cgan"])
def test_ten_rounds_read_nothing_back_and_the_log_step_reads_twice(tmp_path, counted, variant):
    # What gandist.train builds (fused Adam: the default), with everything that draws or keeps state on
    cfg = config.load(REPO / "configs" / "quickstart.yaml",
                      [*TINY, f"output.dir={tmp_path}", f"variant={variant}", "optim.ema=0.999",
                       "loss.diffaugment=color", "loss.instance_noise=0.1", "log.progress=true",
                       "augment.ada=true", "augment.p=0.5"])
    acc = make_accelerator(cfg)
    stepper = Stepper(cfg, acc, build_models(cfg, acc), make_feed(cfg, 0, 1, acc.device),
                      Draws(0, cfg.train.batch_size, 0, 1, acc.device))
    report = Reporter(cfg, acc, tmp_path, 0)
    stepper.round(0)  # the first round makes the optimizers' state and the tallies
    counted.clear()
    for step in range(1, 11):
        stepper.round(step)
        report.advance(step + 1)
    assert counted == []
    assert stepper.tally.sync() == Verdict()
    rate, _ = report.throughput.since_last(11)
    stats = stepper.log_values({"images_per_sec": rate})  # ADA's sign counts ride the second all-reduce
    assert counted == ["all_reduce", "tolist", "all_reduce", "tolist"]
    assert 0 <= stats["ada_p"] <= 1 and stats["ada_p"] != 0.5
    assert {"loss_d", "loss_g", "images_per_sec"} <= set(stats) and all(v == v for v in stats.values())
    report.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: torch.cuda.set_sync_debug_mode checks CUDA only")
def test_on_a_gpu_ten_rounds_make_no_synchronising_call(tmp_path):
    cfg = config.load(REPO / "configs" / "quickstart.yaml", [*TINY, f"output.dir={tmp_path}", "variant=wgan_gp",
                                                             "train.device=cuda", "augment.ada=true"])
    acc = make_accelerator(cfg)
    stepper = Stepper(cfg, acc, build_models(cfg, acc), make_feed(cfg, 0, 1, acc.device),
                      Draws(0, cfg.train.batch_size, 0, 1, acc.device, on_device=True))
    stepper.round(0)
    batches = [stepper.feed.batch(j) for j in range(1, 60)]  # the embedded dataset is drawn on the host: pre-made
    stepper.feed.batch = lambda j: batches[j - 1]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronising CUDA call raises
    try:
        for step in range(1, 11):
            stepper.round(step)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert stepper.tally.sync() == Verdict()
