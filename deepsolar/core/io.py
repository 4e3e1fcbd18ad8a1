"""Files written whole or not at all, and content hashes.

Every output of the pipeline (tiles, masks, checkpoints, tables, GeoPackages, reports) is written
to a temporary file in the destination's folder and renamed over the destination, so a crash or a
Ctrl-C never leaves half a file where a finished one is expected.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _shared_mode(path: str | Path) -> None:
    """Give a temp file normal permissions (``mkstemp`` makes 0600; outputs are shared)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextmanager
def atomic_output(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; on success rename it over ``path``.

    Args:
        path: the destination file; its folder is created.
        suffix: the temporary file's suffix (some writers pick the format from it, e.g. ``.png``).

    Yields:
        The temporary path to write (it exists, empty). On an exception it is removed and
        ``path`` is left untouched.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _shared_mode(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_bytes(
    path: Path, data: bytes, *, fsync: bool = True, shared: bool = False
) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``.

    The temp name is fixed per destination (``.{name}.part``) because one tile is written by one
    thread at a time (the store folder is locked), so a ``.part`` left by a killed run is reused
    and renamed away when that tile is redone. ``shared`` (the disk cache, which several threads
    may fill with the same entry) makes the temp name unique per thread instead.

    Args:
        path: destination file; its folder is created.
        data: the bytes.
        fsync: flush to disk before the rename (tiles: yes; caches: no).
        shared: several threads may write the same destination at once.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    unique = f".{os.getpid()}-{threading.get_ident()}" if shared else ""
    tmp = path.with_name(f".{path.name}{unique}.part")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in ``chunk``-byte blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
