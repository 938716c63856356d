"""Atomic writes: a file is replaced whole or not at all, so a kill never leaves half a file behind."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Files are created as open() would: 0666 less the umask.  Some writers (safetensors) create theirs 0600,
# which on a shared cluster filesystem hides a run's weights from the rest of the user's group.
FILE_MODE = 0o666 & ~_umask()


def follow_umask(path: str | Path):
    os.chmod(path, FILE_MODE)


def fsync(path: str | Path):
    """Flush a file or directory to disk (best effort: some filesystems refuse it on directories)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


@contextmanager
def atomic_path(path: str | Path):
    """A temporary path beside `path` that replaces it (fsynced) when the block succeeds, removed if it raises."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        follow_umask(tmp)
        fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | Path, obj):
    write_text_atomic(path, json.dumps(obj, indent=1) + "\n")
