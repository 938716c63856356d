"""The index.json beside the shards: finding it, checking it against the config, counting where it is absent."""
from __future__ import annotations

import json
import logging

from webdataset.tariterators import base_plus_ext

from gandist.data.errors import DataError
from gandist.data.shards.io import is_local, open_shard, read_text
from gandist.data.shards.tar import tar_members

INDEX = "index.json"
FORMAT = "gandist-shards/1"  # index["format"]: an index.json of another layout is not ours to read
# index["encoding"]: "png" (<key>.png) or "raw" (<key>.npy, see raw.py); an index without it holds PNG.
ENCODINGS = ("png", "raw")

log = logging.getLogger("gandist.data")


def find_index(urls: list[str]) -> tuple[dict, dict[str, int]]:
    """(metadata of the first index.json found beside the shards, {shard url: sample count} they list)."""
    meta, counts, seen = {}, {}, {}
    for url in urls:
        if url.startswith("pipe:"):
            continue
        parent, name = (url.rsplit("/", 1) if "/" in url else (".", url))
        if parent not in seen:
            text = read_text(f"{parent}/{INDEX}")
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


def encoding_of(meta: dict) -> str:
    """The image encoding of the shards an index describes ('png' where it names none)."""
    return meta.get("encoding") or "png"


def check_index(meta: dict, data, labels: str | None, here: str = "") -> None:
    """DataError where the indexed shards cannot serve `data` with `labels` ('cls', 'attr' or None): an
    unknown encoding, another size, missing labels, too many classes.  No index (meta {}): nothing checked."""
    if not meta:
        return
    at = f" ({here})" if here else ""
    src = f"{meta.get('source')} shards (index.json)"
    if encoding_of(meta) not in ENCODINGS:
        raise DataError(f"the {src} are encoded {encoding_of(meta)!r}, which this gandist cannot read (it reads "
                        f"{' and '.join(ENCODINGS)}); re-run gandist-prepare with --encoding png or raw{at}")
    if meta.get("resolution") not in (None, data.resolution):
        raise DataError(f"data.resolution is {data.resolution} but the {src} are {meta['resolution']} px; "
                        f"set data.resolution={meta['resolution']} or re-run gandist-prepare with "
                        f"--resolution {data.resolution}{at}")
    if meta.get("channels") not in (None, data.channels):
        raise DataError(f"data.channels is {data.channels} but the {src} have {meta['channels']}{at}")
    if labels == "attr":
        absent = [a for a in data.attributes if a not in (meta.get("attributes") or [])]
        if absent:
            raise DataError(f"data.attributes: {absent} are not attributes of the {src}, which has "
                            f"{meta.get('attributes') or 'none'}{at}")
    if labels == "cls" and getattr(data, "label_key", "cls") == "cluster":
        if not meta.get("clusters"):
            raise DataError(f"data.label_key is 'cluster' but the {src} have no cluster labels: re-run "
                            f"gandist-prepare with --clusters K{at}")
        if meta["clusters"] > data.num_classes:
            raise DataError(f"data.num_classes is {data.num_classes} but the {src} have {meta['clusters']} "
                            f"clusters{at}")
    elif labels == "cls":
        classes = meta.get("classes")
        if not classes:
            hint = " (use data.label_key=attr with data.attributes)" if meta.get("attributes") else ""
            raise DataError(f"data.label_key is 'cls' but the {src} have no class labels{hint}{at}")
        if len(classes) > data.num_classes:
            raise DataError(f"data.num_classes is {data.num_classes} but the {src} have {len(classes)} "
                            f"classes{at}")


def count_samples(url: str, cache_dir: str = "") -> int:
    """Samples in one shard, from its tar headers (a local file is not read beyond them)."""
    with open_shard(url, cache_dir) as f:
        keys = {base_plus_ext(name)[0] for name, _ in tar_members(f, data=False)}
    keys.discard(None)
    return len(keys)


def total_samples(urls: list[str], counts: dict[str, int], cache_dir: str, here: str, announce: bool) -> int:
    """Samples in `urls`: the index's counts, else local shards' tar headers; remote ones are estimated from
    the first, since counting them all would download the dataset before training starts."""
    total = sum(counts.get(u, 0) for u in urls)
    local = [u for u in urls if u not in counts and is_local(u)]
    remote = [u for u in urls if u not in counts and not is_local(u)]
    if (local or remote) and announce:
        print(f"data: no index.json lists {len(local) + len(remote)} shard(s) (e.g. {(local + remote)[0]}); "
              + ("counting the local ones' samples" if local else "")
              + (" and " if local and remote else "")
              + (f"estimating the remote ones' as {len(remote)} x the count of the first" if remote else ""),
              flush=True)
    for u in local + remote[:1]:
        try:
            n = count_samples(u, cache_dir)
        except Exception as e:
            log.warning("gandist.data (%s): cannot count the samples of %s (%s)", here, u, e)
            n = 0
        total += n * (len(remote) if u not in local else 1)
    return total
