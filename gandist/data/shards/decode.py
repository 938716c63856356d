"""A shard sample (dict of bytes) -> (uint8 (C, H, W) image, label), checked against Spec, else a BadSample.
Each sample names its own encoding (.png or .npy member), so shards of both may be read together."""
from __future__ import annotations

import importlib
import io
import json
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from gandist.data.errors import BadSample
from gandist.data.shards import raw


@dataclass
class Spec:
    """What a sample must look like: image size, and which labels to return."""
    resolution: int | None = None  # None: any (eval infers it from the index)
    channels: int | None = None
    labels: str | None = "cls"  # "cls", "attr" or None (no labels)
    attributes: tuple[str, ...] = ()
    num_classes: int = 0  # > 0: class ids must be below it
    class_key: str = "cls"  # the sample's key that holds the class id: "cls", or "cluster" (gandist-prepare --clusters)
    require_labels: bool = False  # a sample without its label is bad (training with conditioning)


def _pil_decode(data: bytes) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as im:
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGB")
        arr = np.asarray(im)
    return torch.from_numpy(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy())


_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def _plain_png(data: bytes) -> bool:
    """True for an intact 8-bit grey or RGB non-interlaced PNG; ValueError for a damaged one.  libpng in
    torchvision can crash the process on damaged data, so only PNGs that pass reach it."""
    if data[:8] != _PNG_SIG:
        raise ValueError("not a PNG (bad signature)")
    pos, n, plain = 8, len(data), False
    while True:
        if pos + 12 > n:
            raise ValueError("truncated (no IEND chunk)")
        (length,) = struct.unpack_from(">I", data, pos)
        end = pos + 12 + length
        if end > n:
            raise ValueError(f"truncated {data[pos + 4:pos + 8]!r} chunk")
        if zlib.crc32(data[pos + 4:end - 4]) != struct.unpack_from(">I", data, end - 4)[0]:
            raise ValueError(f"CRC error in the {data[pos + 4:pos + 8].decode('latin1')} chunk")
        kind = data[pos + 4:pos + 8]
        if kind == b"IHDR":
            _, _, depth, colour, _, _, interlace = struct.unpack_from(">IIBBBBB", data, pos + 8)
            plain = depth == 8 and colour in (0, 2) and interlace == 0
        elif kind == b"IEND":
            return plain
        pos = end


def _encode_probe() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 13).save(buf, format="PNG")
    return buf.getvalue()


def _png_decoder():
    """PNG bytes -> uint8 (C, H, W): torchvision's libpng op (2-3x faster than PIL on small images, called
    directly to skip a deprecation warning per call), else PIL."""
    try:
        # deferred: torchvision is heavy (2 s); importing torchvision.io registers torch.ops.image
        importlib.import_module("torchvision.io")
        op = torch.ops.image.decode_png
        probe = _encode_probe()
        if not torch.equal(op(torch.frombuffer(bytearray(probe), dtype=torch.uint8), 0, False), _pil_decode(probe)):
            return _pil_decode
    except Exception:
        return _pil_decode

    def fast(data: bytes) -> torch.Tensor:
        if _plain_png(data):
            return op(torch.frombuffer(bytearray(data), dtype=torch.uint8), 0, False)
        return _pil_decode(data)
    return fast


_decode_png = None


def decoder():
    """The PNG decoder, chosen once per process, before DataLoader workers fork so that they inherit it."""
    global _decode_png
    if _decode_png is None:
        _decode_png = _png_decoder()
    return _decode_png


def _class_label(sample: dict, spec: Spec) -> int:
    key = spec.class_key
    raw = sample.get(key)
    try:
        label = int(raw) if raw is not None else -1
    except ValueError:
        raise BadSample(f".{key} is not an integer: {raw[:20]!r}") from None
    if spec.require_labels and label < 0:
        raise BadSample(f"no .{key} class label (data.label_key={key})")
    if spec.require_labels and spec.num_classes and label >= spec.num_classes:
        raise BadSample(f"class {label} is not below data.num_classes={spec.num_classes}")
    return label


def _attributes(sample: dict, spec: Spec) -> list[int]:
    raw = sample.get("attr.json")
    if raw is None:
        if spec.require_labels:
            raise BadSample("no .attr.json attributes (data.label_key=attr)")
        return [0] * len(spec.attributes)
    try:
        attrs = json.loads(raw)
        return [int(attrs[a]) for a in spec.attributes]
    except KeyError as e:
        raise BadSample(f"attribute {e} is not in its .attr.json") from None
    except (ValueError, TypeError) as e:
        raise BadSample(f"unreadable .attr.json ({e})") from None


def _image(sample: dict, spec: Spec) -> torch.Tensor:
    """The sample's uint8 (C, H, W) image from its .npy (raw) or .png member."""
    arr = sample.get(raw.EXT)
    if arr is not None:
        known = spec.resolution is not None and spec.channels is not None
        try:
            return torch.from_numpy(raw.decode(arr, (spec.channels, spec.resolution, spec.resolution) if known
                                               else None))
        except Exception as e:
            raise BadSample(f"corrupt raw .{raw.EXT} image ({type(e).__name__}: {str(e)[:120]})") from None
    png = sample.get("png")
    if png is None:
        raise BadSample(f"no .png or .{raw.EXT} image member "
                        f"(found {sorted(k for k in sample if not k.startswith('__'))})")
    try:
        return decoder()(png)
    except Exception as e:
        raise BadSample(f"corrupt PNG ({type(e).__name__}: {str(e)[:120]})") from None


def decode(sample: dict, spec: Spec):
    """A sample -> (uint8 (C, H, W) tensor, label or None); BadSample says what is wrong (the caller says where)."""
    img = _image(sample, spec)
    c, h, w = img.shape
    if spec.channels is not None and c != spec.channels:
        raise BadSample(f"{c} channel(s), data.channels is {spec.channels}")
    if spec.resolution is not None and (h, w) != (spec.resolution, spec.resolution):
        raise BadSample(f"{w}x{h} px, data.resolution is {spec.resolution}")
    if spec.labels == "cls":
        return img, _class_label(sample, spec)
    if spec.labels == "attr":
        return img, _attributes(sample, spec)
    return img, None


def where_sample(sample: dict) -> str:
    return f"sample {sample.get('__key__')!r} of {sample.get('__url__')}"


def collate(items: list, spec: Spec):
    """[(image, label)] -> (uint8 (B, C, H, W), int64 class ids or int8 attributes, or None)."""
    images = torch.stack([im for im, _ in items])
    if spec.labels is None:
        return images, None
    dtype = torch.int64 if spec.labels == "cls" else torch.int8
    return images, torch.tensor([lab for _, lab in items], dtype=dtype)
