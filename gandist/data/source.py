"""What the training loop reads: `batch(j)` gives this rank's slice of the global batch for D-step j
as (images in [-1, 1] on the device, condition vectors or None)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from gandist.distributed import generator, share


def to_images(u8: torch.Tensor, device) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float in [-1, 1], converted on the device (less to copy)."""
    return u8.to(device, non_blocking=True).to(torch.get_default_dtype()).div_(127.5).sub_(1.0)


def condition(labels: torch.Tensor | None, cfg) -> torch.Tensor | None:
    """Labels as the float vectors G and D are conditioned on: one-hot classes, or 0/1 attributes."""
    if cfg.model.conditioning == "none" or labels is None:
        return None
    if labels.dim() == 1:
        return F.one_hot(labels.long(), cfg.data.num_classes).to(torch.get_default_dtype())
    return (labels > 0).to(torch.get_default_dtype())


class SyntheticSource:
    """The embedded dataset in a fixed global order: D-step j takes positions [j*B, (j+1)*B) of an
    endless sequence of per-epoch permutations, and this rank takes its contiguous slice."""

    def __init__(self, cfg, rank: int, world: int, device):
        from gandist.data.synthetic import SyntheticDataset

        d = cfg.data
        self.cfg, self.device = cfg, device
        self.ds = SyntheticDataset(d.synthetic_size, d.resolution, d.channels, d.synthetic_seed)
        self.B = cfg.train.batch_size
        self.rows = share(self.B, rank, world)
        self._perm_epoch, self._perm = -1, None
        self.skipped = 0  # generated images are never corrupt; kept for the same interface as ShardSource

    def _order(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = generator(self.cfg.train.seed, epoch, "epoch")
            self._perm, self._perm_epoch = torch.randperm(len(self.ds), generator=g), epoch
        return self._perm

    def indices(self, j: int) -> list[int]:
        n = len(self.ds)
        out = []
        for pos in range(j * self.B + self.rows.start, j * self.B + self.rows.stop):
            out.append(int(self._order(pos // n)[pos % n]))
        return out

    def batch(self, j: int):
        items = [self.ds[i] for i in self.indices(j)]
        x = to_images(torch.stack([im for im, _ in items]), self.device)
        y = torch.tensor([lab for _, lab in items])
        return x, condition(y, self.cfg)

    def state_dict(self) -> dict:
        return {}  # the position is a function of the step

    def load_state_dict(self, state: dict):
        pass


def make_source(cfg, rank: int, world: int, device):
    if cfg.data.source == "synthetic":
        return SyntheticSource(cfg, rank, world, device)
    from gandist.data.stream import ShardSource

    return ShardSource(cfg, rank, world, device)
