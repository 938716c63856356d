"""Synchronised BatchNorm as the networks get it, against single-process BatchNorm over the global batch:
output, input gradient and running statistics, each rank on its rows."""
from __future__ import annotations

import torch
import torch.nn as nn

from gandist.check.report import FAIL, PASS, Row, errors, listed
from gandist.distributed import share, world_size
from gandist.nets.layers import convert_sync_batchnorm

CHANNELS, ROWS_PER_RANK = 4, 3
TOLERANCE = 1e-4  # fp32 on the device against an fp64 reference: rounding is ~1e-6 here


def global_batch(world: int):
    """The same inputs and loss weights on every rank (a fixed seed), fp64 on the CPU."""
    g = torch.Generator().manual_seed(0)
    shape = (ROWS_PER_RANK * world, CHANNELS, 5, 5)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * 3 + 2,
            torch.randn(*shape, generator=g, dtype=torch.float64))


def affine(bn: nn.Module) -> nn.Module:
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(0.5, 2, CHANNELS))
        bn.bias.copy_(torch.linspace(-1, 1, CHANNELS))
    return bn


def compare(device, rank: int) -> float:
    """Collective: this rank's largest |difference| from the reference; raises above TOLERANCE."""
    world = world_size()
    x, c = global_batch(world)
    ref = affine(nn.BatchNorm2d(CHANNELS).double())
    xr = x.clone().requires_grad_(True)
    y_ref = ref(xr)
    (y_ref * c).sum().backward()
    rows = share(len(x), rank, world)
    rows = slice(rows.start, rows.stop)
    bn = convert_sync_batchnorm(nn.Sequential(affine(nn.BatchNorm2d(CHANNELS))), device.type)[0].to(device)
    xl = x[rows].float().to(device).requires_grad_(True)
    y = bn(xl)
    (y * c[rows].float().to(device)).sum().backward()  # summed over the ranks: the global loss
    pairs = {"output": (y, y_ref[rows]), "input gradient": (xl.grad, xr.grad[rows]),
             "running mean": (bn.running_mean, ref.running_mean), "running variance": (bn.running_var, ref.running_var)}
    worst, what = 0.0, ""
    for name, (got, expected) in pairs.items():
        d = (got.detach().double().cpu() - expected.detach()).abs().max().item()
        if d > worst:
            worst, what = d, name
    if not worst <= TOLERANCE:
        raise ValueError(f"synchronised BatchNorm's {what} differs from single-process BatchNorm over the global "
                         f"batch by {worst:.3g} (tolerance {TOLERANCE:g})")
    return worst


def row(found: list[dict], device_type: str, world: int) -> Row:
    kind = "torch's SyncBatchNorm" if device_type == "cuda" else "gandist's GlobalBatchNorm"
    bad = errors(found)
    if bad:
        return Row("batchnorm", "synchronised statistics", FAIL, listed(bad))
    worst = max(f["value"] for f in found)
    over = f"over {world} ranks" if world > 1 else "in 1 process (nothing to synchronise)"
    return Row("batchnorm", "synchronised statistics", PASS,
               f"{kind} {over}: output, input gradient and running statistics equal single-process BatchNorm "
               f"over the global batch (max |difference| {worst:.1e})")
