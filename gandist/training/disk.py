"""The run directory's disk: a warning while there is still room, and a clear error when a write fails.

A checkpoint, final/, a sample grid or a plot that cannot be written for lack of space (ENOSPC, EDQUOT)
or an I/O error (EIO) stops the run with one message -- the path, the bytes it needed, the bytes free,
what to do -- instead of a traceback from deep in torch (whose writer reports a full disk as
"unexpected pos ..." without an errno, so a failed write is also judged by the space left after it).
The partial temporary checkpoint is removed; every earlier checkpoint is untouched, since a checkpoint
only replaces older ones once it is complete.
"""
from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from gandist.training import checkpoint

FULL = {errno.ENOSPC, errno.EDQUOT, errno.EIO}


class DiskFull(Exception):
    """A write of the run failed for lack of space or an I/O error; the message says what to do."""


def free_bytes(path: str | Path) -> int:
    """Free bytes on the filesystem that holds `path` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def size(path: str | Path) -> int:
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else 0


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _errno_in_chain(e: BaseException) -> int | None:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in FULL:
            return e.errno
        e = e.__cause__ or e.__context__
    return None


def estimate_checkpoint(models) -> int:
    """Bytes a checkpoint of `models` takes, before one exists: G's and D's weights, their optimizers'
    moments (two each for Adam: the larger case), and the EMA copy of G."""
    def nbytes(m):
        return sum(t.numel() * t.element_size() for t in [*m.parameters(), *m.buffers()])
    g, d = nbytes(models.G_raw), nbytes(models.D_raw)
    return 3 * (g + d) + (g if models.ema is not None else 0)


@contextmanager
def writing(what: str, path: str | Path, needed: int, keep: int, run_dir: Path, cleanup=None):
    """Run the block that writes `what` at `path` in the run `run_dir`; a failure for lack of space becomes
    DiskFull (after `cleanup()` removed the partial write), any other error passes unchanged."""
    try:
        yield
    except Exception as e:
        free = free_bytes(path)  # before the cleanup gives the partial write's space back
        if cleanup is not None:
            cleanup()
        code = _errno_in_chain(e)
        if code is None and free >= needed:
            raise
        cause = f"{errno.errorcode[code]}: {os.strerror(code)}" if code else "no space left on the device"
        newest = checkpoint.latest(run_dir)
        kept = f"every earlier checkpoint is intact (newest: {newest})" if newest else "no checkpoint was written yet"
        raise DiskFull(f"could not write {what} {path} ({cause}): it needs about {human(needed)}, and "
                       f"{human(free)} is free there. Free some space (or lower checkpoint.keep={keep}), then run "
                       f"the same command with train.resume=auto; {kept}") from None


def warn_if_low(path: str | Path, needed: int, saves: int, say) -> bool:
    """Say so when fewer than `saves` writes of `needed` bytes fit at `path`; True when it did."""
    free = free_bytes(path)
    if free >= saves * needed:
        return False
    say(f"[yellow]warning: {human(free)} free under {path}, and a checkpoint takes about {human(needed)}: "
        f"{'the next save may fail' if free < needed else f'room for fewer than {saves}'} "
        f"(free space, or lower checkpoint.keep)")
    return True

