"""The embedded dataset is a pure function of (seed, index): same bytes across calls and processes."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from gandist.data.synthetic import SyntheticDataset, render


def digest(seed, n, res, ch):
    h = hashlib.sha256()
    for i in range(n):
        img, label = render(seed, i, res, ch)
        h.update(img.tobytes())
        h.update(bytes([label]))
    return h.hexdigest()


@pytest.mark.parametrize("res, ch", [(32, 3), (64, 3), (32, 1), (64, 1)])
def test_shapes_labels_and_range(res, ch):
    ds = SyntheticDataset(40, res, ch, seed=3)
    img, label = ds[13]
    assert img.shape == (ch, res, res) and img.dtype.is_floating_point is False
    assert label == 3
    assert sorted({ds[i][1] for i in range(40)}) == list(range(10))
    assert int(img.max()) > int(img.min())  # not a blank image


def test_same_bytes_across_calls_and_seeds_differ():
    a = digest(0, 50, 32, 3)
    assert a == digest(0, 50, 32, 3)
    assert a != digest(1, 50, 32, 3)
    img_a, _ = render(0, 7, 32, 3)
    img_b, _ = render(0, 8, 32, 3)
    assert not np.array_equal(img_a, img_b)


def test_out_of_range_index_is_an_error():
    with pytest.raises(IndexError, match="out of range"):
        SyntheticDataset(10)[10]
