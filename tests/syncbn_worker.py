"""Run under torchrun: each rank pushes its slice of a fixed global batch through GlobalBatchNorm
and saves what it got, for test_sync_bn.py to compare with single-process BatchNorm."""
import sys

import torch
import torch.distributed as dist

from gandist.nets.layers import GlobalBatchNorm, all_reduce_sum


def global_inputs(dims: int):
    g = torch.Generator().manual_seed(0)
    shape = (8, 4, 5, 5) if dims == 4 else (8, 4)
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * 3 + 2
    c = torch.randn(*shape, generator=g, dtype=torch.float64)  # fixed loss weights
    return x, c


def main(out: str, dims: int):
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    x, c = global_inputs(dims)
    rows = slice(rank * 8 // world, (rank + 1) * 8 // world)
    bn = GlobalBatchNorm(4).double()
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(0.5, 2, 4))
        bn.bias.copy_(torch.linspace(-1, 1, 4))
    xl = x[rows].clone().requires_grad_(True)
    y = bn(xl)
    loss = (y * c[rows]).sum()  # summed over ranks this is the global loss
    (gx,) = torch.autograd.grad(loss, xl, create_graph=True)
    penalty = (gx * gx).sum()  # a penalty on the input gradient needs double backward
    (loss + penalty).backward()
    wg = all_reduce_sum(bn.weight.grad)  # what DDP's gradient all-reduce does (sum form)
    bg = all_reduce_sum(bn.bias.grad)
    y2 = bn(x[rows])  # a second step updates the running statistics again
    torch.save({"y": y.detach(), "gx": gx.detach(), "xgrad": xl.grad, "wgrad": wg, "bgrad": bg,
                "running_mean": bn.running_mean, "running_var": bn.running_var,
                "num_batches_tracked": bn.num_batches_tracked, "y2": y2.detach()}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
