"""What the training loop reads: `make_feed(...).batch(j)` gives this rank's slice of the global batch
for D-step j as (images in [-1, 1] on the device, condition vectors or None).  Both feeds also count
`skipped` (corrupt) samples and save their position with `state_dict()` / `load_state_dict()`."""
from __future__ import annotations

import numpy as np
import torch

from gandist.data.shards.feed import ShardFeed
from gandist.data.synthetic import SyntheticDataset
from gandist.data.tensors import condition, to_images
from gandist.distributed import seed_sequence, share


class SyntheticFeed:
    """The embedded dataset in a fixed global order: D-step j takes positions [j*B, (j+1)*B) of an
    endless sequence of per-epoch permutations, and this rank takes its contiguous slice."""

    def __init__(self, cfg, rank: int, world: int, device):
        d = cfg.data
        self.cfg, self.device = cfg, device
        self.ds = SyntheticDataset(d.synthetic_size, d.resolution, d.channels, d.synthetic_seed)
        self.B = cfg.train.batch_size
        self.rows = share(self.B, rank, world)
        self._perm_epoch, self._perm = -1, None
        self.skipped = 0  # generated images are never corrupt; kept for the same interface as ShardFeed
        self.description = (f"embedded shapes dataset: {len(self.ds)} images, {d.resolution} px, "
                            f"{d.channels} channel(s)")

    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            # numpy's: made and indexed on the host, no tensor to read back
            rng = np.random.Generator(np.random.PCG64(seed_sequence(self.cfg.train.seed, epoch, "epoch")))
            self._perm, self._perm_epoch = rng.permutation(len(self.ds)), epoch
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
        return x, condition(y, self.cfg, self.device)

    def state_dict(self) -> dict:
        return {}  # the position is a function of the step

    def load_state_dict(self, state: dict):
        pass


def make_feed(cfg, rank: int, world: int, device) -> SyntheticFeed | ShardFeed:
    """The feed data.source names: the embedded dataset, or shards."""
    if cfg.data.source == "synthetic":
        return SyntheticFeed(cfg, rank, world, device)
    return ShardFeed(cfg, rank, world, device)
