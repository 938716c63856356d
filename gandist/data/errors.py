"""The data package's errors, in one leaf module so that the shard writer (prepare, sources/) and the
shard reader (shards/) mean the same thing by each and import nothing of one another to raise them."""
from __future__ import annotations

from gandist.cli import ConfigError


class DataError(ConfigError):
    """data.* settings that cannot work with the shards (none exist, another resolution, no such labels,
    nothing readable); a ConfigError, so gandist-train reports it without a traceback."""


class PrepareError(Exception):
    """Bad input for gandist-prepare: the message names the file and says what is wrong."""


class BadSample(Exception):
    """One sample cannot be used (a corrupt image, a missing or unreadable label, another size); the
    message says why.  gandist-prepare stops on it or, with --skip-bad, skips and counts it; the shard
    reader always skips and counts it."""
