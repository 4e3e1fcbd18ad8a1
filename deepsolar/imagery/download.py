"""Tile stores filled by :func:`download_tiles`, one of the project's two network users.

Every request goes through :class:`~deepsolar.core.http.HttpFetcher`.

``download_tiles`` writes each grid tile as a PNG (temp file + ``os.replace``), appends one
fsynced journal record per tile (so a killed run loses nothing), skips what is already done on a
re-run, and writes the tile manifest atomically at the end.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from tqdm import tqdm

from deepsolar.core.errors import DeepSolarError, DownloadError, OutputError, SourceError
from deepsolar.core.http import (
    BadBody,
    DownloadConfig,
    FetchCancelled,
    HttpFetcher,
    decode_image,
    redact,
    redact_logs,
)
from deepsolar.core.io import atomic_write_bytes
from deepsolar.geo.tiling import Tile
from deepsolar.imagery.manifest import (
    JOURNAL_NAME,
    MANIFEST_NAME,
    TileJournal,
    TileRecord,
    output_error,
    read_journal,
    remove_stale_temp_files,
    tile_relpath,
    write_manifest,
)

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

    from deepsolar.imagery.sources import ImagerySource

log = logging.getLogger(__name__)
redact_logs(__name__)

# --------------------------------------------------------------------------------------------
# Files


def encode_png(img: np.ndarray) -> bytes:
    """PNG bytes of an RGB uint8 (H, W, 3) image.

    Args:
        img: the tile's pixels, RGB order.

    Returns:
        The encoded PNG.
    """
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV only fails on invalid arrays, checked by the caller
        raise SourceError("cannot encode tile as PNG", fix="report this as a bug")
    return buf.tobytes()


# --------------------------------------------------------------------------------------------
# The tile loop


@dataclass
class DownloadSummary:
    """What one ``download_tiles`` run did.

    ``n_ok + n_partial + n_outside + n_failed`` is ``n_tiles``; ``elapsed_s`` is in seconds.
    """

    out_dir: Path
    source: str
    manifest_path: Path | None = None
    n_tiles: int = 0  # distinct tiles asked for in this run
    n_ok: int = 0  # tiles with an image at the end (fetched now or before)
    n_partial: int = 0  # tiles with an image only partly covered by the source (rest black)
    n_outside: int = 0  # tiles outside the source's coverage
    n_failed: int = 0  # tiles that failed after retries (re-run to retry them)
    n_skipped: int = 0  # tiles already done before this run (resume)
    n_fetched: int = 0  # tiles written in this run
    requests: int = 0
    retries: int = 0
    cache_hits: int = 0
    elapsed_s: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)  # first few (tile id, error)

    def count(self, rec: TileRecord, *, skipped: bool) -> None:
        """Count one tile's final record.

        Args:
            rec: The tile's final record.
            skipped: True when an earlier run did the tile (resume).
        """
        self.n_tiles += 1
        self.n_skipped += int(skipped)
        if rec.status in ("ok", "partial"):
            self.n_ok += rec.status == "ok"
            self.n_partial += rec.status == "partial"
            self.n_fetched += int(not skipped)
        elif rec.status == "outside":
            self.n_outside += 1
        else:
            self.n_failed += 1
            if len(self.failures) < 20:
                self.failures.append((rec.tile_id, rec.error or ""))


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class _OutDirLock:
    """An exclusive lock on the store folder, so two runs never write the same files."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / ".download.lock"
        self._fh = None

    def __enter__(self) -> _OutDirLock:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; run one download per folder
            return self
        self._fh = open(self.path, "a")  # noqa: SIM115 - closed in __exit__
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.close()
            self._fh = None
            raise SourceError(
                "another download is already writing into this folder",
                where=str(self.path.parent),
                fix="wait for it to finish (or stop it), or download into another folder",
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()


def _adopt_existing(tile: Tile, dest: Path, rel: str, source_name: str) -> TileRecord | None:
    """A PNG renamed into place by a run killed before it could journal it: keep it if valid."""
    try:
        data = dest.read_bytes()
        decode_image(data, (tile.size_px, tile.size_px))
    except (OSError, BadBody):
        dest.unlink(missing_ok=True)
        return None
    mtime = datetime.fromtimestamp(dest.stat().st_mtime, UTC).isoformat(timespec="milliseconds")
    return TileRecord.for_tile(
        tile,
        source_name,
        "ok",
        checksum=hashlib.sha256(data).hexdigest(),
        path=rel,
        fetched_at=mtime,
    )


def _fetch_one(
    tile: Tile,
    source: ImagerySource,
    fetcher: HttpFetcher | None,
    out_dir: Path,
    file_exists: bool,
) -> TileRecord:
    rel = tile_relpath(tile)
    dest = out_dir / rel
    if file_exists:
        adopted = _adopt_existing(tile, dest, rel, source.name)
        if adopted is not None:
            return adopted
    try:
        img, partial = source.fetch_tile_coverage(tile, fetcher)
    except DeepSolarError as err:
        if getattr(err, "fatal", False):
            raise
        return TileRecord.for_tile(
            tile, source.name, "failed", error=redact(str(err))[:2000], fetched_at=_now_iso()
        )
    except (FetchCancelled, KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as err:  # noqa: BLE001 - one tile's problem never aborts the run
        log.debug("tile %s failed", tile.id, exc_info=True)
        return TileRecord.for_tile(
            tile,
            source.name,
            "failed",
            error=redact(f"{type(err).__name__}: {' '.join(str(err).split())}")[:500],
            fetched_at=_now_iso(),
        )
    if img is None:
        return TileRecord.for_tile(tile, source.name, "outside", fetched_at=_now_iso())
    expected = (tile.size_px, tile.size_px, 3)
    if img.shape != expected or img.dtype != np.uint8:
        raise SourceError(
            f"source {source.name!r} returned an array of shape {img.shape} and dtype {img.dtype} "
            f"for tile {tile.id}, expected {expected} uint8",
            fix="report this as a bug in the imagery source",
        )
    png = encode_png(img)
    atomic_write_bytes(dest, png)
    return TileRecord.for_tile(
        tile,
        source.name,
        "partial" if partial else "ok",
        checksum=hashlib.sha256(png).hexdigest(),
        path=rel,
        fetched_at=_now_iso(),
    )


def _dedupe(tiles: Iterable[Tile]) -> Iterator[Tile]:
    seen: set[str] = set()
    for t in tiles:
        if t.id not in seen:
            seen.add(t.id)
            yield t


def download_tiles(
    tiles: Iterable[Tile],
    source: ImagerySource,
    out_dir: str | Path,
    config: DownloadConfig | None = None,
    progress: bool = True,
    *,
    on_tile: Callable[[TileRecord], None] | None = None,
    raise_on_failure: bool = True,
    manifest_parquet: bool = False,
) -> DownloadSummary:
    """Fetch ``tiles`` from ``source`` into the tile store ``out_dir``; resumable.

    Each tile ends as ``ok`` (PNG at ``tiles/{zoom}-{size}/{x}/{y}.png``), ``outside`` (not in the
    source's coverage) or ``failed`` (after retries; the error is recorded). Tiles done by an
    earlier run into the same folder are skipped. ``on_tile`` is called (in this thread) after
    each record is journaled. At the end the manifest (``manifest.gpkg``; also ``.parquet`` with
    ``manifest_parquet``) is written from the journal, and if any tile failed a
    :class:`~deepsolar.core.errors.DownloadError` says how many (its ``summary`` attribute holds the
    :class:`DownloadSummary`) unless ``raise_on_failure`` is false.

    Args:
        tiles: The grid tiles to fetch (duplicates are fetched once).
        source: The imagery source to fetch them from.
        out_dir: The tile store folder; created if missing.
        config: Network settings (timeouts, retries, rate limit, concurrency, cache); None:
            defaults.
        progress: Show a progress bar.
        on_tile: Called with each tile's record after it is journaled.
        raise_on_failure: Raise a DownloadError at the end when any tile failed.
        manifest_parquet: Also write ``manifest.parquet`` beside ``manifest.gpkg``.

    Returns:
        What the run did: tile counts by outcome, request counters and elapsed seconds.

    Raises:
        DownloadError: If any tile failed and ``raise_on_failure`` is true, or the server is
            unreachable.
        SourceError: If another download holds the folder, it holds another source's tiles,
            or the source cannot serve this grid.
        OutputError: If the store folder or manifest cannot be written.
    """
    cfg = config or DownloadConfig()
    out = Path(out_dir)
    try:
        return _download_tiles(
            tiles, source, out, cfg, progress, on_tile, raise_on_failure, manifest_parquet
        )
    except OSError as err:
        # The store cannot be written (read-only, a file in the way, disk full): an ordinary
        # error that names the cause, not a crash. Anything else is re-raised as it is.
        converted = output_error(err, out)
        if converted is None:
            raise
        raise converted from None


def _download_tiles(
    tiles: Iterable[Tile],
    source: ImagerySource,
    out: Path,
    cfg: DownloadConfig,
    progress: bool,
    on_tile: Callable[[TileRecord], None] | None,
    raise_on_failure: bool,
    manifest_parquet: bool,
) -> DownloadSummary:
    """:func:`download_tiles` with its arguments checked: lock the store, run, write the manifest."""
    _make_out_dir(out)
    t0 = time.monotonic()
    summary = DownloadSummary(out_dir=out, source=source.name)
    with _OutDirLock(out):
        remove_stale_temp_files(out)  # an interrupted manifest write leaves .manifest.*.tmp.*
        journal_path = out / JOURNAL_NAME
        done = read_journal(journal_path)
        _check_one_source(done, source, out)
        fetcher = HttpFetcher(cfg) if source.needs_network else None
        loop = _TileLoop(source, fetcher, out, cfg, summary, TileJournal(journal_path))
        total = len(tiles) if hasattr(tiles, "__len__") else None  # type: ignore[arg-type]
        loop.start(total, progress, on_tile)
        try:
            loop.run(tiles, done)
        finally:
            loop.close()
            _close_fetcher(fetcher, summary)
            # Even an interrupted run leaves a manifest matching its journal.
            summary.manifest_path = _write_manifests(journal_path, out, manifest_parquet)
            summary.elapsed_s = time.monotonic() - t0
    _log_summary(summary)
    if summary.n_failed and raise_on_failure:
        raise _failures_error(summary)
    return summary


def _make_out_dir(out: Path) -> None:
    """Create the store folder; an OutputError when a file has its name."""
    if out.exists() and not out.is_dir():
        raise OutputError(
            "the output folder is a file, not a folder",
            where=str(out),
            fix="choose another out_dir, or move that file away",
        )
    out.mkdir(parents=True, exist_ok=True)


def _check_one_source(done: dict[str, TileRecord], source: ImagerySource, out: Path) -> None:
    """A SourceError when the store already holds tiles of another source (one store per source)."""
    others = sorted({r.source for r in done.values()} - {source.name})
    if others:
        raise SourceError(
            f"this folder already holds tiles from source(s) {others}, not from {source.name!r}",
            where=str(out),
            fix="download into a new folder (one tile store per imagery source), or delete "
            "this one to start over",
        )


def _prepared_coverage(source: ImagerySource) -> BaseGeometry | None:
    """The source's coverage (EPSG:4326), prepared for many intersection tests; None if unknown."""
    coverage = source.coverage_lonlat()
    if coverage is not None:
        import shapely

        shapely.prepare(coverage)
    return coverage


def _resumed(prev: TileRecord | None, out: Path) -> bool:
    """Whether an earlier run's record of a tile stands: outside, or an image still on disk."""
    if prev is None:
        return False
    if prev.status == "outside":
        return True
    return prev.status in ("ok", "partial") and bool(prev.path) and (out / prev.path).is_file()


class _TileLoop:
    """The tiles of one run.

    Fetches go to a thread pool (a bounded window in flight) and each result is recorded in the
    calling thread (journal, summary, progress bar, ``on_tile``).
    """

    def __init__(
        self,
        source: ImagerySource,
        fetcher: HttpFetcher | None,
        out: Path,
        cfg: DownloadConfig,
        summary: DownloadSummary,
        journal: TileJournal,
    ) -> None:
        self.source, self.fetcher, self.out, self.cfg = source, fetcher, out, cfg
        self.summary, self.journal = summary, journal
        self.on_tile: Callable[[TileRecord], None] | None = None
        self.coverage = _prepared_coverage(source)
        self.checked_grids: set[tuple[int, int]] = set()
        self.bar: tqdm | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.pending: set[Future[TileRecord]] = set()
        self.interrupted = False

    def start(
        self,
        total: int | None,
        progress: bool,
        on_tile: Callable[[TileRecord], None] | None,
    ) -> None:
        """Open the progress bar (``total`` tiles, if known) and the thread pool."""
        self.on_tile = on_tile
        self.bar = tqdm(
            total=total,
            unit="tile",
            desc=f"tiles from {self.source.name}",
            disable=not progress,
        )
        self.pool = ThreadPoolExecutor(
            max_workers=self.cfg.max_concurrency, thread_name_prefix="tiles"
        )

    def record(self, rec: TileRecord, *, skipped: bool, new: bool) -> None:
        """Journal a new record, count it, advance the bar and tell ``on_tile`` (new ones)."""
        if new:
            self.journal.append(rec)
        self.summary.count(rec, skipped=skipped)
        if self.bar is not None:
            self.bar.update(1)
        if self.on_tile is not None and new:
            self.on_tile(rec)

    def drain(self, block_until: int) -> None:
        """Record finished fetches until at most ``block_until`` are still in flight."""
        while len(self.pending) > block_until:
            finished, self.pending = wait(self.pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                self.record(fut.result(), skipped=False, new=True)

    def add(self, tile: Tile, prev: TileRecord | None) -> None:
        """Skip, record as outside, or submit the fetch of one tile."""
        grid_key = (tile.zoom, tile.size_px)
        if grid_key not in self.checked_grids:
            self.source.check_tile(tile)
            self.checked_grids.add(grid_key)
        if _resumed(prev, self.out):
            assert prev is not None
            self.record(prev, skipped=True, new=False)
            return
        if self.coverage is not None and not self.coverage.intersects(tile.footprint()):
            rec = TileRecord.for_tile(tile, self.source.name, "outside", fetched_at=_now_iso())
            self.record(rec, skipped=False, new=True)
            return
        file_exists = (self.out / tile_relpath(tile)).is_file()
        args = (tile, self.source, self.fetcher, self.out, file_exists)
        assert self.pool is not None, "start() first"
        self.pending.add(self.pool.submit(_fetch_one, *args))
        # A bounded window of work in flight: memory stays flat for millions of tiles.
        self.drain(2 * self.cfg.max_concurrency)

    def run(self, tiles: Iterable[Tile], done: dict[str, TileRecord]) -> None:
        """Every distinct tile once; on any exception the fetches in flight are cancelled."""
        try:
            for tile in _dedupe(tiles):
                self.add(tile, done.get(tile.id))
            self.drain(0)
        except BaseException:
            self.interrupted = True
            for fut in self.pending:
                fut.cancel()
            if self.fetcher is not None:
                self.fetcher.cancel()
            raise

    def close(self) -> None:
        """Stop the pool, the bar and the journal.

        Interrupted (Ctrl-C, SIGTERM, an error): do not wait for requests in flight (a hanging
        server would hold the stop for timeout_s); a tile they still write is adopted by the next
        run, as after a kill.
        """
        if self.pool is not None:
            self.pool.shutdown(wait=not self.interrupted, cancel_futures=True)
        if self.bar is not None:
            self.bar.close()
        self.journal.close()


def _close_fetcher(fetcher: HttpFetcher | None, summary: DownloadSummary) -> None:
    """Copy the fetcher's request counters into ``summary`` and close it."""
    if fetcher is not None:
        summary.requests = fetcher.stats.requests
        summary.retries = fetcher.stats.retries
        summary.cache_hits = fetcher.stats.cache_hits
        fetcher.close()


def _write_manifests(journal_path: Path, out: Path, parquet: bool) -> Path:
    """Fold the journal into ``manifest.gpkg`` (and ``.parquet`` with ``parquet``).

    Returns the GeoPackage's path. A write the folder refuses is an OutputError.
    """
    try:
        manifest_path = write_manifest(read_journal(journal_path).values(), out / MANIFEST_NAME)
        if parquet:
            write_manifest(
                read_journal(journal_path).values(),
                out / Path(MANIFEST_NAME).with_suffix(".parquet").name,
                parquet=True,
            )
    except Exception as err:
        log.debug("could not write the tile manifest of %s", out, exc_info=True)
        converted = output_error(err, out)
        if converted is None:
            raise
        raise converted from None
    return manifest_path


def _log_summary(summary: DownloadSummary) -> None:
    """One INFO line: what the run did."""
    log.info(
        "%s: %d tiles: %d ok, %d partly covered (%d of them already there: skipped), %d outside, "
        "%d failed; %d requests, %d retries, %d cache hits, %.1f s",
        summary.out_dir,
        summary.n_tiles,
        summary.n_ok,
        summary.n_partial,
        summary.n_skipped,
        summary.n_outside,
        summary.n_failed,
        summary.requests,
        summary.retries,
        summary.cache_hits,
        summary.elapsed_s,
    )


def _failures_error(summary: DownloadSummary) -> DownloadError:
    """The DownloadError of a run in which tiles failed (``summary`` attached)."""
    first_id, first_err = summary.failures[0]
    err = DownloadError(
        f"{summary.n_failed} of {summary.n_tiles} tiles failed after retries "
        f"(first: tile {first_id}: {first_err})",
        where=str(summary.out_dir),
        fix="re-run the same download: finished tiles are skipped and only the failed ones "
        f"are fetched again; each failure is listed in the 'error' column of {MANIFEST_NAME}",
    )
    err.summary = summary
    return err
