"""The step's random numbers, world-size invariant by construction: `Draws`.

Every draw of a step (noise z, the penalty's alpha, augmentation, instance noise) is named by (step,
purpose) and is a pure function of (seed, step, purpose) and the global row index.  A rank computes only
its own rows, so one process and N processes see the same numbers and a rank's work grows with its own
batch, not the world's.

The generator is SplitMix64 (Steele, Lea and Flood 2014) used as what it is, a counter-based generator:
word n of a stream with key K is mix(K + (n + 1) * GAMMA), a function of n alone.  So a rank's first
word is computed directly (no stream to advance) and every word is made by the same elementwise integer
arithmetic on any device: numpy's uint64 on the CPU (its loops are fast there), or torch's int64 on the
training device (train.noise_on_device: no host-to-device copy, no host work).  Both give the same bits;
torch's int64 wraps on overflow as uint64 does, and its `>>` is arithmetic, so a logical shift is
`>>` then a mask.  The key of a stream is 64 well-mixed bits of numpy's SeedSequence of (seed, step,
purpose); two streams of n words overlap only if their keys lie within n * GAMMA of each other, about
n / 2^64 for random keys.

A value costs one word: a uniform is its top bits; a standard normal is the inverse normal CDF of such a
uniform (torch.special.ndtri, elementwise: a value doesn't depend on where it sits in the tensor).
torch's and numpy's own Gaussians use a varying number of words per value, which would make a row's
first word uncomputable.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from gandist.distributed import seed_sequence, share

GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment: 2^64 / the golden ratio, odd
MIX1, MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB  # its finaliser's multipliers
_ONE = np.uint64(0x3FF0000000000000)  # the bits of float64 1.0: OR-ed with 52 random mantissa bits, a float in [1, 2)


def stream_key(seed: int, step: int, purpose: str) -> int:
    """The 64-bit key of the (seed, step, purpose) stream: well mixed, so nearby steps are unrelated."""
    return int(seed_sequence(seed, step, purpose).generate_state(1, np.uint64)[0])


def words_numpy(key: int, first: int, n: int) -> np.ndarray:
    """Words first .. first+n-1 of stream `key`, as uint64, computed by numpy (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = np.arange(first + 1, first + n + 1, dtype=np.uint64)
        z *= np.uint64(GAMMA)
        z += np.uint64(key)
        z ^= z >> np.uint64(30)
        z *= np.uint64(MIX1)
        z ^= z >> np.uint64(27)
        z *= np.uint64(MIX2)
        z ^= z >> np.uint64(31)
    return z


def _signed(c: int) -> int:
    """c's 64 bits as a signed int64 constant (torch has no uint64 arithmetic)."""
    return c - (1 << 64) if c >= 1 << 63 else c


def _lsr(z: torch.Tensor, n: int) -> torch.Tensor:
    """Logical right shift of int64 words (torch's >> copies the sign bit)."""
    return (z >> n) & ((1 << (64 - n)) - 1)


def words_torch(key: int, first: int, n: int, device) -> torch.Tensor:
    """The same words as words_numpy, as int64 bit patterns, computed by torch on `device`."""
    z = torch.arange(first + 1, first + n + 1, dtype=torch.int64, device=device)
    z = z * _signed(GAMMA) + _signed(key)
    z = (z ^ _lsr(z, 30)) * _signed(MIX1)
    z = (z ^ _lsr(z, 27)) * _signed(MIX2)
    return z ^ _lsr(z, 31)


class Draws:
    """This rank's rows of each global draw, computed alone.

    Value v of global row r of a draw with k values a row is word r*k + v of the draw's stream.  With
    `on_device`, the words are made on `device` by torch; otherwise on the CPU by numpy and copied there.
    `raw_drawn` counts the words made so far: the work this rank has done."""

    def __init__(self, seed: int, global_batch: int, rank: int, world: int, device: torch.device,
                 on_device: bool = False):
        self.seed, self.global_batch, self.device = seed, global_batch, torch.device(device)
        rows = share(global_batch, rank, world)
        self.rows = slice(rows.start, rows.stop)
        self.on_device = on_device
        self.raw_drawn = 0

    def randn(self, step: int, purpose: str, *shape: int) -> torch.Tensor:
        """This rank's (rows, *shape) standard normal numbers of the draw (step, purpose), default dtype."""
        # (k + 1/2) / 2^52 for the top 52 bits k of a word: exact, strictly inside (0, 1) and symmetric
        # about 1/2, so ndtri never sees 0 or 1 and z(k) = -z(2^52 - 1 - k).
        u = self._uniform(step, purpose, shape, 52, half=True)
        return torch.special.ndtri(u, out=u).to(torch.get_default_dtype())

    def rand(self, step: int, purpose: str, *shape: int) -> torch.Tensor:
        """This rank's (rows, *shape) uniform numbers in [0, 1) of the draw (step, purpose), default dtype."""
        dtype = torch.get_default_dtype()
        # The top b bits k as k / 2^b, with b the dtype's precision: exact in the dtype, never rounds up to 1.
        bits = min(52, 1 - int(math.log2(torch.finfo(dtype).eps)))
        return self._uniform(step, purpose, shape, bits, half=False).to(dtype)

    def _uniform(self, step: int, purpose: str, shape: tuple, bits: int, half: bool) -> torch.Tensor:
        """float64 (rows, *shape) on self.device: (k + 1/2 if half else k) / 2^bits for the top `bits` bits k."""
        words = self._words(step, purpose, shape)
        if isinstance(words, torch.Tensor):
            u = _lsr(words, 64 - bits).to(torch.float64)  # exact: bits <= 52 < 53
            u = (u + 0.5) * 2.0 ** -bits if half else u * 2.0 ** -bits
        else:
            # In place, in numpy: the top bits as the mantissa of a float in [1, 2), minus 1 (or minus
            # 1 - 2^-53 for the half offset); numpy's elementwise loops use no thread pool (torch's stall
            # when the cores are busy).
            words >>= np.uint64(64 - bits)
            words <<= np.uint64(52 - bits)
            words |= _ONE
            u = words.view(np.float64)
            u -= (1 - 2.0 ** -53) if half else 1.0
            u = torch.from_numpy(u).to(self.device)
        return u.view(-1, *shape)

    def _words(self, step: int, purpose: str, shape: tuple[int, ...]):
        """Words [first row * k, end row * k) of the (step, purpose) stream: a numpy uint64 array, or an
        int64 tensor on the device with on_device."""
        k = math.prod(shape)
        first, n = self.rows.start * k, (self.rows.stop - self.rows.start) * k
        key = stream_key(self.seed, step, purpose)
        self.raw_drawn += n
        if self.on_device:
            return words_torch(key, first, n, self.device)
        return words_numpy(key, first, n)
