"""The parts beyond the seed papers that variants compose: DiffAugment and G's weight average."""
import pytest
import torch
import torch.nn as nn

from gandist.augment import diff_augment, parse_policy
from gandist.augment import _shift
from gandist.ema import EMA

ALL = ("color", "translation", "cutout")


def const_rand(value, calls=None):
    def rand(n):
        if calls is not None:
            calls.append(n)
        return torch.full((3, n), value)
    return rand


def images(b=3, c=3, h=32, w=32):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_policy_parsing():
    assert parse_policy("color, translation,cutout") == ALL
    assert parse_policy("") == ()
    with pytest.raises(ValueError, match="unknown policy"):
        parse_policy("color,flip")


def test_middle_draws_leave_colour_and_position_alone():
    x = images()
    torch.testing.assert_close(diff_augment(x, ("color", "translation"), const_rand(0.5)), x)


def test_brightness_saturation_contrast_magnitudes():
    x = images()
    r = torch.tensor([[1.0, 0.5, 0.5]]).expand(3, 3)  # brightness at its maximum +0.5
    torch.testing.assert_close(diff_augment(x, ("color",), lambda n: r), x + 0.5)
    r = torch.tensor([[0.5, 0.0, 0.5]]).expand(3, 3)  # saturation 0: every channel becomes the grey mean
    out = diff_augment(x, ("color",), lambda n: r)
    torch.testing.assert_close(out, x.mean(1, keepdim=True).expand_as(x))
    r = torch.tensor([[0.5, 0.5, 0.0]]).expand(3, 3)  # contrast x0.5 about the image mean
    m = x.mean((1, 2, 3), keepdim=True)
    torch.testing.assert_close(diff_augment(x, ("color",), lambda n: r), (x - m) * 0.5 + m)


@pytest.mark.parametrize("size,s", [(28, 4), (32, 4), (64, 8)])
def test_translation_is_symmetric_up_to_an_eighth_of_the_size(size, s):
    r = torch.linspace(0, 1 - 1e-6, 1000)
    shifts = _shift(r, size)
    assert shifts.min().item() == -s and shifts.max().item() == s
    assert set(shifts.tolist()) == set(range(-s, s + 1))
    x = images(h=size, w=size)
    out = diff_augment(x, ("translation",), const_rand(0.0))  # shift -s in both axes: content moves up-left
    torch.testing.assert_close(out[..., :size - s, :size - s], x[..., s:, s:])
    assert (out[..., size - s:, :] == 0).all() and (out[..., :, size - s:] == 0).all()


def test_cutout_zeroes_a_square_half_the_size():
    x = images().abs() + 0.1  # no zeros of its own
    out = diff_augment(x, ("cutout",), const_rand(0.5))  # centre 16: rows and columns 8..23
    hole = out == 0
    assert hole[:, :, 8:24, 8:24].all() and hole.sum().item() == 3 * 3 * 16 * 16
    out = diff_augment(x, ("cutout",), const_rand(0.0))  # centred on the corner: a quarter of it is left
    assert (out == 0).sum().item() == 3 * 3 * 8 * 8


def test_one_draw_serves_every_augmentation():
    # distributed.Draws returns the same numbers to every call with the same step and purpose, so
    # separate calls per augmentation would move the cutout in lockstep with the translation.
    calls = []
    diff_augment(images(), ALL, const_rand(0.3, calls))
    assert calls == [7]


def test_augmentation_is_differentiable():
    x = images().requires_grad_(True)
    g = torch.Generator().manual_seed(1)
    out = diff_augment(x, ALL, lambda n: torch.rand(3, n, generator=g))
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


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
