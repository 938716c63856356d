"""The data package's errors, in one leaf module so that the shard writer (prepare, sources/) and the
shard reader (shards/) mean the same thing by each and import nothing of one another to raise them."""
from __future__ import annotations

from gandist.cli import ConfigError


class DataError(ConfigError):
    """data.* settings the shards cannot serve; a ConfigError, so reported without a traceback."""


class PrepareError(Exception):
    """Bad input for gandist-prepare: the message names the file and says what is wrong."""


class BadSample(Exception):
    """One unusable sample, the message saying why: gandist-prepare stops on it (--skip-bad: skips and counts
    it), the shard reader always skips and counts it."""
