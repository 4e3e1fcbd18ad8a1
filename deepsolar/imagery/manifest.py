"""Tile store manifest: an append-only journal while downloading, a GeoPackage at the end.

A tile store is a folder::

    out_dir/
      tiles/{zoom}-{size}/{x}/{y}.png   one PNG per grid tile
      manifest.journal.jsonl            one JSON record per finished tile, fsynced (crash-safe)
      manifest.gpkg                     layer ``tiles``: the journal folded to one row per tile

The journal is the source of truth while a download runs: a record is appended (and fsynced) only
after the tile's PNG has been renamed into place, so a killed run loses nothing and a re-run
resumes from it. The manifest is rebuilt from the journal (last record per tile wins, so every
tile appears exactly once) and written atomically (temp file + rename).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import pandas as pd

from deepsolar.core.errors import InputDataError, OutputError
from deepsolar.core.io import (
    atomic_output,
    iter_json_lines,
    last_per_key,
    reading_input,
    write_table_atomic,
)
from deepsolar.geo.tiling import LONLAT, Tile

log = logging.getLogger(__name__)

JOURNAL_NAME = "manifest.journal.jsonl"
MANIFEST_NAME = "manifest.gpkg"
MANIFEST_LAYER = "tiles"
TILES_DIRNAME = "tiles"

# ok: the tile's image, complete. partial: an image, but part of the tile has no imagery (black
# there; e.g. an XYZ server with gaps and missing_tiles: outside) - not used by later stages.
# outside: no imagery at all for this tile. failed: no image (see the error column; re-run).
TileStatus = Literal["ok", "partial", "failed", "outside"]
STATUSES: tuple[str, ...] = ("ok", "partial", "failed", "outside")
_TILE_ID = re.compile(r"(\d{1,2})-(\d{1,5})-(\d{1,10})-(\d{1,10})")

# Column order of the manifest (geometry last, as GeoPackage readers show it).
MANIFEST_COLUMNS: tuple[str, ...] = (
    "tile_id",
    "zoom",
    "tile_size_px",
    "x",
    "y",
    "m_per_px",
    "source",
    "status",
    "checksum",
    "path",
    "error",
    "fetched_at",
)


@dataclass(frozen=True)
class TileRecord:
    """What happened to one tile: one journal line, one manifest row."""

    tile_id: str
    zoom: int
    tile_size_px: int
    x: int
    y: int
    m_per_px: float
    source: str
    status: TileStatus
    checksum: str | None = None  # sha256 hex of the PNG bytes (status "ok" only)
    path: str | None = None  # PNG path relative to the store folder, POSIX separators
    error: str | None = None  # why it failed (status "failed" only); secrets already redacted
    fetched_at: str | None = None  # ISO 8601 UTC

    @classmethod
    def for_tile(cls, tile: Tile, source: str, status: TileStatus, **kw: Any) -> TileRecord:
        """The record of ``tile``, its grid fields and ground resolution filled in.

        Args:
            tile: The grid tile.
            source: The imagery source's name.
            status: ``ok``, ``partial``, ``outside`` or ``failed``.
            **kw: ``checksum``, ``path``, ``error``, ``fetched_at``.

        Returns:
            The record.
        """
        return cls(
            tile_id=tile.id,
            zoom=tile.zoom,
            tile_size_px=tile.size_px,
            x=tile.x,
            y=tile.y,
            m_per_px=tile.m_per_px,
            source=source,
            status=status,
            **kw,
        )

    @property
    def tile(self) -> Tile:
        """The grid tile this record describes."""
        return Tile(self.zoom, self.tile_size_px, self.x, self.y)

    def to_json(self) -> str:
        """The record as one compact JSON line (sorted keys, no newline).

        Returns:
            The JSON text.
        """
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    def problem(self) -> str | None:
        """Why this record cannot be trusted (a tampered or foreign journal line), or None.

        The id and the PNG path are fully determined by zoom, tile size, x and y; anything else
        (``../`` in an id, a path pointing outside the store) is refused, so no path read from a
        journal can lead a later stage outside its tile store.

        Returns:
            Why the record is refused, or None when it is consistent.
        """
        ints = (self.zoom, self.tile_size_px, self.x, self.y)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints):
            return "zoom, tile_size_px, x and y must be integers"
        if not (0 <= self.zoom <= 30 and 1 <= self.tile_size_px <= 8192):
            return "zoom or tile_size_px out of range"
        side = -(-256 * 2**self.zoom // self.tile_size_px)
        if not (0 <= self.x < side and 0 <= self.y < side):
            return "x or y outside the tile grid"
        if self.tile_id != f"{self.zoom}-{self.tile_size_px}-{self.x}-{self.y}":
            return "tile_id does not match zoom, tile_size_px, x and y"
        if self.path is not None and self.path != tile_relpath(self.tile):
            return f"path is not {tile_relpath(self.tile)}"
        if self.status not in STATUSES:
            return "unknown status"
        return None


def tile_relpath(tile: Tile) -> str:
    """Where a tile's PNG lives inside the store folder (POSIX separators).

    Args:
        tile: The grid tile.

    Returns:
        ``tiles/{zoom}-{size_px}/{x}/{y}.png``, relative to the store folder.
    """
    return f"{TILES_DIRNAME}/{tile.zoom}-{tile.size_px}/{tile.x}/{tile.y}.png"


class TileJournal:
    """Append-only JSON-lines journal; each record is flushed and fsynced before returning.

    Args:
        path: The journal file; its folder is created, a torn last line is closed.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._repair_tail()

    def _repair_tail(self) -> None:
        # A run killed mid-write can leave a last line without its newline; start on a fresh line
        # so the next record is not glued onto the torn one.
        size = self.path.stat().st_size
        if size:
            with open(self.path, "rb") as fh:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    self._fh.write("\n")
                    self._fh.flush()

    def append(self, record: TileRecord) -> None:
        """Write one record as a line, flushed and fsynced (a killed run loses nothing).

        Args:
            record: The tile's record.
        """
        self._fh.write(record.to_json() + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        """Close the journal file (idempotent)."""
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> TileJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_journal(path: str | Path) -> Iterator[TileRecord]:
    """Records of a journal in order; a torn or garbled line (a killed run) is skipped.

    Args:
        path: the store's ``manifest.journal.jsonl``.

    Yields:
        Each record; an InputDataError for a line that cannot be trusted (see
        :meth:`TileRecord.problem`).
    """
    p = Path(path)
    fields = set(TileRecord.__dataclass_fields__)

    def skip(lineno: int, err: Exception) -> None:
        log.warning("skipping unreadable journal line %d of %s (%s)", lineno, p, type(err).__name__)

    for lineno, data in iter_json_lines(p, on_garbled=skip):
        try:
            rec = TileRecord(**{k: v for k, v in data.items() if k in fields})
        except (TypeError, AttributeError) as err:
            skip(lineno, err)
            continue
        why = rec.problem()
        if why is not None:
            raise InputDataError(
                f"journal line {lineno} cannot be trusted: {why}",
                where=str(p),
                fix="the journal was edited or comes from another program; delete that line "
                "(its tile is downloaded again) or the whole store",
            )
        yield rec


def read_journal(path: str | Path) -> dict[str, TileRecord]:
    """The latest record of each tile in a journal (last record wins).

    Args:
        path: the store's ``manifest.journal.jsonl`` (missing: no records).

    Returns:
        ``{tile_id: record}``, ordered by each tile's latest record.
    """
    return last_per_key(iter_journal(path), key=lambda rec: rec.tile_id)


def records_to_frame(records: Iterable[TileRecord]) -> gpd.GeoDataFrame:
    """A GeoDataFrame with one row per record and the tile footprint (EPSG:4326) as geometry.

    Args:
        records: Tile records.

    Returns:
        The manifest frame: ``MANIFEST_COLUMNS`` (``m_per_px`` in ground m/px, ``fetched_at`` as
        UTC datetimes) and the footprints in EPSG:4326.
    """
    recs = list(records)
    df = pd.DataFrame([asdict(r) for r in recs], columns=list(MANIFEST_COLUMNS))
    df = df.astype(
        {
            "tile_id": "string",
            "zoom": "int32",
            "tile_size_px": "int32",
            "x": "int64",
            "y": "int64",
            "m_per_px": "float64",
            "source": "string",
            "status": "string",
            "checksum": "string",
            "path": "string",
            "error": "string",
        }
    )
    df["fetched_at"] = pd.to_datetime(df["fetched_at"], utc=True, format="ISO8601")
    geometry = [r.tile.footprint() for r in recs]
    return gpd.GeoDataFrame(df, geometry=geometry, crs=LONLAT)


def write_manifest(
    records: Iterable[TileRecord], path: str | Path, *, parquet: bool = False
) -> Path:
    """Write records as a GeoPackage (layer ``tiles``) or GeoParquet, atomically.

    The file is written under a temporary name in the same folder and renamed into place, so a
    reader never sees a half-written manifest.

    Args:
        records: Tile records; rows are sorted by grid position (zoom, size, y, x).
        path: The manifest file to write.
        parquet: Write GeoParquet instead of a GeoPackage.

    Returns:
        The path written.
    """
    import pyogrio

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    gdf = records_to_frame(records)
    # Row order by grid position, not by download completion (threads finish in any order), so the
    # same tiles always give the same manifest and everything read from it is reproducible.
    gdf = gdf.sort_values(["zoom", "tile_size_px", "y", "x"], kind="stable", ignore_index=True)
    # Nullable string columns go to GDAL as plain object strings.
    for col in ("tile_id", "source", "status", "checksum", "path", "error"):
        gdf[col] = gdf[col].astype(object).where(gdf[col].notna(), None)
    # Temp names match remove_stale_temp_files' pattern (.manifest.*.tmp.*).
    if parquet:
        return write_table_atomic(gdf, out, fmt="parquet")
    # GDAL creates the GeoPackage itself (create=False)
    with atomic_output(out, suffix=".tmp.gpkg", create=False) as tmp:
        pyogrio.write_dataframe(
            gdf,
            tmp,
            layer=MANIFEST_LAYER,
            driver="GPKG",
            dataset_options={"VERSION": "1.2"},
        )
    return out


def build_manifest(out_dir: str | Path, *, parquet: bool = False) -> Path:
    """Fold a store's journal into its manifest (``manifest.gpkg``, or ``.parquet``).

    Args:
        out_dir: The tile store folder.
        parquet: Write ``manifest.parquet`` instead of ``manifest.gpkg``.

    Returns:
        The manifest path.

    Raises:
        InputDataError: If a journal line cannot be trusted.
    """
    d = Path(out_dir)
    records = read_journal(d / JOURNAL_NAME).values()
    name = Path(MANIFEST_NAME).with_suffix(".parquet").name if parquet else MANIFEST_NAME
    return write_manifest(records, d / name, parquet=parquet)


def read_manifest(path: str | Path) -> gpd.GeoDataFrame:
    """Read a tile manifest: a ``.gpkg`` / ``.parquet`` file, or a tile store folder.

    Args:
        path: The manifest file, or a store folder holding ``manifest.gpkg`` or
            ``manifest.parquet``.

    Returns:
        The manifest, one row per tile, footprints in EPSG:4326.

    Raises:
        InputDataError: If no manifest is found, it cannot be read, lacks columns, or has a row
            whose id or path does not match its grid position.
    """
    p = Path(path)
    if p.is_dir():
        candidates = [p / MANIFEST_NAME, p / Path(MANIFEST_NAME).with_suffix(".parquet").name]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise InputDataError(
                "no tile manifest in this folder",
                where=str(p),
                fix="download tiles into it first, or rebuild the manifest from its journal "
                "with deepsolar.imagery.manifest.build_manifest(folder)",
            )
        p = found
    if not p.is_file():
        raise InputDataError(
            "tile manifest not found", where=str(p), fix="pass the manifest.gpkg of a tile store"
        )
    with reading_input(
        "cannot read the tile manifest",
        where=p,
        fix="rebuild it from the journal with deepsolar.imagery.manifest.build_manifest(folder)",
    ):
        if p.suffix.lower() == ".parquet":
            gdf = gpd.read_parquet(p)
        else:
            gdf = gpd.read_file(p, layer=MANIFEST_LAYER, engine="pyogrio")
    missing = [c for c in MANIFEST_COLUMNS if c not in gdf.columns]
    if missing:
        raise InputDataError(
            f"not a tile manifest: columns {missing} are missing",
            where=str(p),
            fix="pass a manifest written by deepsolar.imagery.download.download_tiles",
        )
    _check_manifest_rows(gdf, p)
    return gdf


def _check_manifest_rows(gdf: gpd.GeoDataFrame, where: Path) -> None:
    """Every id and path is the one its zoom/size/x/y determine.

    Later stages build file paths from them, so a tampered row (``../`` in an id, an absolute
    path) must never reach them.
    """
    if gdf.empty:
        return
    try:
        z, s, x, y = (gdf[c].astype("int64") for c in ("zoom", "tile_size_px", "x", "y"))
    except (ValueError, TypeError):
        bad = None
    else:
        ids = z.astype(str) + "-" + s.astype(str) + "-" + x.astype(str) + "-" + y.astype(str)
        rel = TILES_DIRNAME + "/" + z.astype(str) + "-" + s.astype(str) + "/" + x.astype(str)
        rel = rel + "/" + y.astype(str) + ".png"
        path = gdf["path"].astype(object)
        good = gdf["tile_id"].astype(object).eq(ids) & (path.isna() | path.eq(rel))
        good &= (x >= 0) & (y >= 0) & z.between(0, 30) & s.between(1, 8192)
        good &= gdf["status"].isin(STATUSES)
        bad = None if bool(good.all()) else int((~good).to_numpy().argmax())
        if bad is None:
            return
    row = f"row {bad + 1}" if bad is not None else "the zoom/x/y columns"
    raise InputDataError(
        f"the tile manifest cannot be trusted: {row} has a tile_id or path that does not match "
        "its zoom, tile_size_px, x and y (paths must stay inside the tile store)",
        where=str(where),
        fix="rebuild it from the store's journal with deepsolar.imagery.manifest.build_manifest(folder), "
        "or download the tiles again",
    )


def resolve_inside(store: str | Path, rel: str, what: str = "path") -> Path:
    """``store / rel``, if it stays inside ``store`` (journal and table paths are untrusted).

    Args:
        store: The tile store folder.
        rel: A path relative to the store, as read from a journal or table.
        what: The path's name in the error message (e.g. ``mask_path``).

    Returns:
        The resolved absolute path.

    Raises:
        InputDataError: If ``rel`` is absolute or leads outside ``store`` (``..``, a symlink).
    """
    root = Path(store).resolve()
    target = (root / rel).resolve()
    if Path(rel).is_absolute() or not target.is_relative_to(root):
        raise InputDataError(
            f"{what} {str(rel)[:200]!r} points outside the tile store",
            where=str(root),
            fix="the journal or table was edited or comes from elsewhere; rebuild it (delete "
            "the journal lines or the file) instead of trusting it",
        )
    return target


def check_journal_paths(
    store: str | Path, journal: str | Path, path_keys: tuple[str, ...] = ("mask_path",)
) -> None:
    """Refuse a later stage's JSON-lines journal whose ids or paths cannot be trusted.

    E.g. ``segmentation.journal.jsonl``: every tile id must be a grid id and every path under
    ``path_keys`` must stay inside ``store``.

    Args:
        store: The tile store folder.
        journal: The journal file.
        path_keys: Record keys holding store-relative paths.

    Raises:
        InputDataError: Naming the first line with a bad tile id or a path leading outside.
    """
    p = Path(journal)
    for lineno, rec in iter_json_lines(p):  # a torn line: the stage's own reader skips it
        if not isinstance(rec, dict):
            continue
        tid = rec.get("tile_id")
        if tid is not None and not (isinstance(tid, str) and _TILE_ID.fullmatch(tid)):
            raise InputDataError(
                f"journal line {lineno} cannot be trusted: tile_id {str(tid)[:200]!r} is "
                "not a grid tile id",
                where=str(p),
                fix="delete that line (the tile is processed again) or the whole journal",
            )
        for key in path_keys:
            rel = rec.get(key)
            if rel is not None:
                try:
                    resolve_inside(store, str(rel), key)
                except InputDataError as err:
                    err.what = f"journal line {lineno} cannot be trusted: {err.what}"
                    err.where = str(p)
                    raise


# --------------------------------------------------------------------------------------------
# Output-folder faults

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
_FILE_IN_THE_WAY = (errno.ENOTDIR, errno.EEXIST, errno.EISDIR)
_MIN_FREE_BYTES = 1 << 20


def output_error(err: BaseException, out_dir: str | Path) -> OutputError | None:
    """The OutputError an OSError (or a GDAL / SQLite error) writing into ``out_dir`` stands for.

    Args:
        err: The error raised while writing.
        out_dir: The output folder being written.

    Returns:
        An OutputError for a full disk, a read-only folder or a file in the way; None if it is
        not an output-folder fault.
    """
    out = Path(out_dir)
    code = getattr(err, "errno", None)
    text = str(err)
    if code in _NO_SPACE or "No space left" in text or _disk_full(out):
        return OutputError(
            "no space left on the device holding the output folder",
            where=str(out),
            fix="free disk space (or choose an out_dir on a bigger disk), then re-run: finished "
            "tiles are kept and only the missing ones are fetched",
        )
    if code in _NOT_WRITABLE or "readonly" in text.lower() or "read-only" in text.lower():
        return OutputError(
            f"the output folder cannot be written ({os.strerror(code) if code else text[:200]})",
            where=str(getattr(err, "filename", None) or out),
            fix="choose an out_dir you can write to, or fix the folder's permissions / mount",
        )
    if code in _FILE_IN_THE_WAY:
        return OutputError(
            f"a file is in the way of the output folder ({os.strerror(code)})",
            where=str(getattr(err, "filename", None) or out),
            fix="choose another out_dir, or move the file that has the folder's name away",
        )
    return None


def _disk_full(out: Path) -> bool:
    p = out
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free < _MIN_FREE_BYTES
    except OSError:
        return False


def remove_stale_temp_files(out_dir: str | Path) -> list[Path]:
    """Delete temp files an interrupted manifest write left.

    These are ``.manifest.*.tmp.gpkg`` and its SQLite side files. Call it only while holding the
    store's lock.

    Args:
        out_dir: The tile store folder.

    Returns:
        The files removed.
    """
    removed = []
    stem = Path(MANIFEST_NAME).stem
    for p in Path(out_dir).glob(f".{stem}.*.tmp.*"):
        if p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    if removed:
        log.info("removed %d temp file(s) of an interrupted manifest write", len(removed))
    return removed
