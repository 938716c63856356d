"""`python -m gandist.bench data [--cifar10 DIR] [--celeba DIR] [--workers 1,2] [--seconds 8] [--shards-only]`

images/s of the shard reader in training mode (PNG and raw shards), next to torchvision's CIFAR10 and
ImageFolder on the same images with the same workers and batch, for --seconds per row after the first
batch.  Images per worker CPU-second is the figure that does not depend on what else the machine runs.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torchvision import datasets, transforms
from torchvision.transforms import InterpolationMode

from gandist.bench import machine
from gandist.data.prepare import prepare
from gandist.data.shards.decode import Spec
from gandist.data.shards.eval import eval_batches
from gandist.data.shards.io import expand_urls
from gandist.data.shards.streams import TrainStream, loader
from gandist.data.sources.cifar10 import find_root

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _cpu_seconds(pids) -> float | None:
    """User + system CPU time of processes (Linux /proc), or None where that cannot be read."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / tick
    except (OSError, ValueError, IndexError):
        return None


def _rate(loader, seconds: float) -> tuple[float, float | None]:
    """(images/s, images per worker CPU-second) of a DataLoader after its first batch, for about `seconds`."""
    it = iter(loader)
    next(it)
    pids = [w.pid for w in getattr(it, "_workers", [])] or [os.getpid()]
    n, t0, c0 = 0, time.perf_counter(), _cpu_seconds(pids)
    while time.perf_counter() - t0 < seconds:
        x = next(it)[0]
        n += len(x)
    wall, c1 = time.perf_counter() - t0, _cpu_seconds(pids)
    cpu = c1 - c0 if c0 is not None and c1 is not None and c1 > c0 else None
    del it
    return n / wall, (n / cpu if cpu else None)


def _shard_loader(urls: str, resolution: int, labels: str | None, workers: int, batch: int):
    ds = TrainStream(expand_urls(urls), Spec(resolution, 3, labels), seed=0, rank=0, batch=batch,
                     batches_per_epoch=10 ** 9, workers=workers, shuffle_buffer=1000)
    return loader(ds, workers, pin=False, prefetch=4)


def _map_loader(ds, workers: int, batch: int):
    sampler = torch.utils.data.RandomSampler(ds, replacement=True, num_samples=10 ** 9)
    return torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers,
                                       prefetch_factor=4 if workers else None)


def _torchvision_cifar(root: Path):
    """torchvision's CIFAR10 without its md5 check, which rejects partial copies such as the shared sample."""

    class CIFAR10(datasets.CIFAR10):
        train_list = [[f"data_batch_{i}", None] for i in range(1, 6) if (root / f"data_batch_{i}").is_file()]

        def _check_integrity(self):
            return True

        def _load_meta(self):
            self.classes = [str(i) for i in range(10)]

    return CIFAR10(str(root.parent), train=True, transform=transforms.PILToTensor())


def _image_folder(files: list[Path], tmp: Path, name: str, transform):
    d = tmp / name / "all"
    d.mkdir(parents=True)
    for f in files:
        (d / f.name).symlink_to(f.resolve())
    return datasets.ImageFolder(str(tmp / name), transform=transform)


def _shards(source: str, src: str, out: Path, encoding: str, **kw) -> tuple[str, int, int]:
    """Prepare the train split of `source` with `encoding`: (its urls, images, bytes on disk)."""
    idx = prepare(source, src, out, splits=["train"], progress=False, encoding=encoding, log=lambda *a: None, **kw)
    train = idx["splits"]["train"]
    return str(out / train["pattern"]), train["total"], sum(s["bytes"] for s in train["shards"])


CIFAR, CELEBA = "CIFAR-10 32 px", "CelebA 64 px"
# the shard rows of each data set, (PNG, raw): the last table compares them
SHARD_ROWS = {CIFAR: ("gandist shards (PNG, with labels)", "gandist shards (raw, with labels)"),
              CELEBA: ("gandist shards (PNG)", "gandist shards (raw)")}


def _num(x: float | None) -> str:
    return f"{x:,.0f}" if x else "n/a"


def _encodings_table(rows: list, sizes: dict) -> None:
    """raw vs PNG: images per worker CPU-second of each, per data set and worker count, and disk size."""
    per_cpu = {(data, reader, w): c for data, reader, w, _, _, c in rows}
    print()
    print("raw vs PNG shards (gandist-prepare --encoding), images per worker CPU-second:")
    print()
    print("| data | workers | PNG | raw | raw / PNG | shard bytes per image, PNG / raw |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for (data, reader, w), png in per_cpu.items():
        if data not in SHARD_ROWS or reader != SHARD_ROWS[data][0]:
            continue
        raw = per_cpu.get((data, SHARD_ROWS[data][1], w))
        ratio = f"{raw / png:.1f}x" if raw and png else "n/a"
        print(f"| {data} | {w} | {_num(png)} | {_num(raw)} | {ratio} | {_num(sizes[data][0])} / "
              f"{_num(sizes[data][1])} |")


def bench_data(args) -> int:
    workers = [int(w) for w in args.workers.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="gandist-bench-") as tmp:
        tmp = Path(tmp)
        print(f"preparing shards in {tmp} (PNG and raw) ...", flush=True)
        curls, cn, cbytes = _shards("cifar10", args.cifar10, tmp / "cifar10", "png", skip_bad=True)
        craw, _, crbytes = _shards("cifar10", args.cifar10, tmp / "cifar10-raw", "raw", skip_bad=True)
        celeba_files = sorted((Path(args.celeba) / "img_align_celeba").glob("*.jpg"))
        eurls, en, ebytes = _shards("celeba", args.celeba, tmp / "celeba", "png")
        eraw, _, erbytes = _shards("celeba", args.celeba, tmp / "celeba-raw", "raw")
        sizes = {CIFAR: (cbytes / cn, crbytes / cn), CELEBA: (ebytes / en, erbytes / en)}
        pngs = tmp / "celeba-png"
        pngs.mkdir()
        for x, _, keys in eval_batches(eurls, 0, 1, 256, 0, label_key=None, with_keys=True):
            for img, key in zip(x, keys):
                Image.fromarray(img.permute(1, 2, 0).numpy()).save(pngs / f"{key}.png")

        tv_cifar = _torchvision_cifar(find_root(Path(args.cifar10)))
        crop = transforms.Compose([transforms.CenterCrop(108), transforms.Resize(64, InterpolationMode.LANCZOS),
                                   transforms.PILToTensor()])
        tv_jpeg = _image_folder(celeba_files, tmp, "celeba-jpeg", crop)
        tv_png = _image_folder(sorted(pngs.glob("*.png")), tmp, "celeba-png-folder", transforms.PILToTensor())
        print(f"CIFAR-10: {cn} images; CelebA: {en} images; batch {args.batch}; {args.seconds:g} s per row",
              flush=True)

        b = args.batch
        # each raw row right after its PNG row: the two are compared, so they should see the same load
        cases = [
            (CIFAR, SHARD_ROWS[CIFAR][0], lambda w: _shard_loader(curls, 32, "cls", w, b)),
            (CIFAR, SHARD_ROWS[CIFAR][1], lambda w: _shard_loader(craw, 32, "cls", w, b)),
            (CIFAR, "torchvision CIFAR10 (in memory)", lambda w: _map_loader(tv_cifar, w, b)),
            (CELEBA, SHARD_ROWS[CELEBA][0], lambda w: _shard_loader(eurls, 64, None, w, b)),
            (CELEBA, SHARD_ROWS[CELEBA][1], lambda w: _shard_loader(eraw, 64, None, w, b)),
            (CELEBA, "ImageFolder, JPEG + crop 108 + resize", lambda w: _map_loader(tv_jpeg, w, b)),
            (CELEBA, "ImageFolder, 64 px PNG files", lambda w: _map_loader(tv_png, w, b)),
        ]
        if args.shards_only:
            cases = [c for c in cases if c[1] in SHARD_ROWS[c[0]]]
        torch.set_num_threads(1)
        for data, reader, make in cases:
            for w in workers:
                rate, per_cpu = _rate(make(w), args.seconds)
                rows.append((data, reader, w, rate, rate / max(w, 1), per_cpu))
                print(f"  {data:15s} {reader:40s} workers {w}: {rate:8.0f} images/s, {rate / max(w, 1):7.0f} per "
                      f"worker, {per_cpu or float('nan'):7.0f} per worker CPU-second", flush=True)

    print()
    print(f"Machine: {machine()}; load average during the run {os.getloadavg()[0]:.1f}")
    print()
    print("| data | reader | workers | images/s | images/s per worker | images per worker CPU-second |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for data, reader, w, rate, per, per_cpu in rows:
        print(f"| {data} | {reader} | {w} | {rate:,.0f} | {per:,.0f} | {f'{per_cpu:,.0f}' if per_cpu else 'n/a'} |")
    _encodings_table(rows, sizes)
    return 0


def add_parser(sub) -> None:
    d = sub.add_parser("data", help="shard reader vs torchvision datasets, images/s per worker",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--cifar10", default=str(SHARED / "cifar10-sample"), help="folder holding cifar-10-batches-py/")
    d.add_argument("--celeba", default=str(SHARED / "celeba-sample"), help="folder holding img_align_celeba/")
    d.add_argument("--workers", default="1,2", help="comma list of DataLoader worker counts")
    d.add_argument("--batch", type=int, default=64)
    d.add_argument("--seconds", type=float, default=8.0, help="measuring time per row")
    d.add_argument("--shards-only", action="store_true", help="only gandist's shard rows (PNG and raw), not "
                                                               "torchvision's")


def run(args) -> int:
    for path in (args.cifar10, args.celeba):
        if not Path(path).is_dir():
            print(f"gandist.bench: error: {path} does not exist (see --help)", file=sys.stderr)
            return 2
    return bench_data(args)
