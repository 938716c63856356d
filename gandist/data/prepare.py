"""gandist-prepare: write a dataset as WebDataset tar shards plus an index.json.

    gandist-prepare cifar10 --src data/cifar10 --out shards/cifar10 [--download]
    gandist-prepare celeba --src data/celeba --out shards/celeba64 [--crop 140] [--resolution 64]
    gandist-prepare mnist --src data/mnist --out shards/mnist
    gandist-prepare folder --src data/flowers --out shards/flowers64 [--resolution 64]
    gandist-prepare synthetic --out shards/synthetic --size 20000
    gandist-prepare cifar10 --src data/cifar10 --out shards/cifar10-raw --encoding raw

Shards are OUT/<split>-NNNNNN.tar of <key>.png (lossless) or, with --encoding raw, <key>.npy (the same
pixels, copied rather than decoded, in larger shards), with <key>.cls or <key>.attr.json; OUT/index.json
describes them.  The train split is written in a seeded random order.  Re-running is idempotent: an
up-to-date split is left alone, any other is rewritten byte-identically.  Bad input is an error naming the
file, or with --skip-bad is skipped and counted.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import math
import multiprocessing
import os
import re
import signal
import sys
from pathlib import Path

import numpy as np
import webdataset as wds

from gandist.cli import run_command
from gandist.data.clusters import cluster_labels
from gandist.data.errors import BadSample, PrepareError
from gandist.data.shards import raw
from gandist.data.shards.index import ENCODINGS, FORMAT, INDEX
from gandist.data.sources import Options, Source, Split, resplit
from gandist.utils.console import progress_bar
from gandist.utils.files import write_json_atomic

SOURCES = ("cifar10", "celeba", "mnist", "folder", "synthetic")
_ENCODED = {"png": "encoding png (lossless PNG images)",
            "raw": "encoding raw (uint8 (C, H, W) arrays as .npy, read without decoding)"}
SHARD_RE = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-\d{6}\.tar$")
_MTIME = 946684800  # 2000-01-01: fixed tar member times make re-runs byte-identical


def open_source(name: str, opt: Options) -> Source:
    if name not in SOURCES:
        raise PrepareError(f"unknown source {name!r}; one of {', '.join(SOURCES)}")
    return importlib.import_module(f"gandist.data.sources.{name}").open_source(opt)


def fingerprint(paths: list[Path]) -> str:
    """Cheap identity of the input files: names, sizes and modification times."""
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(f"{p}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _run(job):
    """In a writer process: (process, item, encoding, cluster or None) -> (True, sample) or (False, what was
    wrong)."""
    process, item, encoding, cluster = job
    try:
        sample = process(item)
    except BadSample as e:
        return False, str(e)
    if cluster is not None:
        sample["cluster"] = str(cluster).encode()
    return True, raw.to_raw(sample) if encoding == "raw" else sample


def _params(entry: dict | None) -> dict | None:
    """An index entry's options; an entry without an encoding is PNG, so it stays up to date for png."""
    params = (entry or {}).get("params")
    return {"encoding": "png", **params} if isinstance(params, dict) else params


def _shard_name(split: str, k: int) -> str:
    return f"{split}-{k:06d}.tar"


def _pattern(split: str, n: int) -> str:
    return f"{split}-{{{0:06d}..{n - 1:06d}}}.tar" if n else ""


def _up_to_date(out: Path, entry: dict | None, params: dict, fp: str) -> bool:
    if not entry or _params(entry) != params or entry.get("fingerprint") != fp:
        return False
    for s in entry["shards"]:
        p = out / s["name"]
        if not p.is_file() or p.stat().st_size != s["bytes"]:
            return False
    return True


class _Progress:
    """gandist's progress bar, one task per split written, or nothing (--no-progress, nothing to do)."""

    def __init__(self, enabled: bool, total: int):
        self.bar = progress_bar() if enabled and total else None
        if self.bar is not None:
            self.bar.start()
        self.task = None

    def split(self, name: str, total: int):
        if self.bar is not None:
            self.task = self.bar.add_task(f"writing {name}", total=total)

    def advance(self, n: int):
        if self.bar is not None and self.task is not None:
            self.bar.advance(self.task, n)

    def close(self):
        if self.bar is not None:
            self.bar.stop()


def _warn_skipped(split: str, what: str, shown: int):
    """Each skip goes to stderr, the first 20 of a split in full, then every 1000th as a count."""
    if shown < 20:
        print(f"gandist-prepare: {split}: skipped {what}", file=sys.stderr)
    elif shown % 1000 == 0:
        print(f"gandist-prepare: {split}: {shown} skipped so far (all listed in {INDEX})", file=sys.stderr)


def write_split(split: Split, out: Path, *, shard_size: int, pool, skip_bad: bool, order_seed: int | None,
                progress: _Progress, skipped: list[str], encoding: str = "png",
                clusters: np.ndarray | None = None) -> dict:
    """Write one split's shards; returns its index entry (without params).  Skips here are added to `skipped`.
    `clusters`: each item's cluster label (gandist.data.clusters), written as <key>.cluster."""
    order = np.arange(split.count)
    if order_seed is not None:
        order = np.random.default_rng([order_seed, split.count]).permutation(split.count)
    jobs = ((split.process, split.item(int(i)), encoding, None if clusters is None else int(clusters[i]))
            for i in order)
    results = pool.imap(_run, jobs, chunksize=16) if pool is not None else map(_run, jobs)

    failed = False

    def publish(fname: str):  # ShardWriter calls this when a shard is complete: move it into place
        p = Path(fname)
        if failed:
            p.unlink(missing_ok=True)
        else:
            p.replace(out / p.name[1:].removesuffix(".partial"))

    for i, what in enumerate(skipped):
        _warn_skipped(split.name, what, i)
    n = 0
    progress.split(split.name, split.count)
    writer = wds.ShardWriter(str(out / f".{split.name}-%06d.tar.partial"), maxcount=shard_size, maxsize=float("inf"),
                             post=publish, verbose=0, encoder=False, mtime=_MTIME)
    try:
        for ok, payload in results:
            if ok:
                writer.write(payload)
                n += 1
            elif skip_bad:
                _warn_skipped(split.name, payload, len(skipped))
                skipped.append(payload)
            else:
                raise PrepareError(f"{payload}\n(use --skip-bad to skip such samples and count them in the index)")
            progress.advance(1)
    except BaseException:
        failed = True
        raise
    finally:
        writer.close()
    nshards = math.ceil(n / shard_size)
    if n == 0:
        (out / _shard_name(split.name, 0)).unlink(missing_ok=True)
    shards = []
    for k in range(nshards):
        name = _shard_name(split.name, k)
        count = min(shard_size, n - k * shard_size)
        shards.append({"name": name, "count": count, "bytes": (out / name).stat().st_size})
    return {"pattern": _pattern(split.name, nshards), "shards": shards, "total": n, "skipped": len(skipped),
            "skipped_examples": skipped[:50]}


def prepare(source: str, src: str | Path | None, out: str | Path, *, splits: list[str] | None = None,
            shard_size: int = 2000, workers: int | None = None, resolution: int | None = None,
            channels: int | None = None, crop: int | None = None, skip_bad: bool = False, download: bool = False,
            size: int = 20000, seed: int = 0, shuffle_seed: int | None = 0, force: bool = False,
            progress: bool = True, encoding: str = "png", resplit_sizes: dict[str, int] | None = None,
            clusters: int = 0, log=print) -> dict:
    """Write `source` as shards into `out`; returns the index (also written to out/index.json).  The bytes do
    not depend on `workers` (None: the cores, at most 8).  `resplit_sizes` ({"train": 8000, "test": 2000})
    pools the splits and cuts them anew, seeded by `shuffle_seed`.  `clusters` > 0 adds each image's k-means
    cluster as a label (gandist.data.clusters), seeded by `shuffle_seed` too."""
    if encoding not in ENCODINGS:
        raise PrepareError(f"--encoding must be {' or '.join(ENCODINGS)}, not {encoding!r}")
    if shard_size < 1:
        raise PrepareError(f"--shard-size must be at least 1, not {shard_size}")
    if workers is not None and workers < 0:
        raise PrepareError(f"--workers must be 0 or more, not {workers}")
    if clusters < 0 or clusters == 1:
        raise PrepareError(f"--clusters must be 2 or more (or 0: none), not {clusters}")
    opt = Options(src=Path(src) if src else None, splits=tuple(splits) if splits else None, skip_bad=skip_bad,
                  resolution=resolution, channels=channels, crop=crop, download=download, size=size, seed=seed)
    s = open_source(source, opt)
    if splits:
        unknown = [x for x in splits if x not in s.splits]
        if unknown:
            raise PrepareError(f"{source}: no split {', '.join(unknown)} here; it has {', '.join(s.splits) or 'none'}")
    if resplit_sizes:
        s = resplit(s, resplit_sizes, shuffle_seed or 0)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    synthetic = source == "synthetic"
    params = {"source": source, "src": None if synthetic else str(s.root.resolve()), "resolution": s.resolution,
              "channels": s.channels, "crop": crop, "size": size if synthetic else None,
              "seed": seed if synthetic else None, "shard_size": shard_size, "shuffle_seed": shuffle_seed,
              "skip_bad": skip_bad, "encoding": encoding, "resplit": resplit_sizes or None}
    if clusters:  # only then: the indexes written before clusters existed stay up to date
        params["clusters"] = clusters
    fp = fingerprint(s.inputs)
    old = _read_index(out)
    old_splits = old.get("splits", {}) if old else {}

    todo = [sp for name, sp in s.splits.items() if force or not _up_to_date(out, old_splits.get(name), params, fp)]
    redo = {sp.name for sp in todo}
    entries = {name: {**e, "params": params} for name, e in old_splits.items() if _params(e) == params}
    for name in s.splits:
        if name not in redo:
            log(f"{name}: up to date ({entries[name]['total']} samples in {len(entries[name]['shards'])} shard(s), "
                f"{encoding})")

    if todo:
        workers = min(8, os.cpu_count() or 1) if workers is None else workers
        pool = multiprocessing.get_context().Pool(workers, _default_sigterm) if workers > 1 else None
        bar = None
        try:
            # the clusters first: a refusal there (too few images) leaves the folder as it was
            labels = cluster_labels(s.splits, redo, clusters, shuffle_seed or 0, pool, log) if clusters else {}
            if old is not None:  # while shards are rewritten, the index must not vouch for them
                write_json_atomic(out / INDEX, {**old, "splits": {k: v for k, v in old_splits.items()
                                                                  if k not in redo}})
            bar = _Progress(progress, sum(sp.count for sp in todo))
            for sp in todo:
                listed = s.skipped.get(sp.name, [])
                e = write_split(sp, out, shard_size=shard_size, pool=pool, skip_bad=skip_bad,
                                order_seed=shuffle_seed if sp.name == "train" else None, progress=bar,
                                skipped=list(listed), encoding=encoding, clusters=labels.get(sp.name))
                e.update(params=params, fingerprint=fp)
                entries[sp.name] = e
                log(f"{sp.name}: {e['total']} samples in {len(e['shards'])} shard(s) {e['pattern']}, {encoding}"
                    + (f", {e['skipped']} skipped ({len(listed)} while listing the input)" if e["skipped"] else ""))
        finally:
            if pool is not None:
                pool.terminate()
            if bar is not None:
                bar.close()

    index = {"format": FORMAT, "source": source, "encoding": encoding, "resolution": s.resolution,
             "channels": s.channels,
             "label_key": s.label_key, "classes": s.classes, "attributes": s.attributes, "clusters": clusters or None,
             "preprocessing": s.preprocessing, "total": sum(e["total"] for e in entries.values()),
             "skipped": sum(e["skipped"] for e in entries.values()), "splits": entries}
    if todo or old != index:
        write_json_atomic(out / INDEX, index)
    _remove_stale(out, index, log)
    for name, e in entries.items():
        if e["pattern"]:
            log(f"data.urls for {name}: {out / e['pattern']}")
    return index


def _default_sigterm():
    # A forked worker inherits its parent's SIGTERM handler; where that is a Python handler (the training loop's
    # StopFlag, when prepare runs in a process that trained before) the worker outlives pool.terminate(), whose
    # join then waits for ever (seen in CI, a hang of the whole suite).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _read_index(out: Path) -> dict | None:
    p = out / INDEX
    if not p.is_file():
        return None
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and d.get("format") == FORMAT else None


def _remove_stale(out: Path, index: dict, log):
    keep = {s["name"] for e in index["splits"].values() for s in e["shards"]}
    stale = [p for p in out.iterdir()
             if (SHARD_RE.match(p.name) and p.name not in keep) or p.name.endswith(".tar.partial")]
    for p in stale:
        p.unlink()
    if stale:
        log(f"removed {len(stale)} stale shard file(s) from {out}")


def parse_resplit(text: str) -> dict[str, int]:
    """--resplit's 'train=8000,test=2000' -> {'train': 8000, 'test': 2000}."""
    sizes = {}
    for part in text.split(","):
        name, _, n = part.partition("=")
        if not re.fullmatch(r"[A-Za-z0-9_]+", name) or not n.isdigit() or int(n) < 1 or name in sizes:
            raise argparse.ArgumentTypeError(f"{part!r} in {text!r}: each part is NAME=N, a split name (letters, "
                                             f"digits, _) used once and a positive count, e.g. train=8000,test=2000")
        sizes[name] = int(n)
    return sizes


def parse_args(argv):
    p = argparse.ArgumentParser(prog="gandist-prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", choices=SOURCES)
    p.add_argument("--src", help="the dataset's folder (not needed for synthetic)")
    p.add_argument("--out", required=True, help="output folder for the shards and index.json")
    p.add_argument("--splits", help="comma list, e.g. train,test (default: every split the source has)")
    p.add_argument("--shard-size", type=int, default=2000, help="samples per shard (default 2000)")
    p.add_argument("--workers", type=int, default=None, help="writer processes (default: CPU cores, at most 8; "
                                                            "0 or 1: write in this process)")
    p.add_argument("--resolution", type=int, help="output size in px (default: cifar10 32, mnist 28, celeba and "
                                                  "folder 64, synthetic 32)")
    p.add_argument("--channels", type=int, choices=(1, 3), help="3 = RGB, 1 = grayscale (default: the source's)")
    p.add_argument("--crop", type=int, help="centre crop in px before resizing (celeba: 108 by default, 140 is the "
                                            "other usual choice; folder: the largest centred square)")
    p.add_argument("--skip-bad", action="store_true", help="skip bad input (reported and counted in the index) "
                                                           "instead of stopping")
    p.add_argument("--download", action="store_true", help="cifar10, mnist: fetch the dataset with torchvision")
    p.add_argument("--size", type=int, default=20000, help="synthetic: number of images")
    p.add_argument("--seed", type=int, default=0, help="synthetic: the embedded dataset's seed")
    p.add_argument("--shuffle-seed", type=int, default=0, help="seed of the train split's write order")
    p.add_argument("--no-shuffle", action="store_true", help="write the train split in the source's order")
    p.add_argument("--encoding", choices=ENCODINGS, default="png",
                   help="how images are stored: png (default: lossless, smallest shards) or raw (uint8 arrays "
                        "as .npy: the same pixels, no decoding when read, so less CPU per image; larger shards)")
    p.add_argument("--resplit", type=parse_resplit, metavar="NAME=N,...",
                   help="pool the splits read and write new ones of these sizes in a seeded random order "
                        "(--shuffle-seed), e.g. train=8000,test=2000: a held-out set from one split")
    p.add_argument("--clusters", type=int, default=0, metavar="K",
                   help="also label each image with its k-means cluster (pixels; K clusters of equal size in the "
                        "train split), for a GAN conditioned on them: data.label_key=cluster (default 0: none)")
    p.add_argument("--force", action="store_true", help="rewrite splits even when they are up to date")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run_command("gandist-prepare", lambda: _command(args), (PrepareError,))


def _command(args) -> int:
    try:
        index = prepare(args.source, args.src, args.out, splits=args.splits.split(",") if args.splits else None,
                        shard_size=args.shard_size, workers=args.workers, resolution=args.resolution,
                        channels=args.channels, crop=args.crop, skip_bad=args.skip_bad, download=args.download,
                        size=args.size, seed=args.seed, shuffle_seed=None if args.no_shuffle else args.shuffle_seed,
                        force=args.force, progress=not args.no_progress, encoding=args.encoding,
                        resplit_sizes=args.resplit, clusters=args.clusters)
    except KeyboardInterrupt:  # not an error: what is written stays, a re-run finishes it
        print("gandist-prepare: interrupted; re-run the same command to finish", file=sys.stderr)
        return 130
    print(f"gandist-prepare: {index['total']} samples in {args.out}, {_ENCODED[index['encoding']]}"
          + (f", {index['skipped']} skipped (listed in {Path(args.out) / INDEX})" if index["skipped"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
