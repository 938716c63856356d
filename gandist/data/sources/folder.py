"""An image folder: class subfolders in sorted order (as torchvision's ImageFolder), or a flat unlabelled
folder; centre-cropped and resized like the other image sources."""
from __future__ import annotations

import os
from pathlib import Path

from gandist.data.errors import PrepareError
from gandist.data.sources import IMAGE_EXTS, Options, Problems, Source, Split, image_file_sample, require_dir, safe_key

DEFAULT_RESOLUTION = 64


def _images_under(d: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(d, followlinks=True):
        dirnames.sort()
        out += [Path(dirpath) / f for f in sorted(filenames) if f.lower().endswith(IMAGE_EXTS)]
    return out


def open_source(opt: Options) -> Source:
    root = require_dir(opt.require_src("folder", "an image folder, with or without class subfolders"), "folder --src")
    crop, resolution, channels = opt.crop, opt.resolution or DEFAULT_RESOLUTION, opt.channels or 3
    problems = Problems(opt.skip_bad)
    top = sorted(os.scandir(root), key=lambda e: e.name)
    top_images = [Path(e.path) for e in top if e.is_file() and e.name.lower().endswith(IMAGE_EXTS)]
    by_class = {e.name: _images_under(Path(e.path)) for e in top if e.is_dir() and not e.name.startswith(".")}
    by_class = {c: imgs for c, imgs in by_class.items() if imgs}
    if by_class:
        classes = sorted(by_class)
        for p in top_images:
            problems.add("train", f"{p}: an image beside the class folders {classes[:5]}... belongs to no class")
        entries = [(p, k) for k, c in enumerate(classes) for p in by_class[c]]
    else:
        classes = None
        entries = [(p, None) for p in top_images]
    if not entries:
        raise PrepareError(f"folder: no images ({', '.join(IMAGE_EXTS)}) in {root} or its subfolders")
    problems.check(f"folder {root}")

    def item(i):
        p, cls = entries[i]
        rel = p.relative_to(root).with_suffix("").as_posix()
        return f"{i:07d}_{safe_key(rel)[-80:]}", str(p), crop, resolution, channels, {"cls": cls}

    pre = {"center_crop": crop or "largest centred square", "resize": "lanczos (unless already that size)",
           "grayscale": channels == 1, "layout": "class subfolders" if classes else "flat, no labels"}
    splits = {"train": Split("train", len(entries), item, image_file_sample)} if opt.wants("train") else {}
    return Source("folder", resolution, channels, splits, [p for p, _ in entries], root,
                  classes=classes, preprocessing=pre, skipped=problems.by_split)
