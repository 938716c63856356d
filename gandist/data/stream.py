"""The streaming shard reader: WebDataset tar shards (written by gandist-prepare) -> uint8 batches.

`data.urls` is one or more shard patterns separated by ';', each brace-expanded
(`shards/train-{000000..000099}.tar`); a pattern may be a local path, an http(s):// URL or a
`pipe:COMMAND` whose stdout is the tar (`pipe:aws s3 cp s3://bucket/train-000000.tar -`).  With
`data.cache_dir`, remote shards are downloaded there once and read locally afterwards.

Two modes:
- training (`ShardSource`): every (rank, DataLoader worker) resamples shards with replacement and
  shuffles samples through a buffer, seeded by (seed, epoch, rank, worker).  An epoch is a fixed
  number of batches, the same on every rank (total samples // global batch), so no rank waits for
  another at the end of an epoch.  Batch k of a rank comes from worker k mod W and is a pure function
  of (seed, k, rank, W): a run resumed at D-step j reads exactly the batches the uninterrupted run read.
- evaluation (`eval_batches`): shards are split across ranks (shard i -> rank i mod world) and then
  across DataLoader workers (`webdataset.split_by_worker`), read in order: every sample exactly once.

The epoch length comes from the index.json gandist-prepare writes beside the shards (local or http);
without one, local shards are counted from their tar headers and remote ones estimated from the first.

Workers decode PNG to uint8 (C, H, W) tensors; ShardSource converts to [-1, 1] on the device.  A corrupt
sample or an unreadable shard is logged and skipped, and counted (`ShardSource.skipped`,
`EvalBatches.skipped`); it never stops training.  A worker that cannot read a single good sample
from any shard raises an error naming its rank, host and the last problem instead of hanging.

webdataset does the brace expansion, pipe:/http opening, shard resampling, splitting by worker, the
shuffle buffer and grouping tar members into samples; the tar members themselves are read by
`tar_members` here, at a fifteenth of the CPU time of Python's tarfile.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import socket
import struct
import tarfile
import urllib.parse
import zlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from gandist.config import ConfigError
from gandist.data.source import condition, to_images
from gandist.distributed import generator, where

log = logging.getLogger("gandist.data")
INDEX = "index.json"
_LOG_FIRST = 20  # skips logged in full per worker; after that every 100th


class DataError(ConfigError):
    """data.* settings that cannot work with the shards (none exist, another resolution, no such labels,
    nothing readable); a ConfigError, so gandist-train reports it without a traceback."""


# -- urls ------------------------------------------------------------------------------------------

def expand_urls(urls: str | list[str]) -> list[str]:
    """';'-separated patterns, each brace-expanded by webdataset -> the list of shard urls."""
    from webdataset.shardlists import expand_urls as wds_expand

    parts = urls if isinstance(urls, list) else [u.strip() for u in urls.split(";")]
    out = [u for p in parts if p for u in wds_expand(p)]
    if not out:
        raise DataError("data.urls: no shard urls given")
    return out


def is_local(url: str) -> bool:
    return url.startswith("file://") or ("://" not in url and not url.startswith("pipe:"))


def local_path(url: str) -> Path:
    return Path(urllib.parse.urlparse(url).path if url.startswith("file://") else url)


def cache_path(url: str, cache_dir: str | Path) -> Path:
    """Where a remote shard is cached: a hash of the whole url (two datasets' train-000000.tar differ)."""
    tail = (url.rstrip("/").rsplit("/", 1)[-1].split() or ["shard"])[0]  # 'pipe:... s3://b/x.tar -' -> x.tar
    tail = "".join(c if c.isalnum() or c in "._-" else "_" for c in tail)[-60:]
    return Path(cache_dir) / f"{hashlib.sha1(url.encode()).hexdigest()[:16]}-{tail}"


def fetch_to_cache(url: str, cache_dir: str | Path) -> Path:
    """Download url into the cache once (atomic rename, so concurrent readers never see half a file)."""
    import webdataset as wds

    dest = cache_path(url, cache_dir)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        with wds.gopen(url, "rb") as src, open(tmp, "wb") as f:
            while chunk := src.read(1 << 20):
                f.write(chunk)
        if not tarfile.is_tarfile(tmp):
            raise DataError(f"{url}: what was downloaded is not a tar archive")
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def open_shard(url: str, cache_dir: str = ""):
    import webdataset as wds

    if is_local(url):
        return open(local_path(url), "rb", buffering=1 << 18)
    if cache_dir:
        return open(fetch_to_cache(url, cache_dir), "rb", buffering=1 << 18)
    return wds.gopen(url, "rb")


class TarError(ValueError):
    pass


def _octal(field: bytes, what: str) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256, for sizes over 8 GB
        return int.from_bytes(field[1:], "big")
    try:
        return int(field.split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        raise TarError(f"bad {what} field {field!r}") from None


def tar_members(f):
    """(name, bytes) of each regular file of a tar stream (ustar, GNU long names, pax paths).

    Python's tarfile, which webdataset's tar_file_iterator uses, spends ~15x longer per member (measured
    140 us against 9 us on 32 px CIFAR samples), as much as decoding the image; this reads a stream
    (file, pipe, http) once, front to back.  A bad header checksum or a short member raises TarError:
    a stream cannot be resynchronised, so the rest of that shard is skipped."""
    pos, long_name = 0, None
    while True:
        h = f.read(512)
        if len(h) < 512:
            if h.strip(b"\0"):
                raise TarError(f"truncated header at byte {pos}")
            return
        if not h.strip(b"\0"):
            return  # the end-of-archive zero block
        if _octal(h[148:156], "checksum") != sum(h[:148]) + 256 + sum(h[156:]):
            raise TarError(f"bad header checksum at byte {pos}")
        size, kind = _octal(h[124:136], "size"), h[156:157]
        data = f.read(size)
        if len(data) < size:
            raise TarError(f"member truncated at byte {pos + 512 + len(data)} ({size} expected)")
        f.read(-size % 512)
        pos += 512 + size + (-size % 512)
        if kind == b"L":  # GNU: the next member's long name
            long_name = data.split(b"\0", 1)[0].decode("utf-8", "replace")
        elif kind == b"x":  # pax: the next member's attributes, "LEN key=value\n" records
            for rec in data.decode("utf-8", "replace").splitlines():
                key, _, value = rec.partition(" ")[2].partition("=")
                if key == "path":
                    long_name = value
        elif kind in (b"0", b"\0", b"7"):
            name = h[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
            if h[257:263] == b"ustar\0" and h[345] != 0:
                name = h[345:500].split(b"\0", 1)[0].decode("utf-8", "replace") + "/" + name
            yield (long_name or name), data
            long_name = None
        else:  # directories, links, global pax headers: nothing to read
            long_name = None


def _read_text(url: str) -> str | None:
    import webdataset as wds

    try:
        if is_local(url):
            p = local_path(url)
            return p.read_text() if p.is_file() else None
        with wds.gopen(url, "rb") as f:
            return f.read().decode()
    except Exception:
        return None


def find_index(urls: list[str]) -> tuple[dict, dict[str, int]]:
    """The index.json files beside the shards (local or http(s)): (metadata of the first one found,
    {shard url: sample count} for the shards they list)."""
    meta, counts, seen = {}, {}, {}
    for url in urls:
        if url.startswith("pipe:"):
            continue
        parent, name = (url.rsplit("/", 1) if "/" in url else (".", url))
        if parent not in seen:
            text = _read_text(f"{parent}/{INDEX}")
            try:
                seen[parent] = json.loads(text) if text else None
            except ValueError:
                seen[parent] = None
        idx = seen[parent]
        if not idx:
            continue
        for split in idx.get("splits", {}).values():
            for s in split.get("shards", []):
                if s["name"] == name:
                    counts[url] = int(s["count"])
        if not meta:
            meta = idx
    return meta, counts


def count_samples(url: str, cache_dir: str = "") -> int:
    """Samples in one shard, from its tar headers (a local file is not read beyond them)."""
    from webdataset.tariterators import base_plus_ext

    with open_shard(url, cache_dir) as f, tarfile.open(fileobj=f, mode="r:" if is_local(url) else "r|*") as tar:
        keys = {base_plus_ext(m.name)[0] for m in tar if m.isreg()}
    keys.discard(None)
    return len(keys)


# -- decoding --------------------------------------------------------------------------------------

class BadSample(Exception):
    pass


@dataclass
class Spec:
    """What a sample must look like: image size, and which labels to return."""
    resolution: int | None = None  # None: any (eval infers it from the index)
    channels: int | None = None
    labels: str | None = "cls"  # "cls", "attr" or None (no labels)
    attributes: tuple[str, ...] = ()
    num_classes: int = 0  # > 0: class ids must be below it
    require_labels: bool = False  # a sample without its label is bad (training with conditioning)


def _pil_decode(data: bytes) -> torch.Tensor:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGB")
        arr = np.asarray(im)
    return torch.from_numpy(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy())


_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def _plain_png(data: bytes) -> bool:
    """True for an 8-bit grey or RGB, non-interlaced PNG whose chunks are all intact (CRCs match);
    raises ValueError for a damaged one.  libpng inside torchvision can crash the process on damaged
    image data, so only PNGs that pass this reach it."""
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


def _png_decoder():
    """PNG bytes -> uint8 (C, H, W).  torchvision's libpng op is 2-3x faster than PIL on small images;
    torchvision 0.29 deprecates its image functions (a warning on every torchvision.io.decode_png call),
    so the op is called directly, and PIL decodes where it is gone or for unusual PNGs."""
    try:
        import torchvision.io  # noqa: F401  (registers torch.ops.image)

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


def _encode_probe() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 13).save(buf, format="PNG")
    return buf.getvalue()


_decode_png = None


def decoder():
    """The PNG decoder, chosen once per process; called before DataLoader workers fork, so that they
    inherit it (and torchvision) instead of each importing it."""
    global _decode_png
    if _decode_png is None:
        _decode_png = _png_decoder()
    return _decode_png


def decode(sample: dict, spec: Spec):
    """A raw WebDataset sample -> (uint8 (C, H, W) tensor, label or None); BadSample says what is wrong
    (the caller names the sample: see where_sample)."""
    png = sample.get("png")
    if png is None:
        raise BadSample(f"no .png member (found {sorted(k for k in sample if not k.startswith('__'))})")
    try:
        img = decoder()(png)
    except Exception as e:
        raise BadSample(f"corrupt PNG ({type(e).__name__}: {str(e)[:120]})") from None
    c, h, w = img.shape
    if spec.channels is not None and c != spec.channels:
        raise BadSample(f"{c} channel(s), data.channels is {spec.channels}")
    if spec.resolution is not None and (h, w) != (spec.resolution, spec.resolution):
        raise BadSample(f"{w}x{h} px, data.resolution is {spec.resolution}")
    if spec.labels == "cls":
        raw = sample.get("cls")
        try:
            label = int(raw) if raw is not None else -1
        except ValueError:
            raise BadSample(f".cls is not an integer: {raw[:20]!r}") from None
        if spec.require_labels and label < 0:
            raise BadSample(f"no .cls class label (data.label_key=cls)")
        if spec.require_labels and spec.num_classes and label >= spec.num_classes:
            raise BadSample(f"class {label} is not below data.num_classes={spec.num_classes}")
        return img, label
    if spec.labels == "attr":
        raw = sample.get("attr.json")
        if raw is None:
            if spec.require_labels:
                raise BadSample(f"no .attr.json attributes (data.label_key=attr)")
            return img, [0] * len(spec.attributes)
        try:
            attrs = json.loads(raw)
            return img, [int(attrs[a]) for a in spec.attributes]
        except KeyError as e:
            raise BadSample(f"attribute {e} is not in its .attr.json") from None
        except (ValueError, TypeError) as e:
            raise BadSample(f"unreadable .attr.json ({e})") from None
    return img, None


def where_sample(sample: dict) -> str:
    return f"sample {sample.get('__key__')!r} of {sample.get('__url__')}"


def collate(items: list, spec: Spec):
    images = torch.stack([im for im, _ in items])
    if spec.labels is None:
        return images, None
    dtype = torch.int64 if spec.labels == "cls" else torch.int8
    return images, torch.tensor([lab for _, lab in items], dtype=dtype)


# -- the per-worker sample stream ------------------------------------------------------------------

class _Reader:
    """Opens shards, splits them into samples and decodes them in one DataLoader worker; logs, skips
    and counts what is corrupt, and refuses to spin forever when nothing is readable."""

    def __init__(self, spec: Spec, cache_dir: str, tag: str, nurls: int, resampled: bool):
        self.spec, self.cache_dir, self.tag = spec, cache_dir, tag
        self.skipped = 0  # since the last take_skipped()
        self.total_skipped = 0
        self.opened_since_good = 0
        self.limit = 10 * nurls + 10 if resampled else None
        self.last_problem = ""

    def problem(self, what: str) -> bool:
        """Log a skipped sample or shard; True = go on (the webdataset handler protocol)."""
        self.skipped += 1
        self.total_skipped += 1
        self.last_problem = what
        n = self.total_skipped
        if n <= _LOG_FIRST or n % 100 == 0:
            log.warning("gandist.data (%s): skipped %s%s", self.tag, what,
                        f" [{n} skipped so far]" if n > _LOG_FIRST else "")
        return True

    def handler(self, exn: Exception) -> bool:
        """webdataset's tar readers report here; they append the stream and url to exn.args."""
        args = [str(a) for a in exn.args]
        what, _, stream = (args[0] if args else "").partition(" @ ")
        url = next((a for a in reversed(args[1:]) if not a.startswith("<")), None) or stream or "?"
        return self.problem(f"shard {url}: unreadable tar data ({type(exn).__name__}: {what[:200]})")

    def take_skipped(self) -> int:
        n, self.skipped = self.skipped, 0
        return n

    def _streams(self, urls):
        for item in urls:
            url = item["url"] if isinstance(item, dict) else item
            self.opened_since_good += 1
            if self.limit is not None and self.opened_since_good > self.limit:
                raise DataError(f"{self.tag}: opened {self.opened_since_good - 1} shards in a row without one good "
                                f"sample; last problem: {self.last_problem}")
            try:
                stream = open_shard(url, self.cache_dir)
            except Exception as e:
                self.problem(f"shard {url}: cannot open ({type(e).__name__}: {str(e)[:200]})")
                continue
            try:
                yield {"url": url, "stream": stream}
            finally:
                try:
                    stream.close()  # a pipe: command's exit status is checked here
                except Exception as e:
                    self.problem(f"shard {url}: {type(e).__name__}: {str(e)[:200]}")

    def _files(self, urls):
        for src in self._streams(urls):
            try:
                for name, data in tar_members(src["stream"]):
                    yield {"fname": name, "data": data, "__url__": src["url"]}
            except Exception as e:
                self.problem(f"shard {src['url']}: unreadable tar data ({type(e).__name__}: {str(e)[:200]})")
            yield {}  # end of shard: webdataset's group_by_keys never joins samples across shards

    def raw(self, urls):
        """Raw samples (dicts of bytes) from the shards in `urls` (an iterable of urls or {'url': ...})."""
        from webdataset.tariterators import group_by_keys

        return group_by_keys(self._files(urls), handler=self.handler)

    def decoded(self, samples):
        for s in samples:
            try:
                item = decode(s, self.spec)
            except BadSample as e:
                self.problem(f"{where_sample(s)}: {e}")
                continue
            if self.spec.resolution is None or self.spec.channels is None:
                # no index.json said the size: the first image sets it, later ones must match
                c, h, _ = item[0].shape
                self.spec = dataclasses.replace(self.spec, resolution=self.spec.resolution or h,
                                                channels=self.spec.channels or c)
            self.opened_since_good = 0
            yield item, s.get("__key__")


class TrainStream(IterableDataset):
    """Yields (uint8 images, labels, skipped, k) for this rank's batches k = start, start+1, ... (infinite);
    batch k is made by logical worker k mod W.  DataLoader worker `slot` takes k = start + slot (mod W)
    so that the DataLoader's round-robin order is exactly k = start, start+1, ..."""

    def __init__(self, urls: list[str], spec: Spec, *, seed: int, rank: int, batch: int, batches_per_epoch: int,
                 workers: int, start: int = 0, shuffle_buffer: int = 1000, cache_dir: str = "", tag: str = ""):
        self.urls, self.spec, self.seed, self.rank, self.batch = urls, spec, seed, rank, batch
        self.bpe, self.W, self.start = batches_per_epoch, max(1, workers), start
        self.shuffle_buffer, self.cache_dir, self.tag = shuffle_buffer, cache_dir, tag or f"rank {rank}"

    def epoch_samples(self, reader: _Reader, epoch: int, w: int):
        import webdataset as wds

        s = generator(self.seed, epoch, f"shards rank {self.rank} worker {w}").initial_seed()
        shards = wds.ResampledShards(self.urls, seed=s, deterministic=True, worker_seed=lambda: 0)
        samples = reader.raw(iter(shards))
        if self.shuffle_buffer > 1:
            samples = wds.shuffle(self.shuffle_buffer, initial=min(self.shuffle_buffer, 100), seed=s)(samples)
        return reader.decoded(samples)

    def __iter__(self):
        info = get_worker_info()
        slot = info.id if info is not None else 0
        w = (self.start + slot) % self.W
        reader = _Reader(self.spec, self.cache_dir, f"{self.tag}, data worker {w}", len(self.urls), resampled=True)
        k, epoch, it = self.start + slot, None, None
        while True:
            e, i = divmod(k, self.bpe)
            if e != epoch:
                epoch, it = e, self.epoch_samples(reader, e, w)
                first = (w - e * self.bpe) % self.W  # this worker's first batch in epoch e
                for _ in range(len(range(first, i, self.W)) * self.batch):  # resuming mid-epoch: replay
                    next(it)
            items = [next(it)[0] for _ in range(self.batch)]
            images, labels = collate(items, self.spec)
            yield images, labels, reader.take_skipped(), k
            k += self.W


class EvalStream(IterableDataset):
    """This rank's shards (shard i -> rank i mod world), split across DataLoader workers, in order:
    yields (images, labels, skipped, keys); a last item with images None carries trailing skips."""

    def __init__(self, urls: list[str], spec: Spec, *, rank: int, world: int, batch: int, cache_dir: str = "",
                 tag: str = ""):
        self.urls = urls[rank::world]
        self.spec, self.batch, self.cache_dir, self.tag = spec, batch, cache_dir, tag or f"rank {rank}"

    def __iter__(self):
        import webdataset as wds

        info = get_worker_info()
        reader = _Reader(self.spec, self.cache_dir, f"{self.tag}, data worker {info.id if info else 0}",
                         len(self.urls), resampled=False)
        buf = []
        for item, key in reader.decoded(reader.raw(wds.split_by_worker(self.urls))):
            buf.append((item, key))
            if len(buf) == self.batch:
                yield (*collate([it for it, _ in buf], self.spec), reader.take_skipped(), [k for _, k in buf])
                buf = []
        if buf:
            yield (*collate([it for it, _ in buf], self.spec), reader.take_skipped(), [k for _, k in buf])
        if reader.skipped:
            yield None, None, reader.take_skipped(), []


def _here(rank: int) -> str:
    """'rank R on HOST' for messages: where() in a real process group; the given rank where ranks are
    simulated (tests, benchmarks)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return where()
    return f"rank {rank} on {socket.gethostname()}"


def _ignore_stop_signals(worker_id: int):
    # SLURM signals every process of a step; the training process decides when to stop (at a step
    # boundary, after a checkpoint), so its loader workers must not die of SIGTERM / SIGUSR1 first.
    import signal

    for s in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(s, signal.SIG_IGN)


def _loader(ds: IterableDataset, workers: int, pin: bool, prefetch: int = 2) -> DataLoader:
    decoder()
    return DataLoader(ds, batch_size=None, num_workers=workers, pin_memory=pin,
                      prefetch_factor=prefetch if workers > 0 else None,
                      worker_init_fn=_ignore_stop_signals if workers > 0 else None)


class EvalBatches:
    """Iterate for (uint8 images (b, C, H, W), labels) -- or (images, labels, keys) with with_keys --
    covering this rank's share of the samples exactly once; `skipped` counts what was corrupt."""

    def __init__(self, urls, rank: int, world: int, batch_size: int, workers: int = 2, *, label_key: str | None = "cls",
                 attributes=(), resolution: int | None = None, channels: int | None = None, cache_dir: str = "",
                 with_keys: bool = False, pin_memory: bool = False):
        self.urls = expand_urls(urls)
        if resolution is None or channels is None:
            meta, _ = find_index(self.urls)
            resolution = resolution or meta.get("resolution")
            channels = channels or meta.get("channels")
        spec = Spec(resolution, channels, label_key if label_key in ("cls", "attr") else None, tuple(attributes or ()))
        self.ds = EvalStream(self.urls, spec, rank=rank, world=world, batch=batch_size, cache_dir=cache_dir,
                             tag=_here(rank))
        self.workers = min(workers, len(self.ds.urls))
        self.with_keys, self.pin = with_keys, pin_memory
        self.skipped = 0

    def __iter__(self):
        self.skipped = 0
        if not self.ds.urls:
            return
        for images, labels, skipped, keys in _loader(self.ds, self.workers, self.pin):
            self.skipped += skipped
            if images is None:
                continue
            yield (images, labels, keys) if self.with_keys else (images, labels)


def eval_batches(urls, rank: int, world: int, batch_size: int, workers: int = 2, **kw) -> EvalBatches:
    """Evaluation mode: every sample exactly once across ranks x workers (see EvalBatches)."""
    return EvalBatches(urls, rank, world, batch_size, workers, **kw)


def eval_batches_for(cfg, rank: int, world: int, batch_size: int, urls: str | None = None) -> EvalBatches:
    """eval_batches with the run config's data settings (urls default to data.urls)."""
    d = cfg.data
    attr = d.label_key == "attr" and bool(d.attributes)
    return EvalBatches(urls or d.urls, rank, world, batch_size, d.workers, label_key="attr" if attr else "cls",
                       attributes=d.attributes if attr else (), resolution=d.resolution, channels=d.channels,
                       cache_dir=d.cache_dir)


# -- training --------------------------------------------------------------------------------------

class ShardSource:
    """Training-mode reader with the interface of SyntheticSource: batch(j) -> (images in [-1, 1] on the
    device, condition vectors or None) for this rank's slice of D-step j's global batch."""

    def __init__(self, cfg, rank: int, world: int, device):
        d = cfg.data
        self.cfg, self.device, self.rank = cfg, torch.device(device), rank
        self.here = _here(rank)
        self.urls = expand_urls(d.urls)
        cond = cfg.model.conditioning != "none"
        attr = d.label_key == "attr"
        if d.label_key not in ("cls", "attr"):
            raise DataError(f"data.label_key: {d.label_key!r} is not 'cls' or 'attr' ({self.here})")
        if cond and attr and not d.attributes:
            raise DataError(f"data.attributes: data.label_key is 'attr' but no attributes are chosen ({self.here})")
        self.spec = Spec(d.resolution, d.channels, ("attr" if attr else "cls") if cond else None,
                         tuple(d.attributes) if attr else (), d.num_classes if not attr else 0, require_labels=cond)
        self.local_b = cfg.train.batch_size // world
        meta, total = self._inspect()
        self.total = total
        self.bpe = max(1, total // cfg.train.batch_size)
        self.skipped = 0
        self._next, self._it = 0, None
        if rank == 0:
            print(f"data: {len(self.urls)} shard(s), {total} samples"
                  + (f" ({meta.get('source')}, index.json)" if meta else "")
                  + f"; an epoch is {self.bpe} batches of {cfg.train.batch_size}", flush=True)

    def _inspect(self) -> tuple[dict, int]:
        """Check the shards against the config before any worker starts; return (index metadata, samples)."""
        d, here = self.cfg.data, self.here
        missing = [u for u in self.urls if is_local(u) and not local_path(u).is_file()]
        if len(missing) == len(self.urls):
            raise DataError(f"data.urls: none of the {len(self.urls)} shard(s) exist, e.g. {missing[0]} ({here})")
        if missing and self.rank == 0:
            log.warning("data.urls: %d of %d shards do not exist (e.g. %s); they will be skipped",
                        len(missing), len(self.urls), missing[0])
        meta, counts = find_index(self.urls)
        if meta:
            src = f"{meta.get('source')} shards (index.json)"
            if meta.get("resolution") not in (None, d.resolution):
                raise DataError(f"data.resolution is {d.resolution} but the {src} are {meta['resolution']} px; "
                                f"set data.resolution={meta['resolution']} or re-run gandist-prepare with "
                                f"--resolution {d.resolution} ({here})")
            if meta.get("channels") not in (None, d.channels):
                raise DataError(f"data.channels is {d.channels} but the {src} have {meta['channels']} ({here})")
            if self.spec.labels == "attr":
                absent = [a for a in d.attributes if a not in (meta.get("attributes") or [])]
                if absent:
                    raise DataError(f"data.attributes: {absent} are not attributes of the {src}, which has "
                                    f"{meta.get('attributes') or 'none'} ({here})")
            if self.spec.labels == "cls":
                classes = meta.get("classes")
                if not classes:
                    hint = " (use data.label_key=attr with data.attributes)" if meta.get("attributes") else ""
                    raise DataError(f"data.label_key is 'cls' but the {src} have no class labels{hint} ({here})")
                if len(classes) > d.num_classes:
                    raise DataError(f"data.num_classes is {d.num_classes} but the {src} have {len(classes)} "
                                    f"classes ({here})")
        present = [u for u in self.urls if u not in missing]
        total = sum(counts.get(u, 0) for u in present)
        local = [u for u in present if u not in counts and is_local(u)]
        remote = [u for u in present if u not in counts and not is_local(u)]
        if (local or remote) and self.rank == 0:
            print(f"data: no index.json lists {len(local) + len(remote)} shard(s) (e.g. {(local + remote)[0]}); "
                  + ("counting the local ones' samples" if local else "")
                  + (" and " if local and remote else "")
                  + (f"estimating the remote ones' as {len(remote)} x the count of the first" if remote else ""),
                  flush=True)
        for u in local + remote[:1]:
            try:
                n = count_samples(u, d.cache_dir)
            except Exception as e:
                log.warning("gandist.data (%s): cannot count the samples of %s (%s)", here, u, e)
                n = 0
            total += n * (len(remote) if u not in local else 1)
        if total == 0:
            raise DataError(f"data.urls: the {len(present)} shard(s) hold no readable samples ({here})")
        self._probe(present)
        return meta, total

    def _probe(self, urls: list[str], tries: int = 20):
        """Decode the first samples: if none of the first `tries` is usable, the mismatch (size, channels,
        labels) is systematic and fails here, clearly, instead of every sample being skipped."""
        reader = _Reader(self.spec, self.cfg.data.cache_dir, self.here, len(urls), resampled=False)
        reader.problem = lambda what: True  # quiet: the workers will log corrupt samples
        first = None
        for n, s in enumerate(reader.raw(urls[:3])):
            try:
                decode(s, self.spec)
                return
            except BadSample as e:
                first = first or f"{where_sample(s)}: {e}"
            if n + 1 >= tries:
                break
        if first is not None:  # (nothing readable at all in the first shards: the workers will say so)
            raise DataError(f"{first} ({self.here})")

    def _start(self, k: int):
        d = self.cfg.data
        ds = TrainStream(self.urls, self.spec, seed=self.cfg.train.seed, rank=self.rank, batch=self.local_b,
                         batches_per_epoch=self.bpe, workers=d.workers, start=k, shuffle_buffer=d.shuffle_buffer,
                         cache_dir=d.cache_dir, tag=self.here)
        self._it = None  # shut the old workers down first
        self._it = iter(_loader(ds, d.workers, self.device.type == "cuda", prefetch=4))
        self._next = k

    def batch(self, j: int):
        if self._it is None or j != self._next:
            self._start(j)
        images, labels, skipped, k = next(self._it)
        if k != j:
            raise RuntimeError(f"data: expected batch {j} from the loader, got {k} ({self.here})")
        self.skipped += skipped
        self._next = j + 1
        return to_images(images, self.device), condition(labels, self.cfg) if labels is not None else None

    def state_dict(self) -> dict:
        return {"next_batch": self._next, "epoch": self._next // self.bpe, "batch_in_epoch": self._next % self.bpe,
                "batches_per_epoch": self.bpe, "skipped": self.skipped}

    def load_state_dict(self, state: dict):
        if not state or "next_batch" not in state:
            return
        if state.get("batches_per_epoch") not in (None, self.bpe) and self.rank == 0:
            log.warning("data: the checkpoint's epochs were %s batches, now %s (the shards changed?)",
                        state.get("batches_per_epoch"), self.bpe)
        self._next, self.skipped = int(state["next_batch"]), int(state.get("skipped", 0))
        self._it = None
