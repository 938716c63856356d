"""`data.urls` -> shard urls, and opening one (file, http(s), `pipe:COMMAND`), via data.cache_dir if set."""
from __future__ import annotations

import hashlib
import os
import urllib.parse
from pathlib import Path

import webdataset as wds
from webdataset.shardlists import expand_urls as wds_expand_urls

from gandist.data.errors import DataError
from gandist.data.shards.tar import is_tar

_BUFFER = 1 << 18  # local reads: a few samples per system call


def expand_urls(urls: str | list[str]) -> list[str]:
    """';'-separated patterns, each brace-expanded by webdataset -> the list of shard urls."""
    parts = urls if isinstance(urls, list) else [u.strip() for u in urls.split(";")]
    out = [u for p in parts if p for u in wds_expand_urls(p)]
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
    """Download url into the cache once, via a per-pid temporary file renamed into place, so that
    concurrent readers never see half a shard and two fetchers never share a file."""
    dest = cache_path(url, cache_dir)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        with wds.gopen(url, "rb") as src, open(tmp, "wb") as f:
            while chunk := src.read(1 << 20):
                f.write(chunk)
        if not is_tar(tmp):
            raise DataError(f"{url}: what was downloaded is not a tar archive")
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def open_shard(url: str, cache_dir: str = ""):
    """A binary stream of the shard's bytes; closing a pipe: stream checks the command's exit status."""
    if is_local(url):
        return open(local_path(url), "rb", buffering=_BUFFER)
    if cache_dir:
        return open(fetch_to_cache(url, cache_dir), "rb", buffering=_BUFFER)
    return wds.gopen(url, "rb")


def read_text(url: str) -> str | None:
    """A small text file (index.json) beside the shards, or None where there is none or it can't be read."""
    try:
        if is_local(url):
            p = local_path(url)
            return p.read_text() if p.is_file() else None
        with wds.gopen(url, "rb") as f:
            return f.read().decode()
    except Exception:
        return None
