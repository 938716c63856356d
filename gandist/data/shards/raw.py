"""The raw encoding (gandist-prepare --encoding raw): each image is stored as `<key>.npy`, its uint8
(C, H, W) array in NumPy's .npy format, so that the reader copies bytes instead of decoding a PNG.

.npy is chosen over headerless bytes because a sample then says its own dtype and shape (anyone can
np.load it, and a sample of another size is recognised as such rather than misread), and over
torch.save/pickle because loading it runs no code: the header is a literal parsed by NumPy, and
object arrays (the only pickled kind) are refused (allow_pickle=False).

Reading takes a fast path where the sample is exactly what the run expects: its header equals the one
this module writes for that (C, H, W) and the data is exactly C*H*W bytes; then the pixels are copied
out without parsing (2 us against 20 us for NumPy's reader).  Anything else goes through NumPy's
.npy reader (never np.load, which would also open .npz zips), and what is not a uint8 (C, H, W) array
of exactly the bytes it declares is a ValueError saying so.

Only NumPy here: the writer processes of gandist-prepare import this without torch.
"""
from __future__ import annotations

import functools
import io
import math

import numpy as np
from PIL import Image

EXT = "npy"  # the sample member: <key>.npy (WebDataset's usual extension for a NumPy array)


def encode(chw: np.ndarray) -> bytes:
    """uint8 (C, H, W) -> .npy bytes (version 1.0 header, C order: deterministic for the same array)."""
    if chw.dtype != np.uint8 or chw.ndim != 3:
        raise ValueError(f"raw samples are uint8 (C, H, W) arrays, not {chw.dtype} {chw.shape}")
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(chw), allow_pickle=False)
    return buf.getvalue()


def png_to_chw(png: bytes) -> np.ndarray:
    """A source's PNG sample -> uint8 (C, H, W), the pixels the shard reader decodes from that PNG
    (grey stays one channel; any other mode but RGB becomes RGB, as the reader's PIL fallback does)."""
    with Image.open(io.BytesIO(png)) as im:
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGB")
        arr = np.asarray(im)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def to_raw(sample: dict) -> dict:
    """A shard sample as the sources make it (<key>.png) -> the same sample with <key>.npy instead.
    The sources encode PNG themselves, so this decodes it again: lossless, so the pixels are the
    source's exactly, at the price of one PNG round trip per image while preparing."""
    out = {k: v for k, v in sample.items() if k != "png"}
    out[EXT] = encode(png_to_chw(sample["png"]))
    return out


@functools.lru_cache(maxsize=16)
def _header(shape: tuple[int, int, int]) -> bytes:
    """The exact header encode() writes before a uint8 array of `shape`."""
    return encode(np.zeros(shape, np.uint8))[:-math.prod(shape)]


def decode(data: bytes, shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """.npy bytes -> a writable uint8 (C, H, W) array.  `shape`: the (C, H, W) the run expects, for the
    fast path; a sample of another shape is still read (the caller's size check then names it).
    ValueError says what is wrong with a damaged or foreign sample."""
    if shape is not None:
        head = _header(shape)
        if len(data) == len(head) + math.prod(shape) and data.startswith(head):
            return np.frombuffer(bytearray(memoryview(data)[len(head):]), np.uint8).reshape(shape)
    f = io.BytesIO(data)
    arr = np.lib.format.read_array(f, allow_pickle=False)  # checks the magic; raises on a short body
    if arr.dtype != np.uint8 or arr.ndim != 3:
        raise ValueError(f"a {arr.dtype} array of shape {arr.shape}, not uint8 (C, H, W)")
    if f.tell() != len(data):
        raise ValueError(f"{len(data) - f.tell()} byte(s) after the array")
    return np.ascontiguousarray(arr)
