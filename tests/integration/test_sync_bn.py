"""The CPU/gloo synchronised BatchNorm equals single-process BatchNorm over the global batch:
output, input gradient (and its double backward), weight gradient, running statistics."""
from __future__ import annotations

import subprocess

import pytest
import torch

from gandist.nets.layers import GlobalBatchNorm, convert_sync_batchnorm
from tests.conftest import BIN, REPO, env
from tests.syncbn_worker import global_inputs


def reference(dims: int):
    x, c = global_inputs(dims)
    bn = (torch.nn.BatchNorm2d(4) if dims == 4 else torch.nn.BatchNorm1d(4)).double()
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(0.5, 2, 4))
        bn.bias.copy_(torch.linspace(-1, 1, 4))
    x = x.clone().requires_grad_(True)
    y = bn(x)
    loss = (y * c).sum()
    (gx,) = torch.autograd.grad(loss, x, create_graph=True)
    (loss + (gx * gx).sum()).backward()
    y2 = bn(x.detach())
    return {"y": y.detach(), "gx": gx.detach(), "xgrad": x.grad, "wgrad": bn.weight.grad, "bgrad": bn.bias.grad,
            "running_mean": bn.running_mean, "running_var": bn.running_var,
            "num_batches_tracked": bn.num_batches_tracked, "y2": y2.detach()}


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("dims", [4, 2])
def test_global_batchnorm_matches_batchnorm_over_the_global_batch(tmp_path, world, dims):
    subprocess.run([str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={world}",
                    str(REPO / "tests" / "syncbn_worker.py"), str(tmp_path), str(dims)],
                   cwd=REPO, env=env(PYTHONPATH=REPO), check=True, capture_output=True, timeout=300)
    ref = reference(dims)
    got = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    for key in ("y", "gx", "xgrad", "y2"):  # per-sample tensors: the ranks' slices, in order
        torch.testing.assert_close(torch.cat([g[key] for g in got]), ref[key], rtol=1e-10, atol=1e-10, msg=key)
    for key in ("wgrad", "bgrad", "running_mean", "running_var", "num_batches_tracked"):
        for g in got:
            torch.testing.assert_close(g[key], ref[key], rtol=1e-10, atol=1e-10, msg=key)


def test_global_batchnorm_is_plain_batchnorm_without_a_process_group():
    torch.manual_seed(0)
    bn, gbn = torch.nn.BatchNorm2d(3), GlobalBatchNorm(3)
    x = torch.randn(6, 3, 4, 4)
    torch.testing.assert_close(gbn(x), bn(x))
    torch.testing.assert_close(gbn.running_var, bn.running_var)


def test_convert_swaps_every_batchnorm_and_keeps_its_state():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                              torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4)))
    net[1].running_mean.fill_(0.5)
    cpu = convert_sync_batchnorm(net, "cpu")
    assert isinstance(cpu[1], GlobalBatchNorm) and isinstance(cpu[2][1], GlobalBatchNorm)
    assert torch.equal(cpu[1].running_mean, torch.full((4,), 0.5))
    cuda = convert_sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(4)), "cuda")
    assert isinstance(cuda[0], torch.nn.SyncBatchNorm)
