"""MNIST from the raw IDX files, gzipped or not: {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz],
looked for in --src, --src/raw and --src/MNIST/raw (torchvision's layout)."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from gandist.data.errors import PrepareError
from gandist.data.sources import Options, Problems, Source, Split, require_dir, resize, sample

STEMS = {"train": ("train-images", "train-labels"), "test": ("t10k-images", "t10k-labels")}
CLASSES = [str(i) for i in range(10)]


def find_file(dirs: list[Path], stem: str, kind: str) -> Path | None:
    """stem 'train-images', kind 'idx3': train-images-idx3-ubyte, also .gz and the dotted mirror names."""
    for d in dirs:
        for name in (f"{stem}-{kind}-ubyte", f"{stem}.{kind}-ubyte"):
            for p in (d / name, d / (name + ".gz")):
                if p.is_file():
                    return p
    return None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with `ndim` dimensions; PrepareError naming the file if it isn't one."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise PrepareError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
    if len(raw) < 4 + 4 * ndim:
        raise PrepareError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    zero, dtype, nd = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08 or nd != ndim:
        raise PrepareError(f"{path}: not an IDX file of unsigned bytes with {ndim} dimension(s) "
                           f"(magic {raw[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = raw[4 + 4 * ndim:]
    need = int(np.prod(dims))
    if len(body) != need:
        raise PrepareError(f"{path}: header says {'x'.join(map(str, dims))} = {need} bytes of data, "
                           f"the file holds {len(body)} ({'truncated' if len(body) < need else 'trailing bytes'})")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _download(src: Path):
    import torchvision  # deferred: torchvision is heavy (2 s), only --download needs it

    try:
        src.mkdir(parents=True, exist_ok=True)
        torchvision.datasets.MNIST(root=str(src), train=True, download=True)
        torchvision.datasets.MNIST(root=str(src), train=False, download=True)
    except Exception as e:
        raise PrepareError(f"mnist --download: could not fetch MNIST into {src} ({type(e).__name__}: {e})") from None


def process(item) -> dict:
    key, img, label, resolution, channels = item
    if img.shape[0] != resolution:
        img = resize(img, resolution)
    if channels == 3:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return sample(key, img, cls=int(label))


def open_source(opt: Options) -> Source:
    opt.require_src("mnist", "the folder holding the IDX files")
    if opt.download:
        _download(opt.src)
    require_dir(opt.src, "mnist --src")
    dirs = [opt.src, opt.src / "raw", opt.src / "MNIST" / "raw"]
    resolution, channels = opt.resolution or 28, opt.channels or 1
    problems = Problems(opt.skip_bad)
    splits, inputs = {}, []
    for name, (img_stem, lab_stem) in STEMS.items():
        if not opt.wants(name):
            continue
        pi, pl = find_file(dirs, img_stem, "idx3"), find_file(dirs, lab_stem, "idx1")
        images = labels = None
        for stem, kind, p in ((img_stem, "idx3", pi), (lab_stem, "idx1", pl)):
            if p is None:
                problems.add(name, f"{opt.src}: no {stem}-{kind}-ubyte[.gz] here, in raw/ or in MNIST/raw/")
        if pi and pl:
            try:
                images, labels = read_idx(pi, 3), read_idx(pl, 1)
                if len(images) != len(labels):
                    raise PrepareError(f"{pi} holds {len(images)} images but {pl} {len(labels)} labels")
                if labels.max(initial=0) > 9:
                    raise PrepareError(f"{pl}: label {labels.max()} is not a digit 0-9")
                inputs += [pi, pl]
            except PrepareError as e:
                problems.add(name, str(e))
                images = labels = None

        def item(i, images=images, labels=labels, name=name):
            return f"{name}-{i:05d}", images[i], labels[i], resolution, channels

        splits[name] = Split(name, 0 if images is None else len(images), item, process)
    problems.check(f"mnist in {opt.src}")
    pre = {"resize": None if resolution == 28 else "lanczos", "rgb": channels == 3}
    return Source("mnist", resolution, channels, splits, inputs, opt.src, classes=list(CLASSES),
                  preprocessing=pre, skipped=problems.by_split)
