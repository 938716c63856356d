"""draws.Draws: a rank computes only its own rows of a global draw, and they are the 1-process rows."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gandist.distributed import share
from gandist.draws import Draws, words_numpy, words_torch

CPU = torch.device("cpu")
BATCH, WORLD = 4096, 64  # the case: 64 rows a rank
SHAPES = [(128,), (3, 64, 64)]  # a z vector and an instance-noise image


@pytest.fixture(scope="module")
def one_process():
    """The 1-process draws, made once per (method, shape): the large one costs a few hundred MB."""
    made = {}

    def get(method, shape):
        if (method, shape) not in made:
            d = Draws(5, BATCH, 0, 1, CPU)
            made[method, shape] = getattr(d, method)(3, "noise_d_real", *shape)
            assert d.raw_drawn == BATCH * math.prod(shape)  # the whole global batch, one word a value
        return made[method, shape]

    return get


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("method", ["randn", "rand"])
@pytest.mark.parametrize("rank", [0, 17, 63])
def test_a_rank_draws_only_its_rows_and_they_are_the_one_process_rows(one_process, rank, method, shape):
    d = Draws(5, BATCH, rank, WORLD, CPU)
    x = getattr(d, method)(3, "noise_d_real", *shape)
    # raw_drawn adds up the sizes of the arrays the bit generator returned: 64 rows' worth, not 4096.
    assert d.raw_drawn == (BATCH // WORLD) * math.prod(shape)
    assert x.shape == (BATCH // WORLD, *shape)
    assert torch.equal(x, one_process(method, shape)[64 * rank:64 * rank + 64])


@pytest.mark.parametrize("method", ["randn", "rand"])
@pytest.mark.parametrize("world", [2, 3, 5])
def test_the_ranks_together_make_the_one_process_draw(method, world):
    # An odd row length and row starts that fall anywhere in the stream (not only at round offsets).
    full = getattr(Draws(1, 15, 0, 1, CPU), method)(2, "augment_d_fake", 7)
    parts = [getattr(Draws(1, 15, r, world, CPU), method)(2, "augment_d_fake", 7) for r in range(world)]
    assert [len(p) for p in parts] == [len(share(15, r, world)) for r in range(world)]
    assert torch.equal(torch.cat(parts), full)


def test_a_draw_is_a_function_of_step_and_purpose():
    d = Draws(0, 16, 0, 1, CPU)
    a = d.rand(4, "alpha", 3)
    assert torch.equal(a, d.rand(4, "alpha", 3))  # asked again: the same numbers (DiffAugment relies on it)
    assert torch.equal(a, Draws(0, 16, 0, 1, CPU).rand(4, "alpha", 3))
    for other in (d.rand(5, "alpha", 3), d.rand(4, "alpha2", 3), Draws(1, 16, 0, 1, CPU).rand(4, "alpha", 3)):
        assert not torch.isclose(a, other).any()


def test_randn_is_standard_normal():
    z = Draws(0, 1000, 0, 1, CPU).randn(0, "z_d", 1000).double().flatten()  # 10^6 numbers
    assert z.dtype == torch.float64 and z.isfinite().all()
    assert abs(z.mean().item()) < 5e-3  # the mean's std is 1e-3
    assert abs(z.std().item() - 1) < 4e-3  # the std's std is about 7e-4
    assert abs((z ** 3).mean().item()) < 0.02  # skewness 0, std about 2.4e-3
    assert abs((z ** 4).mean().item() - 3) < 0.05  # kurtosis 3, std about 1e-2
    assert abs((z.abs() > 1.959964).double().mean().item() - 0.05) < 2e-3  # the two-sided 5% tail, std 2.2e-4


def test_rand_is_uniform_in_0_1():
    u = Draws(0, 1000, 0, 1, CPU).rand(0, "alpha", 1000).flatten()
    assert u.dtype == torch.float32
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.double().mean().item() - 0.5) < 2e-3  # std about 2.9e-4
    assert abs(u.double().var().item() - 1 / 12) < 1e-3
    counts = torch.histc(u, bins=10, min=0, max=1) / u.numel()
    assert (counts - 0.1).abs().max() < 3e-3  # each bin's share has std 3e-4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_words_give_finite_normals_and_uniforms_below_1(monkeypatch, dtype):
    # The words a stream could give at either end: all bits set and none.
    monkeypatch.setattr(torch, "get_default_dtype", lambda: dtype)
    d = Draws(0, 2, 0, 1, CPU)
    monkeypatch.setattr(d, "_words", lambda step, purpose, shape: np.array([2 ** 64 - 1, 0], dtype=np.uint64))
    z = d.randn(0, "z", 1)
    assert z.dtype == dtype and z.isfinite().all() and z[0, 0] == -z[1, 0] > 8
    u = d.rand(0, "u", 1)
    assert u[1, 0] == 0 and 1 - 2 * torch.finfo(dtype).eps < u[0, 0] < 1


def test_float64_runs_draw_the_same_numbers_more_precisely():
    """train.fp64 sets the default dtype: the draws follow it, and float32 ones are their rounding."""
    d = Draws(0, 64, 0, 1, CPU)
    z32, u32 = d.randn(1, "z_g", 8), d.rand(1, "u", 8)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        z64, u64 = d.randn(1, "z_g", 8), d.rand(1, "u", 8)
    finally:
        torch.set_default_dtype(previous)
    assert z64.dtype == u64.dtype == torch.float64
    assert torch.equal(z64.float(), z32)
    assert ((u64 - u32.double()) >= 0).all() and ((u64 - u32.double()) < 2.0 ** -24).all()  # more bits, same top


def test_the_words_are_splitmix64s_published_outputs():
    # The first outputs of SplitMix64 seeded with 1234567 (Vigna's reference splitmix64.c): word n of a
    # stream with key K is SplitMix64's output n for seed K.
    expected = [6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431,
                16408922859458223821]
    assert words_numpy(1234567, 0, 5).tolist() == expected
    assert words_numpy(1234567, 3, 2).tolist() == expected[3:]  # word n computed directly: no stream to advance
    assert words_torch(1234567, 0, 5, CPU).numpy().view(np.uint64).tolist() == expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rank", [0, 2])
def test_draws_made_by_torch_on_the_device_equal_numpys(dtype, rank, monkeypatch):
    """perf.noise_on_device: the same integer arithmetic in torch's int64 gives the same bits (run here on
    the CPU device; the GPU check is in the device script)."""
    monkeypatch.setattr(torch, "get_default_dtype", lambda: dtype)
    host, dev = Draws(9, 12, rank, 3, CPU), Draws(9, 12, rank, 3, CPU, on_device=True)
    for method, shape in (("randn", (5,)), ("rand", (3, 4, 4)), ("randn", (3, 4, 4))):
        a, b = getattr(host, method)(7, "noise_d_real", *shape), getattr(dev, method)(7, "noise_d_real", *shape)
        assert a.dtype == b.dtype == dtype and torch.equal(a, b)
    assert host.raw_drawn == dev.raw_drawn == 4 * (5 + 48 + 48)
