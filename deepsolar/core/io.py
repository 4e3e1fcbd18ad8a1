"""Files written whole or not at all, content hashes, JSON-lines journals, and read errors.

Every output of the pipeline (tiles, masks, checkpoints, tables, GeoPackages, reports) is written
to a temporary file in the destination's folder and renamed over the destination, so a crash or a
Ctrl-C never leaves half a file where a finished one is expected.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from deepsolar.core.errors import InputDataError

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


def _shared_mode(path: str | Path) -> None:
    """Give a temp file normal permissions (``mkstemp`` makes 0600; outputs are shared)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


# Files SQLite (GeoPackage) may leave beside a database it wrote.
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


@contextmanager
def atomic_output(path: str | Path, suffix: str = ".tmp", *, create: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; on success rename it over ``path``.

    Args:
        path: the destination file; its folder is created.
        suffix: the temporary file's suffix (some writers pick the format from it, e.g. ``.png``).
        create: the temporary file exists (empty) when yielded; False for writers that must
            create it themselves (GDAL refuses to write a GeoPackage into an existing file).

    Yields:
        The temporary path to write. On an exception it is removed (with any SQLite side file
        beside it) and ``path`` is left untouched.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    if not create:
        tmp.unlink()
    try:
        yield tmp
        _shared_mode(tmp)
        os.replace(tmp, dest)
    finally:
        for leftover in (tmp, *(Path(f"{tmp}{side}") for side in _SQLITE_SIDE_FILES)):
            leftover.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    Args:
        path: the destination file; its folder is created.
        text: the whole content.

    Returns:
        ``path``.
    """
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


TableFormat = Literal["csv", "parquet"]
_TABLE_SUFFIXES: dict[str, TableFormat] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def write_table_atomic(
    df: pd.DataFrame, path: str | Path, *, fmt: TableFormat | None = None, index: bool = False
) -> Path:
    """Write a table (a DataFrame or GeoDataFrame) as CSV or Parquet, atomically.

    The table goes to a temporary ``.{name}.*.tmp.{fmt}`` file beside ``path`` that is renamed
    over ``path`` once written (see :func:`atomic_output`).

    Args:
        df: the table.
        path: the destination file; its folder is created.
        fmt: ``csv`` or ``parquet``; None: chosen by ``path``'s suffix (``.csv``, ``.parquet``
            or ``.pq``).
        index: also write the frame's index (pandas' ``index`` argument of ``to_csv`` /
            ``to_parquet``).

    Returns:
        ``path``.

    Raises:
        ValueError: if ``fmt`` is not ``csv`` or ``parquet``, or is None and the suffix names
            neither.
    """
    dest = Path(path)
    kind = fmt if fmt is not None else _TABLE_SUFFIXES.get(dest.suffix.lower())
    if kind not in ("csv", "parquet"):
        raise ValueError(
            f"unknown table format {fmt!r}"
            if fmt is not None
            else f"cannot tell the table format of {dest.name!r} (use .csv or .parquet)"
        )
    with atomic_output(dest, suffix=f".tmp.{kind}") as tmp:
        if kind == "csv":
            df.to_csv(tmp, index=index)
        else:
            df.to_parquet(tmp, index=index)
    return dest


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
    """Hex sha256 of a file's bytes, read in ``chunk``-byte blocks.

    Args:
        path: the file.
        chunk: bytes read at a time.

    Returns:
        The 64-character lowercase hex digest.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def iter_json_lines(
    path: str | Path, on_garbled: Callable[[int, Exception], None] | None = None
) -> Iterator[tuple[int, Any]]:
    """The decoded lines of a JSON-lines journal, in order; nothing if the file does not exist.

    A line that is not JSON (the torn last line of a killed run, or a garbled one) is skipped;
    blank lines are skipped silently. Bytes that are not UTF-8 read as U+FFFD.

    Args:
        path: the journal file.
        on_garbled: told ``(line number, error)`` of each skipped non-JSON line.

    Yields:
        ``(line number (1-based), decoded value)``; the value may be any JSON type.
    """
    p = Path(path)
    if not p.is_file():
        return
    with open(p, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                if on_garbled is not None:
                    on_garbled(lineno, err)
                continue
            yield lineno, value


def last_per_key(records: Iterable[T], key: Callable[[T], K]) -> dict[K, T]:
    """Fold a journal's records to the last one per key (a later record supersedes earlier ones).

    Args:
        records: records in journal order.
        key: a record's key (e.g. its tile id).

    Returns:
        ``{key: last record}``, ordered by each key's last record.
    """
    latest: dict[K, T] = {}
    for rec in records:
        k = key(rec)
        latest.pop(k, None)  # re-insert so dict order follows the latest record
        latest[k] = rec
    return latest


@contextmanager
def reading_input(what: str, where: str | Path, fix: str) -> Iterator[None]:
    """Turn any error raised while reading an input file into one InputDataError.

    Readers (pyogrio, pyarrow, torch, pickle) raise many exception types for a file that is
    missing, truncated or of the wrong kind; all mean "cannot read this input".

    Args:
        what: what could not be done, e.g. "cannot read the tile manifest"; the error's type and
            message are appended in parentheses.
        where: the file (or files) read.
        fix: what the user should do.

    Yields:
        Nothing; wrap the read in ``with reading_input(...):``.
    """
    try:
        yield
    except Exception as err:  # noqa: BLE001 - every reader error is the input's fault
        raise InputDataError(
            f"{what} ({type(err).__name__}: {err})", where=str(where), fix=fix
        ) from None
