"""The real datasets' on-disk formats, made by the tests themselves: CIFAR-10's python batch pickles,
MNIST's IDX files (gzipped or raw), a CelebA folder (JPEGs, list_attr_celeba.txt, optionally
list_eval_partition.txt).  Every test of the readers runs on these, so a fresh clone needs nothing
beside it; the real samples in ../shared/data (the `shared_data` fixture) are an extra check."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

# CelebA's 40 attributes, in the order of the official list_attr_celeba.txt (checked against the real
# file by test_prepare.py when ../shared/data is there).
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()
CELEBA_SIZE = (178, 218)  # width, height of the aligned faces
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# -- CIFAR-10 --------------------------------------------------------------------------------------

def write_cifar_batch(path: Path, data: np.ndarray, labels: list[int]):
    """Like the official python batches (protocol 2, byte-string keys) but without b"filenames"."""
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"fixture", b"labels": labels, b"data": data}, f, protocol=2)


def write_cifar_meta(path: Path, names=CIFAR10_CLASSES):
    """batches.meta as the official one: byte-string keys, b"label_names" a list of byte strings."""
    with open(path, "wb") as f:
        pickle.dump({b"num_cases_per_batch": 10000, b"label_names": [n.encode() for n in names],
                     b"num_vis": 3072}, f, protocol=2)


def make_cifar(root: Path, rows: dict[str, int] | None = None, meta: bool = False, seed: int = 0):
    """root/cifar-10-batches-py with the batches `rows` names ({file: row count}; default all five
    training batches of 6 rows and a test batch of 5), random pixels and labels, and optionally
    batches.meta.  Returns (the batches folder, {file: (data (N, 3072) uint8, labels)})."""
    rows = rows or {**{f"data_batch_{i}": 6 for i in range(1, 6)}, "test_batch": 5}
    d = Path(root) / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, n in rows.items():
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        write_cifar_batch(d / name, data, labels)
        arrays[name] = (data, labels)
    if meta:
        write_cifar_meta(d / "batches.meta")
    return d, arrays


# -- MNIST -----------------------------------------------------------------------------------------

def write_idx(path: Path, arr: np.ndarray, gz: bool):
    """An IDX file of unsigned bytes (magic 0x0000 08 ndim, big-endian dimensions, the data)."""
    raw = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    Path(path).write_bytes(gzip.compress(raw) if gz else raw)


def make_mnist(d: Path, splits: dict[str, int], gz: bool = True, seed: int = 0) -> dict:
    """IDX files under the official names in folder d, {'train' or 't10k': count} images of 28x28 with
    digit labels.  Returns {prefix: (images (N, 28, 28) uint8, labels (N,) uint8)}."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for prefix, n in splits.items():
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        ext = ".gz" if gz else ""
        write_idx(d / f"{prefix}-images-idx3-ubyte{ext}", images, gz)
        write_idx(d / f"{prefix}-labels-idx1-ubyte{ext}", labels, gz)
        out[prefix] = (images, labels)
    return out


# -- CelebA ----------------------------------------------------------------------------------------

def write_attr(root: Path, names, rows: dict[str, list[int]]):
    """list_attr_celeba.txt as the official one: the row count, the names, then 'NNNNNN.jpg' and the
    values right-aligned in runs of spaces."""
    lines = [str(len(rows)), " ".join(names) + " "]
    lines += [f"{k} " + " ".join(f"{v:2d}" for v in vals) for k, vals in rows.items()]
    (Path(root) / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")


def make_celeba(root: Path, n: int = 8, size: tuple[int, int] = (30, 36), partition: bool = True, seed: int = 0,
                names=("Bald", "Male", "Smiling")):
    """n JPEG faces img_align_celeba/NNNNNN.jpg of `size` (width, height), an attribute file in the
    official layout and, with `partition`, list_eval_partition.txt (the last three: two valid, one
    test).  Returns (the attribute names, {file name: values})."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    img_dir = root / "img_align_celeba"
    img_dir.mkdir(parents=True)
    names = list(names)
    rows = {}
    for i in range(1, n + 1):
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(img_dir / f"{i:06d}.jpg", quality=90)
        rows[f"{i:06d}.jpg"] = [int(v) for v in rng.choice([-1, 1], len(names))]
    write_attr(root, names, rows)
    if partition:
        (root / "list_eval_partition.txt").write_text(
            "".join(f"{k} {0 if i < n - 3 else (1 if i < n - 1 else 2)}\n" for i, k in enumerate(sorted(rows))))
    return names, rows
