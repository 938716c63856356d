"""CelebA aligned faces: img_align_celeba/*.jpg + list_attr_celeba.txt (+ list_eval_partition.txt, else
everything is train).  Centre-cropped (--crop, default 108 px) and resized (default 64 px); each sample keeps
all 40 attributes.
"""
from __future__ import annotations

import os
from pathlib import Path

from gandist.data.errors import PrepareError
from gandist.data.sources import IMAGE_EXTS, Options, Problems, Source, Split, image_file_sample, require_dir

ATTR_FILE, PARTITION_FILE, IMAGES = "list_attr_celeba.txt", "list_eval_partition.txt", "img_align_celeba"
PARTITIONS = {"0": "train", "1": "valid", "2": "test"}
DEFAULT_CROP, DEFAULT_RESOLUTION = 108, 64


def find_root(src: Path) -> Path:
    require_dir(src, "celeba --src")
    for root in (src, src / "celeba"):
        if (root / IMAGES).is_dir() or (root / ATTR_FILE).is_file():
            return root
    raise PrepareError(f"celeba: {src} holds neither {IMAGES}/ nor {ATTR_FILE}")


def read_attributes(path: Path, problems: Problems) -> tuple[list[str], dict[str, list[int]]]:
    """(the attribute names, {image file name: values}); malformed rows go to `problems`."""
    if not path.is_file():
        raise PrepareError(f"celeba: attribute file {path} is missing")
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise PrepareError(f"{path}: expected a row count and a line of attribute names, found {len(lines)} line(s)")
    try:
        declared = int(lines[0].strip())
    except ValueError:
        raise PrepareError(f"{path}, line 1: expected the row count, found {lines[0][:60]!r}") from None
    names = lines[1].split()
    rows: dict[str, list[int]] = {}
    for n, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            problems.add("train", f"{path}, line {n}: {len(parts) - 1} values for {len(names)} attributes")
            continue
        try:
            values = [int(v) for v in parts[1:]]
        except ValueError:
            values = None
        if values is None or any(v not in (-1, 0, 1) for v in values):
            problems.add("train", f"{path}, line {n}: values must be 1, -1 (or 0), found {' '.join(parts[1:])[:60]!r}")
            continue
        if parts[0] in rows:
            problems.add("train", f"{path}, line {n}: a second row for {parts[0]}")
            continue
        rows[parts[0]] = values
    found = sum(1 for line in lines[2:] if line.strip())
    if declared != found:
        problems.add("train", f"{path}: line 1 declares {declared} rows, the file has {found}")
    return names, rows


def read_partition(path: Path, problems: Problems) -> dict[str, str] | None:
    if not path.is_file():
        return None
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in PARTITIONS:
            problems.add("train", f"{path}, line {n}: expected 'NNNNNN.jpg 0|1|2', found {line[:60]!r}")
            continue
        out[parts[0]] = PARTITIONS[parts[1]]
    return out


def open_source(opt: Options) -> Source:
    root = find_root(opt.require_src("celeba", "the folder holding img_align_celeba/ and list_attr_celeba.txt"))
    img_dir = require_dir(root / IMAGES, "celeba images")
    crop, resolution, channels = opt.crop or DEFAULT_CROP, opt.resolution or DEFAULT_RESOLUTION, opt.channels or 3
    problems = Problems(opt.skip_bad)
    names, rows = read_attributes(root / ATTR_FILE, problems)
    partition = read_partition(root / PARTITION_FILE, problems)
    files = sorted(e.name for e in os.scandir(img_dir) if e.is_file() and e.name.lower().endswith(IMAGE_EXTS))

    present = set(files)
    for name in rows:
        if name not in present:
            problems.add(_split_of(name, partition),
                         f"{root / ATTR_FILE}: row for {name}, but {img_dir / name} does not exist")
    chosen: dict[str, list[str]] = {}
    for name in files:
        if name not in rows:
            problems.add(_split_of(name, partition), f"{img_dir / name}: no row in {ATTR_FILE}")
        elif partition is not None and name not in partition:
            problems.add("train", f"{img_dir / name}: no line in {PARTITION_FILE}")
        else:
            chosen.setdefault(_split_of(name, partition), []).append(name)
    problems.check(f"celeba in {root}")

    splits = {}
    for split in ("train", "valid", "test"):
        if not opt.wants(split) or (split != "train" and partition is None):
            continue
        members = chosen.get(split, [])

        def item(i, members=members):
            name = members[i]
            attr = dict(zip(names, rows[name]))
            return Path(name).stem, str(img_dir / name), crop, resolution, channels, {"attr": attr}

        splits[split] = Split(split, len(members), item, image_file_sample)
    skipped = {s: m for s, m in problems.by_split.items() if opt.wants(s)}
    pre = {"center_crop": crop, "resize": "lanczos" if crop != resolution else None,
           "partition": PARTITION_FILE if partition is not None else "none: every image is train",
           "grayscale": channels == 1}
    inputs = [root / ATTR_FILE] + ([root / PARTITION_FILE] if partition is not None else [])
    inputs += [img_dir / f for f in files]
    return Source("celeba", resolution, channels, splits, inputs, root, attributes=names,
                  preprocessing=pre, skipped=skipped)


def _split_of(name: str, partition: dict | None) -> str:
    return "train" if partition is None else partition.get(name, "train")
