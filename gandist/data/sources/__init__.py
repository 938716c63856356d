"""Readers of the real datasets' on-disk formats for `gandist-prepare`: each module's `open_source(Options)`
gives a Source whose splits make picklable work items (`Split.item`), turned into shard samples in writer
processes (`Split.process`), so that encoding runs in parallel and every bad file is named.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from gandist.data.errors import BadSample, PrepareError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".ppm", ".pgm", ".tif", ".tiff")


@dataclass
class Options:
    """What the prepare command line passes to a source's open_source()."""
    src: Path | None
    splits: tuple[str, ...] | None = None  # None: every split the source has
    skip_bad: bool = False
    resolution: int | None = None  # None: the source's usual size
    channels: int | None = None
    crop: int | None = None
    download: bool = False
    size: int = 20000  # synthetic only
    seed: int = 0  # synthetic only

    def wants(self, split: str) -> bool:
        return self.splits is None or split in self.splits

    def require_src(self, source: str, holding: str) -> Path:
        """--src, which every source but synthetic needs; `holding` says what the folder should hold."""
        if self.src is None:
            raise PrepareError(f"{source}: --src is required ({holding})")
        return self.src


@dataclass
class Split:
    name: str
    count: int
    item: Callable[[int], tuple]  # i -> the picklable work item of sample i (made lazily, in order or not)
    process: Callable  # module-level function: work item -> shard sample dict (runs in a writer process)


@dataclass
class Source:
    name: str
    resolution: int
    channels: int
    splits: dict[str, Split]
    inputs: list[Path]  # files read, for the up-to-date check
    root: Path
    classes: list[str] | None = None
    attributes: list[str] | None = None
    preprocessing: dict = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)  # split -> what was skipped while listing

    @property
    def label_key(self) -> str | None:
        return "attr" if self.attributes else ("cls" if self.classes else None)


class Problems:
    """Input problems found while listing: one error naming all of them, or with skip_bad counted skips."""

    def __init__(self, skip_bad: bool):
        self.skip_bad = skip_bad
        self.by_split: dict[str, list[str]] = {}

    def add(self, split: str, message: str):
        self.by_split.setdefault(split, []).append(message)

    def check(self, what: str):
        msgs = [m for ms in self.by_split.values() for m in ms]
        if msgs and not self.skip_bad:
            shown = "\n  ".join(msgs[:10])
            more = f"\n  ... and {len(msgs) - 10} more" if len(msgs) > 10 else ""
            raise PrepareError(f"{what}: {len(msgs)} problem(s) in the input:\n  {shown}{more}\n"
                               f"(use --skip-bad to skip these and count them in the index)")


def require_dir(path: Path, what: str) -> Path:
    if not path.exists():
        raise PrepareError(f"{what}: folder {path} does not exist")
    if not path.is_dir():
        raise PrepareError(f"{what}: {path} is not a folder")
    return path


def encode_png(arr: np.ndarray) -> bytes:
    """uint8 (H, W) or (H, W, 3) -> PNG bytes (lossless, deterministic)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def resize(arr: np.ndarray, resolution: int) -> np.ndarray:
    """Square uint8 image to resolution x resolution (Lanczos, antialiased); unchanged if already there."""
    if arr.shape[0] == resolution and arr.shape[1] == resolution:
        return arr
    im = Image.fromarray(arr).resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(im)


def load_image(path: Path, channels: int, crop: int | None, resolution: int) -> np.ndarray:
    """Decode, centre-crop to `crop` px (None: the largest square) and resize; an image already square at
    `resolution` keeps its exact pixels."""
    try:
        with Image.open(path) as im:
            im.load()
            im = im.convert("L" if channels == 1 else "RGB")
    except Exception as e:  # PIL raises many types for corrupt files
        raise BadSample(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None
    w, h = im.size
    side = min(w, h) if crop is None else crop
    if side > w or side > h:
        raise BadSample(f"{path}: image is {w}x{h}, smaller than the {side} px centre crop")
    left, top = (w - side) // 2, (h - side) // 2
    if (left, top, side) != (0, 0, w) or w != h:
        im = im.crop((left, top, left + side, top + side))
    return resize(np.asarray(im), resolution)


def sample(key: str, arr: np.ndarray, cls: int | None = None, attr: dict | None = None) -> dict:
    """A shard sample: key.png, and key.cls (decimal text) or key.attr.json ({name: 1 or -1})."""
    s = {"__key__": key, "png": encode_png(arr)}
    if cls is not None:
        s["cls"] = str(int(cls)).encode()
    if attr is not None:
        s["attr.json"] = json.dumps(attr, separators=(",", ":")).encode()
    return s


def image_file_sample(item) -> dict:
    """Split.process of the image-file sources: item is (key, path, crop, resolution, channels, sample()'s
    label keywords)."""
    key, path, crop, resolution, channels, labels = item
    return sample(key, load_image(Path(path), channels, crop, resolution), **labels)


def safe_key(text: str) -> str:
    """A WebDataset key: no dots (they separate the key from the extension) and no odd characters."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def _pooled(job) -> dict:
    """Split.process of a resplit source: job is (the original split's process, its work item)."""
    process, item = job
    return process(item)


def resplit(source: Source, sizes: dict[str, int], seed: int) -> Source:
    """Every split pooled in a seeded order and cut into splits of `sizes`: a held-out set from a dataset
    that comes as one split.  Keys keep naming the original split."""
    pool = [(sp, i) for sp in source.splits.values() for i in range(sp.count)]
    need = sum(sizes.values())
    if need > len(pool):
        read = ", ".join(f"{sp.name} ({sp.count})" for sp in source.splits.values()) or "none"
        raise PrepareError(f"--resplit asks for {need} samples in all; the split(s) read hold {len(pool)}: {read}")
    order = np.random.default_rng(seed).permutation(len(pool))
    splits, at = {}, 0
    for name, n in sizes.items():
        chosen = [pool[k] for k in order[at:at + n]]
        at += n
        splits[name] = Split(name, n, lambda i, c=chosen: (c[i][0].process, c[i][0].item(c[i][1])), _pooled)
    listed = [m for ms in source.skipped.values() for m in ms]
    return replace(source, splits=splits, skipped={next(iter(sizes)): listed} if listed else {})

