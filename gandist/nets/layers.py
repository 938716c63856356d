"""Building blocks shared by the networks: normalisation (with a synchronised BatchNorm that works on gloo),
spectral normalisation and initialisation."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn

from gandist.distributed import is_distributed
from gandist.utils.precision import wide


_BN_GROUP = None  # the process group synchronised BatchNorm reduces over; None: every process (dist.bn_scope)


def set_bn_group(group) -> None:
    global _BN_GROUP
    _BN_GROUP = group


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks, differentiable to any order: the gradient of a sum all-reduce is the sum
    all-reduce of the incoming gradients, expressed through this same Function."""

    @staticmethod
    def forward(ctx, t):
        t = t.clone()
        dist.all_reduce(t, group=_BN_GROUP)
        return t

    @staticmethod
    def backward(ctx, grad):
        return _AllReduceSum.apply(grad.contiguous())


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(t)


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm over the global batch for CPU/gloo, which torch's SyncBatchNorm refuses: per-channel sums go
    through an all-reduce differentiable to any order (the penalties need double backward), and the result
    equals nn.BatchNorm's over the concatenated batch."""

    def _check_input_dim(self, x):
        if x.dim() not in (2, 4):
            raise ValueError(f"GlobalBatchNorm expects 2D or 4D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not (self.training and is_distributed()):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        xf = wide(x)
        c = x.shape[1]
        # Two passes (mean, then squared deviations), as single-process BatchNorm effectively does:
        # E[x^2] - E[x]^2 in one pass loses digits to cancellation and breaks world-size invariance.
        count = torch.full((1,), float(x.numel() // c), device=x.device)
        s1 = all_reduce_sum(torch.cat([xf.sum(dims), count]))  # sums over ranks, with a gradient
        n = s1[-1]
        mean = s1[:c] / n
        shape = [1, c] + [1] * (x.dim() - 2)
        centred = xf - mean.view(shape)
        var = all_reduce_sum((centred * centred).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)), alpha=m)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device_type: str) -> nn.Module:
    """Swap every BatchNorm for its synchronised form: torch's on CUDA, ours elsewhere."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group=_BN_GROUP)
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        out.load_state_dict(module.state_dict())
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, device_type))
    return out


def batch_norm(kind: str, channels: int, dims: int = 2) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm1d(channels)
    if kind == "layer":
        # LayerNorm over (C, H, W) of each sample, as the WGAN-GP critic uses: no batch coupling.
        return nn.GroupNorm(1, channels) if dims == 2 else nn.LayerNorm(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown normalisation {kind!r}")


def maybe_sn(layer: nn.Module, on: bool) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(layer) if on else layer


def raw_weight(m: nn.Module) -> torch.Tensor:
    """The weight to initialise: under spectral norm the parametrised original (m.weight is recomputed)."""
    p = getattr(m, "parametrizations", None)
    return p.weight.original if p is not None and hasattr(p, "weight") else m.weight


def init_dcgan_weights(module: nn.Module):
    """N(0, 0.02) for convs and linears, N(1, 0.02) for norm scales, as in Radford et al."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(raw_weight(m), 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm, nn.LayerNorm)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
