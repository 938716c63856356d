"""gandist's one tar reader: tarfile (under webdataset) spends 15x longer per member (140 us against 9 us),
as much as decoding the image.  One pass over a stream; ustar, GNU long names and pax paths are understood.
"""
from __future__ import annotations

from pathlib import Path

BLOCK = 512


class TarError(ValueError):
    """Damaged tar data; a stream cannot be resynchronised, so the rest of that shard is lost."""


def _octal(field: bytes, what: str) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256, for sizes over 8 GB
        return int.from_bytes(field[1:], "big")
    try:
        return int(field.split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        raise TarError(f"bad {what} field {field!r}") from None


def _header(h: bytes, pos: int) -> tuple[int, bytes]:
    """(member size, type flag) of the header block at byte `pos`; TarError if its checksum is wrong."""
    if _octal(h[148:156], "checksum") != sum(h[:148]) + 256 + sum(h[156:]):
        raise TarError(f"bad header checksum at byte {pos}")
    return _octal(h[124:136], "size"), h[156:157]


def _skip(f, n: int):
    """Past n bytes of member data: a seek where possible (counting reads only headers), else a read."""
    if n and getattr(f, "seekable", lambda: False)():
        f.seek(n, 1)
    else:
        f.read(n)


def tar_members(f, *, data: bool = True):
    """(name, bytes) of each regular file; data=False skips the data (fine for counting, blind to a
    truncated last member).  TarError for a bad checksum or a short member."""
    pos, long_name = 0, None
    while True:
        h = f.read(BLOCK)
        if len(h) < BLOCK:
            if h.strip(b"\0"):
                raise TarError(f"truncated header at byte {pos}")
            return
        if not h.strip(b"\0"):
            return  # the end-of-archive zero block
        size, kind = _header(h, pos)
        pad = -size % BLOCK
        body = None
        if data or kind in (b"L", b"x"):  # long names and pax records are always read
            body = f.read(size)
            if len(body) < size:
                raise TarError(f"member truncated at byte {pos + BLOCK + len(body)} ({size} expected)")
            f.read(pad)
        else:
            _skip(f, size + pad)
        pos += BLOCK + size + pad
        if kind == b"L":  # GNU: the next member's long name
            long_name = body.split(b"\0", 1)[0].decode("utf-8", "replace")
        elif kind == b"x":  # pax: the next member's attributes, "LEN key=value\n" records
            for rec in body.decode("utf-8", "replace").splitlines():
                key, _, value = rec.partition(" ")[2].partition("=")
                if key == "path":
                    long_name = value
        elif kind in (b"0", b"\0", b"7"):
            name = h[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
            if h[257:263] == b"ustar\0" and h[345] != 0:
                name = h[345:500].split(b"\0", 1)[0].decode("utf-8", "replace") + "/" + name
            yield (long_name or name), body
            long_name = None
        else:  # directories, links, global pax headers: nothing to read
            long_name = None


def is_tar(path: str | Path) -> bool:
    """Does the file begin with a valid tar header (unlike a failed download's error page)?"""
    with open(path, "rb") as f:
        h = f.read(BLOCK)
    if len(h) < BLOCK or not h.strip(b"\0"):
        return False
    try:
        _header(h, 0)
    except TarError:
        return False
    return True
