"""The reader inside one DataLoader worker: shards -> raw samples -> decoded samples.  What is corrupt
is logged, skipped and counted, never fatal; what never yields a good sample is an error, not a hang."""
from __future__ import annotations

import dataclasses
import logging

from webdataset.tariterators import group_by_keys

from gandist.data.errors import BadSample, DataError
from gandist.data.shards.decode import Spec, decode, where_sample
from gandist.data.shards.io import open_shard
from gandist.data.shards.tar import tar_members

log = logging.getLogger("gandist.data")
_LOG_FIRST = 20  # skips logged in full per worker; after that every 100th


def _why(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e)[:200]}"


class Reader:
    """`tag` names the worker in messages.  With `resampled` (training draws shards forever), 10 x (shards)
    + 10 shards in a row without a good sample is a DataError rather than a hang."""

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
                self.problem(f"shard {url}: cannot open ({_why(e)})")
                continue
            try:
                yield url, stream
            finally:
                try:
                    stream.close()  # a pipe: command's exit status is checked here
                except Exception as e:
                    self.problem(f"shard {url}: {_why(e)}")

    def _files(self, urls):
        for url, stream in self._streams(urls):
            try:
                for name, data in tar_members(stream):
                    yield {"fname": name, "data": data, "__url__": url}
            except Exception as e:
                self.problem(f"shard {url}: unreadable tar data ({_why(e)})")
            yield {}  # end of shard: webdataset's group_by_keys never joins samples across shards

    def raw(self, urls):
        """Raw samples (dicts of bytes) from the shards in `urls` (an iterable of urls or {'url': ...})."""
        return group_by_keys(self._files(urls), handler=self.handler)

    def decoded(self, samples):
        """(decoded item, key) of each good sample; bad ones are problems."""
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
