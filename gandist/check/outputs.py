"""output.dir from every rank: writable, the same directory on every node (so a node-local disk is found here,
not at the first checkpoint), with room for checkpoint.keep + 1 checkpoints.  It writes only in a scratch
folder, and removes what it made."""
from __future__ import annotations

import shutil
from pathlib import Path

from gandist.check.report import FAIL, INFO, PASS, Row, errors, listed
from gandist.distributed import where
from gandist.training import checkpoint
from gandist.training.disk import estimate_checkpoint, free_bytes, human, size
from gandist.utils.files import fsync

SCRATCH = ".gandist-check-"


def scratch(out: Path, token: str) -> Path:
    return out / f"{SCRATCH}{token}"


def made_from(out: Path) -> str | None:
    """The outermost folder of out that does not exist yet (what making out creates), or None."""
    top = None
    for p in [out.absolute(), *out.absolute().parents]:
        if p.exists():
            break
        top = p
    return str(top) if top else None


def write(out: Path, token: str, rank: int) -> dict:
    """This rank's file in the scratch folder, holding the token and who wrote it."""
    created = made_from(out)
    try:
        scratch(out, token).mkdir(parents=True, exist_ok=True)
        f = scratch(out, token) / f"rank{rank}"
        f.write_text(f"{token} {where()}\n")
        fsync(f)
    except OSError as e:
        raise OSError(f"cannot write in output.dir {out}: {e.strerror or e}"
                      + (f" ({e.filename})" if e.filename else "")) from None
    return {"dir": str(out.resolve()), "created": created}


def read_back(out: Path, token: str, writers: list[dict]) -> int:
    """The files the `writers` (rank 0 and the first rank of each node) wrote, read here; how many."""
    unseen = []
    for w in writers:
        f = scratch(out, token) / f"rank{w['rank']}"
        try:
            ok = f.read_text().split()[0] == token
        except (OSError, IndexError):
            ok = False
        if not ok:
            unseen.append(w["where"])
    if unseen:
        raise FileNotFoundError(f"does not see the file {', '.join(unseen)} wrote in output.dir {out}: not the same "
                                f"directory on every node (a node-local disk? another output.dir?)")
    return len(writers)


def writable_row(found: list[dict]) -> Row:
    dirs = sorted({f["value"]["dir"] for f in found if "value" in f})
    return Row("output.dir", "writable", FAIL, listed(errors(found))) if errors(found) else \
        Row("output.dir", "writable", PASS, f"{', '.join(dirs)}: written from every rank")


def shared_row(found: list[dict], writers: list[dict]) -> Row:
    if not writers:
        return Row("output.dir", "same on every node", INFO, "no rank could write there: nothing to read back")
    if len(found) == 1:
        return Row("output.dir", "same on every node", PASS, "1 process: its own file read back")
    bad = errors(found)
    if bad:
        return Row("output.dir", "same on every node", FAIL, listed(bad))
    return Row("output.dir", "same on every node", PASS, f"every rank read the file of "
               f"{', '.join(w['where'] for w in writers)} (the first rank of each node)")


def room(out: Path, models, keep: int) -> dict:
    """Free bytes at output.dir, and what checkpoint.keep + 1 checkpoints take (newest one's size, else estimated)."""
    newest = checkpoint.latest(out)
    one = size(newest) if newest else estimate_checkpoint(models)
    return {"free": free_bytes(out), "one": one, "needed": (keep + 1) * one, "measured": newest is not None}


def room_row(found: dict, out: Path, keep: int) -> Row:
    """Rank 0's finding: it writes the checkpoints."""
    if "error" in found:
        return Row("output.dir", "room for checkpoints", FAIL, f"{found['where']}: {found['error']}")
    v = found["value"]
    what = (f"checkpoint.keep={keep} + 1 checkpoints of {human(v['one'])} "
            f"({'the newest one there' if v['measured'] else 'estimated from the models'})")
    if v["free"] < v["needed"]:
        return Row("output.dir", "room for checkpoints", FAIL, f"{found['where']}: {human(v['free'])} free at {out}; "
                   f"{what} need {human(v['needed'])}: free space, or lower checkpoint.keep")
    return Row("output.dir", "room for checkpoints", PASS, f"{human(v['free'])} free; {what} need {human(v['needed'])}")


def clean(out: Path, token: str, created: str | None) -> None:
    """Once every rank has read: remove the scratch folder, and the folders made for output.dir if empty."""
    shutil.rmtree(scratch(out, token), ignore_errors=True)
    if created is None:
        return
    for p in [out.absolute(), *out.absolute().parents]:
        try:
            p.rmdir()
        except OSError:
            return  # not empty (another rank's files, or a run started meanwhile): it stays
        if str(p) == created:
            return
