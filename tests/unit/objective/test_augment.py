"""DiffAugment (Zhao et al. 2020): the policy names, each augmentation's magnitudes, one draw per batch,
and gradients through it."""
import pytest
import torch

from gandist.objective.augment import int_shift, diff_augment, parse_policy

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
    shifts = int_shift(r, size)
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
    # draws.Draws returns the same numbers to every call with the same step and purpose, so
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
