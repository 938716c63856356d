"""G's exponential moving average: the weight average, buffers, state dict, and BatchNorm statistics
recomputed for the averaged weights."""
import torch
import torch.nn as nn

from gandist.training.ema import EMA


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.bn = nn.BatchNorm1d(2)

    def forward(self, z, y=None):
        return self.bn(self.lin(z))


def test_ema_averages_weights_and_follows_buffers():
    G = Tiny()
    ema = EMA(G, decay=0.9, start=2)
    assert not ema.model.training and not any(p.requires_grad for p in ema.model.parameters())
    with torch.no_grad():
        G.lin.weight.add_(1.0)
        G.bn.running_mean.fill_(3.0)
    ema.update(G, step=0)  # before ema_start: a plain copy
    torch.testing.assert_close(ema.model.lin.weight, G.lin.weight)
    before = ema.model.lin.weight.clone()
    with torch.no_grad():
        G.lin.weight.add_(1.0)
    ema.update(G, step=2)
    torch.testing.assert_close(ema.model.lin.weight, 0.9 * before + 0.1 * G.lin.weight)
    torch.testing.assert_close(ema.model.bn.running_mean, G.bn.running_mean)
    fresh = EMA(Tiny(), decay=0.9)
    fresh.load_state_dict(ema.state_dict())
    torch.testing.assert_close(fresh.model.lin.weight, ema.model.lin.weight)


def test_ema_batchnorm_statistics_are_recomputed_for_the_averaged_weights():
    G = Tiny()
    ema = EMA(G, decay=0.5)
    with torch.no_grad():
        G.lin.weight.mul_(3.0)
        G.bn.running_var.fill_(9.0)  # statistics of G's own weights
    ema.update(G, step=0)
    z = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    model = ema.calibrate(z, chunk=200)
    h = ema.model.lin(z)
    torch.testing.assert_close(model.bn.running_mean, h.mean(0))
    torch.testing.assert_close(model.bn.running_var, h.var(0))  # unbiased, as BatchNorm keeps it
    assert not model.training and model.bn.momentum == 0.1 and ema.calibrated
    # chunks: the average of the chunks' statistics
    ema.calibrate(z, chunk=100)
    torch.testing.assert_close(model.bn.running_mean, h.mean(0))
    torch.testing.assert_close(model.bn.running_var, (h[:100].var(0) + h[100:].var(0)) / 2)
    # the averaged weights are untouched
    torch.testing.assert_close(model.lin.weight, 0.5 * (G.lin.weight / 3.0) + 0.5 * G.lin.weight)
    ema.update(G, step=1)
    assert not ema.calibrated  # new weights: the statistics are stale until the next calibrate
