"""CIFAR-10, the official "python version" (cifar-10-batches-py/).  Only b"data" and b"labels" are read, so
re-packed or partial copies work, and with an unpickler that only builds numpy arrays, so no code can run.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from gandist.data.errors import PrepareError
from gandist.data.sources import Options, Problems, Source, Split, require_dir, resize, sample

FOLDER = "cifar-10-batches-py"
FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (a CIFAR batch holds only arrays)")


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            d = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as e:
        raise PrepareError(f"{path}: not a readable CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise PrepareError(f"{path}: expected a pickled dict, found {type(d).__name__}")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(data (N, 3072) uint8, labels (N,) int64) of one batch file; PrepareError naming the file."""
    d = _load_pickle(path)
    for k in ("data", "labels"):
        if k not in d:
            raise PrepareError(f"{path}: no {k!r} entry (found {sorted(d)})")
    data = np.asarray(d["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise PrepareError(f"{path}: 'data' should be an (N, 3072) uint8 array, found {data.shape} {data.dtype}")
    labels = np.asarray(d["labels"], dtype=np.int64)
    if labels.shape != (len(data),):
        raise PrepareError(f"{path}: {len(data)} images but {labels.size} labels")
    bad = np.flatnonzero((labels < 0) | (labels > 9))
    if len(bad):
        raise PrepareError(f"{path}: label {labels[bad[0]]} of image {bad[0]} is not a class id 0-9")
    return data, labels


def find_root(src: Path) -> Path:
    require_dir(src, "cifar10 --src")
    if (src / FOLDER).is_dir():
        return src / FOLDER
    if any((src / f).exists() for fs in FILES.values() for f in fs):
        return src
    raise PrepareError(f"cifar10: neither {src / FOLDER} nor CIFAR-10 batch files in {src} "
                       f"(use --download to fetch the dataset with torchvision)")


def _download(src: Path):
    if all((src / FOLDER / f).is_file() for fs in FILES.values() for f in fs):
        return
    import torchvision  # deferred: torchvision is heavy (2 s), only --download needs it

    try:
        src.mkdir(parents=True, exist_ok=True)
        torchvision.datasets.CIFAR10(root=str(src), train=True, download=True)
    except Exception as e:
        raise PrepareError(f"cifar10 --download: could not fetch CIFAR-10 into {src} "
                           f"({type(e).__name__}: {e}); download cifar-10-python.tar.gz by hand and "
                           f"extract it there") from None


def _classes(root: Path) -> list[str]:
    meta = root / "batches.meta"
    if meta.is_file():
        names = _load_pickle(meta).get("label_names")
        if isinstance(names, list) and len(names) == 10:
            return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return list(CLASSES)


def process(item) -> dict:
    key, row, label, resolution, channels = item
    arr = row.reshape(3, 32, 32).transpose(1, 2, 0)
    if channels == 1:
        arr = np.asarray(Image.fromarray(arr).convert("L"))
    if arr.shape[0] != resolution:
        arr = resize(arr, resolution)
    return sample(key, arr, cls=int(label))


def open_source(opt: Options) -> Source:
    opt.require_src("cifar10", "the folder holding cifar-10-batches-py/")
    if opt.download:
        _download(opt.src)
    root = find_root(opt.src)
    resolution, channels = opt.resolution or 32, opt.channels or 3
    problems = Problems(opt.skip_bad)
    splits, inputs = {}, []
    for name, files in FILES.items():
        if not opt.wants(name):
            continue
        batches = []
        for f in files:
            p = root / f
            if not p.is_file():
                problems.add(name, f"{p}: missing (the {name} split is {', '.join(files)})")
                continue
            try:
                batches.append((f, *read_batch(p)))
                inputs.append(p)
            except PrepareError as e:
                problems.add(name, str(e))

        starts = np.cumsum([0] + [len(d) for _, d, _ in batches])

        def item(i, batches=batches, starts=starts):
            b = int(np.searchsorted(starts, i, side="right")) - 1
            f, data, labels = batches[b]
            row = i - int(starts[b])
            return f"{f}-{row:05d}", data[row], labels[row], resolution, channels

        splits[name] = Split(name, int(starts[-1]), item, process)
    problems.check(f"cifar10 in {root}")
    pre = {"layout": "CHW rows of the python batches -> HWC", "resize": None if resolution == 32 else "lanczos",
           "grayscale": channels == 1}
    return Source("cifar10", resolution, channels, splits, inputs, root, classes=_classes(root),
                  preprocessing=pre, skipped=problems.by_split)

