"""The one downloader: every network fetch of the project goes through :class:`HttpFetcher`, and
every tile store is filled by :func:`download_tiles`.

``HttpFetcher`` gives bounded concurrency (a semaphore around each request), a rate limit (a
token bucket shared by all threads), retries with exponential backoff and jitter that honour
``Retry-After`` (seconds or an HTTP date) on 429/503, per-request timeouts, a check that each body
decodes as an image of the expected size, and an optional disk cache of raw responses keyed by a
hash of the *redacted* URL. Secrets (API keys) are registered with :func:`register_secret` and are
replaced by ``REDACTED`` in every message, log record (including httpx's own) and cache key.

``download_tiles`` writes each grid tile as a PNG (temp file + ``os.replace``), appends one
fsynced journal record per tile (so a killed run loses nothing), skips what is already done on a
re-run, and writes the tile manifest atomically at the end.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus, unquote, urlparse

import cv2
import httpx
import numpy as np
from pydantic import Field
from tqdm import tqdm

from deepsolar.config import StrictModel
from deepsolar.errors import DeepSolarError, DownloadError, SourceError
from deepsolar.manifest import (
    JOURNAL_NAME,
    MANIFEST_NAME,
    TileJournal,
    TileRecord,
    read_journal,
    tile_relpath,
    write_manifest,
)
from deepsolar.tiling import Tile

if TYPE_CHECKING:
    from deepsolar.sources import ImagerySource

log = logging.getLogger(__name__)

REDACTED = "REDACTED"
USER_AGENT = "deepsolar/0.1 (solar panel mapping; tile downloader)"

# Statuses worth another try: the server is overloaded, rate limiting or briefly broken.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# Statuses that mean "this tile does not exist here" rather than "something is broken".
MISSING_STATUSES = frozenset({204, 404, 410})
# Statuses after which every further request would fail the same way: stop the whole run.
FATAL_STATUSES = frozenset({401, 403})


# --------------------------------------------------------------------------------------------
# Secrets: never in a message, a log record, a cache key or a file


_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Remember a secret (an API key) so :func:`redact` and log records hide it from now on."""
    if value and len(value) >= 4:  # a 1-3 character "secret" would redact ordinary text
        with _secrets_lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """``text`` with every registered secret (and its URL-encoded form) replaced by REDACTED."""
    if not _secrets or not text:
        return text
    for s in sorted(_secrets, key=len, reverse=True):
        for form in {s, quote(s, safe=""), quote_plus(s)}:
            text = text.replace(form, REDACTED)
    return text


class _RedactingFilter(logging.Filter):
    """Rewrites log records of third-party loggers (httpx logs every URL at INFO)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            try:
                msg = record.getMessage()
            except Exception:  # a malformed record is not ours to fix
                return True
            record.msg, record.args = redact(msg), None
        return True


_FILTER = _RedactingFilter()
for _name in (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    __name__,
):
    logging.getLogger(_name).addFilter(_FILTER)


# --------------------------------------------------------------------------------------------
# Config


class DownloadConfig(StrictModel):
    """How politely and how robustly to download."""

    max_concurrency: int = Field(8, ge=1, le=64, description="requests in flight at once")
    max_requests_per_s: float | None = Field(
        10.0, gt=0, description="rate limit across all threads (None: unlimited)"
    )
    timeout_s: float = Field(20.0, gt=0, description="connect/read timeout of one request")
    max_retries: int = Field(5, ge=0, le=50, description="retries after the first attempt")
    backoff_base_s: float = Field(0.5, ge=0, description="first backoff delay; doubles each retry")
    backoff_max_s: float = Field(60.0, ge=0, description="cap of one backoff delay")
    max_retry_after_s: float = Field(
        300.0, ge=0, description="longest Retry-After honoured; longer waits fail the request"
    )
    cache_dir: Path | None = Field(
        None, description="disk cache of raw responses (None: no cache); may be deleted any time"
    )
    user_agent: str = USER_AGENT


# --------------------------------------------------------------------------------------------
# Rate limit


class RateLimiter:
    """Token bucket of capacity 1 shared by all threads: request starts are >= 1/rate apart.

    ``pause_until`` makes every thread wait (a 429/503 with Retry-After applies to the server,
    not only to the request that got it).
    """

    def __init__(self, max_per_s: float | None, stop: threading.Event | None = None) -> None:
        self.interval_s = 1.0 / max_per_s if max_per_s else 0.0
        self._next = 0.0
        self._pause_until = 0.0
        self._lock = threading.Lock()
        self._stop = stop or threading.Event()

    def pause_until(self, t_monotonic: float) -> None:
        with self._lock:
            self._pause_until = max(self._pause_until, t_monotonic)

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                if now < self._pause_until:
                    delay, reserved = self._pause_until - now, False
                else:
                    start = max(now, self._next)
                    self._next = start + self.interval_s  # reserve: threads go in order
                    if start <= now:
                        return
                    delay, reserved = start - now, True
            if self._stop.wait(delay):
                raise _Cancelled()
            if reserved:
                with self._lock:
                    if time.monotonic() >= self._pause_until:
                        return
                # A pause arrived while this thread slept: its slot is dropped; wait again.


class _Cancelled(Exception):
    """The download was cancelled while this request waited."""


# --------------------------------------------------------------------------------------------
# Body check


class BadBody(Exception):
    """A 200 response whose body is not the expected image (HTML page, truncated, wrong size)."""


def decode_image(body: bytes, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image body to RGB uint8 (H, W, 3); BadBody says why it is not usable.

    Truncated PNG/JPEG are caught by their end markers (libjpeg happily decodes half a JPEG).
    """
    if not body:
        raise BadBody("empty body")
    head = body[:64]
    if head.lstrip().startswith((b"<", b"{")):
        snippet = head.decode("utf-8", "replace").strip().replace("\n", " ")[:60]
        raise BadBody(f"body is text, not an image (starts with {snippet!r})")
    if body.startswith(b"\x89PNG") and b"IEND" not in body[-16:]:
        raise BadBody(f"PNG is truncated ({len(body)} bytes, no IEND chunk)")
    if body.startswith(b"\xff\xd8") and not body.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        raise BadBody(f"JPEG is truncated ({len(body)} bytes, no end marker)")
    arr = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise BadBody(f"body does not decode as an image ({len(body)} bytes)")
    if expected_size is not None and (arr.shape[1], arr.shape[0]) != tuple(expected_size):
        w, h = expected_size
        raise BadBody(f"image is {arr.shape[1]}x{arr.shape[0]} px, expected {w}x{h}")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now_ts = time.time() if now is None else now
    return max(0.0, when.timestamp() - now_ts)


# --------------------------------------------------------------------------------------------
# The fetcher


@dataclass
class FetchStats:
    """Counters of one fetcher (thread-safe increments through ``add``)."""

    requests: int = 0
    retries: int = 0
    cache_hits: int = 0
    failures: int = 0
    bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **kw: int) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)


def _fix_for_status(status: int | None) -> str:
    if status in (401, 403):
        return (
            "check the API key / access token (set in its environment variable), that the API "
            "is enabled for it and that its quota is not exhausted"
        )
    if status in MISSING_STATUSES:
        return (
            "the server has no image at this URL: check the URL template (order of {z}/{x}/{y}, "
            "file extension) and max_zoom; if the server has gaps, set missing_tiles: outside"
        )
    if status is not None and 400 <= status < 500:
        return "check the source's URL template and parameters against the server's documentation"
    return (
        "check that the server is reachable and healthy, then re-run: finished tiles are kept "
        "and only the missing ones are fetched (raise timeout_s / max_retries or lower "
        "max_requests_per_s if the server is slow or rate limits)"
    )


def _download_error(
    what: str, url: str, status: int | None, attempts: int, *, fatal: bool = False
) -> DownloadError:
    err = DownloadError(redact(what), where=redact(url), fix=_fix_for_status(status))
    err.url = redact(url)
    err.status = status
    err.attempts = attempts
    err.fatal = fatal
    return err


class HttpFetcher:
    """Fetches images over HTTP(S) (or ``file://``) politely and robustly; safe to share by threads.

    ``get_image(url, redacted_url=..., expected_size=(w, h))`` returns RGB uint8 or raises
    :class:`~deepsolar.errors.DownloadError` naming the redacted URL, the last status, the number
    of attempts and what to do.
    """

    def __init__(self, config: DownloadConfig | None = None) -> None:
        self.config = config or DownloadConfig()
        c = self.config
        self._stop = threading.Event()
        self._limiter = RateLimiter(c.max_requests_per_s, self._stop)
        self._slots = threading.BoundedSemaphore(c.max_concurrency)
        self._client = httpx.Client(
            timeout=httpx.Timeout(c.timeout_s),
            limits=httpx.Limits(
                max_connections=c.max_concurrency, max_keepalive_connections=c.max_concurrency
            ),
            follow_redirects=True,
            headers={"User-Agent": c.user_agent},
        )
        self.stats = FetchStats()
        self._rng = random.Random()
        if c.cache_dir is not None:
            Path(c.cache_dir).mkdir(parents=True, exist_ok=True)

    # -- lifecycle
    def cancel(self) -> None:
        """Make waiting and retrying requests give up quickly (used on interrupt)."""
        self._stop.set()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpFetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- cache
    def _cache_path(self, shown_url: str) -> Path | None:
        if self.config.cache_dir is None:
            return None
        h = hashlib.sha256(shown_url.encode("utf-8")).hexdigest()
        return Path(self.config.cache_dir) / h[:2] / f"{h}.bin"

    def _cache_get(
        self, path: Path | None, expected_size: tuple[int, int] | None
    ) -> np.ndarray | None:
        if path is None or not path.is_file():
            return None
        try:
            img = decode_image(path.read_bytes(), expected_size)
        except (BadBody, OSError):
            path.unlink(missing_ok=True)  # a bad cache entry is refetched, never served
            return None
        self.stats.add(cache_hits=1)
        return img

    def _cache_put(self, path: Path | None, body: bytes) -> None:
        if path is None:
            return
        with contextlib.suppress(OSError):  # a cache that cannot be written only costs speed
            atomic_write_bytes(path, body, fsync=False, shared=True)

    # -- fetching
    def get_image(
        self,
        url: str,
        *,
        redacted_url: str | None = None,
        headers: dict[str, str] | None = None,
        expected_size: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """Fetch ``url`` and return it as RGB uint8 (H, W, 3).

        ``redacted_url`` is the URL as it may be shown (secrets replaced); it names the request in
        errors and logs and keys the disk cache. Without it the URL is redacted with the
        registered secrets.
        """
        shown = redact(redacted_url if redacted_url is not None else url)
        if url.startswith("file://"):  # a local tile folder: no cache, no rate limit, no retry
            body = self._read_file(url, shown)
            try:
                return decode_image(body, expected_size)
            except BadBody as err:
                raise _download_error(
                    f"local tile file is not a usable image: {err}", shown, None, 1
                ) from None
        cache_path = self._cache_path(shown)
        cached = self._cache_get(cache_path, expected_size)
        if cached is not None:
            return cached
        body, img = self._get_with_retries(url, shown, headers or {}, expected_size)
        self._cache_put(cache_path, body)
        return img

    def _read_file(self, url: str, shown: str) -> bytes:
        path = Path(unquote(urlparse(url).path))
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise _download_error("tile file not found", shown, 404, 1) from None
        except OSError as err:
            raise _download_error(
                f"cannot read tile file ({err.strerror})", shown, None, 1
            ) from None

    def _backoff_s(self, attempt: int) -> float:
        c = self.config
        delay = min(c.backoff_max_s, c.backoff_base_s * 2 ** (attempt - 1))
        return delay * (0.5 + 0.5 * self._rng.random())  # jitter: spread retries of many threads

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self._stop.wait(seconds):
            raise _Cancelled()

    def _get_with_retries(
        self, url: str, shown: str, headers: dict[str, str], expected_size: tuple[int, int] | None
    ) -> tuple[bytes, np.ndarray]:
        c = self.config
        attempts = c.max_retries + 1
        last_reason = "no attempt made"
        last_status: int | None = None
        for attempt in range(1, attempts + 1):
            if self._stop.is_set():
                raise _Cancelled()
            wait_s: float | None = None
            self._limiter.acquire()
            try:
                with self._slots:
                    self.stats.add(requests=1)
                    resp = self._client.get(url, headers=headers)
            except httpx.TimeoutException:
                last_status, last_reason = None, f"timed out after {c.timeout_s:g} s"
            except httpx.TransportError as err:
                # Includes a body cut short (RemoteProtocolError) and a refused connection.
                last_status, last_reason = (
                    None,
                    f"connection error ({type(err).__name__}: {redact(str(err))})",
                )
            else:
                status = resp.status_code
                last_status = status
                self.stats.add(bytes=len(resp.content))
                if status == 200:
                    try:
                        return resp.content, decode_image(resp.content, expected_size)
                    except BadBody as err:
                        last_reason = f"bad body: {err}"
                elif status in RETRY_STATUSES or status >= 500:
                    last_reason = f"HTTP {status}"
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                    if retry_after is not None and status in (429, 503):
                        if retry_after > c.max_retry_after_s:
                            self.stats.add(failures=1)
                            raise _download_error(
                                f"the server answered HTTP {status} and asks to wait "
                                f"{retry_after:.0f} s (more than max_retry_after_s="
                                f"{c.max_retry_after_s:g}); a quota is probably exhausted",
                                shown,
                                status,
                                attempt,
                            )
                        wait_s = retry_after
                        last_reason += f" (Retry-After {retry_after:.1f} s)"
                        self._limiter.pause_until(time.monotonic() + retry_after)
                else:
                    self.stats.add(failures=1)
                    what = {
                        404: "not found",
                        204: "no content",
                        410: "gone",
                        401: "unauthorized",
                        403: "forbidden",
                    }
                    raise _download_error(
                        f"the server answered HTTP {status} ({what.get(status, resp.reason_phrase)})",
                        shown,
                        status,
                        attempt,
                        fatal=status in FATAL_STATUSES,
                    )
            if attempt == attempts:
                break
            self.stats.add(retries=1)
            delay = wait_s if wait_s is not None else self._backoff_s(attempt)
            log.info(
                "retry %d/%d in %.2f s: %s (%s)", attempt, c.max_retries, delay, shown, last_reason
            )
            self._sleep(delay)
        self.stats.add(failures=1)
        raise _download_error(
            f"download failed after {attempts} attempt{'s' if attempts > 1 else ''}; "
            f"last problem: {last_reason}",
            shown,
            last_status,
            attempts,
        )


# --------------------------------------------------------------------------------------------
# Files


def atomic_write_bytes(
    path: Path, data: bytes, *, fsync: bool = True, shared: bool = False
) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``.

    The temp name is fixed per destination (``.{name}.part``) because one tile is written by one
    thread at a time (the store folder is locked), so a ``.part`` left by a killed run is reused
    and renamed away when that tile is redone. ``shared`` (the disk cache, which several threads
    may fill with the same entry) makes the temp name unique per thread instead.
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


def encode_png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV only fails on invalid arrays, checked by the caller
        raise SourceError("cannot encode tile as PNG", fix="report this as a bug")
    return buf.tobytes()


# --------------------------------------------------------------------------------------------
# The tile loop


@dataclass
class DownloadSummary:
    """What one ``download_tiles`` run did. The four final states add up to ``n_tiles``."""

    out_dir: Path
    source: str
    manifest_path: Path | None = None
    n_tiles: int = 0  # distinct tiles asked for in this run
    n_ok: int = 0  # tiles with an image at the end (fetched now or before)
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
        self.n_tiles += 1
        self.n_skipped += int(skipped)
        if rec.status == "ok":
            self.n_ok += 1
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
        img = source.fetch_tile(tile, fetcher)
    except DeepSolarError as err:
        if getattr(err, "fatal", False):
            raise
        return TileRecord.for_tile(
            tile, source.name, "failed", error=redact(str(err)), fetched_at=_now_iso()
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
        "ok",
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
    :class:`~deepsolar.errors.DownloadError` says how many (its ``summary`` attribute holds the
    :class:`DownloadSummary`) unless ``raise_on_failure`` is false.
    """
    cfg = config or DownloadConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    summary = DownloadSummary(out_dir=out, source=source.name)
    with _OutDirLock(out):
        journal_path = out / JOURNAL_NAME
        done = read_journal(journal_path)
        others = sorted({r.source for r in done.values()} - {source.name})
        if others:
            raise SourceError(
                f"this folder already holds tiles from source(s) {others}, not from "
                f"{source.name!r}",
                where=str(out),
                fix="download into a new folder (one tile store per imagery source), or delete "
                "this one to start over",
            )
        fetcher = HttpFetcher(cfg) if source.needs_network else None
        journal = TileJournal(journal_path)
        coverage = source.coverage_lonlat()
        if coverage is not None:
            import shapely

            shapely.prepare(coverage)
        checked_grids: set[tuple[int, int]] = set()
        total = len(tiles) if hasattr(tiles, "__len__") else None  # type: ignore[arg-type]
        bar = tqdm(total=total, unit="tile", desc=f"tiles from {source.name}", disable=not progress)
        pool = ThreadPoolExecutor(max_workers=cfg.max_concurrency, thread_name_prefix="tiles")
        pending: set[Future[TileRecord]] = set()

        def record(rec: TileRecord, *, skipped: bool, new: bool) -> None:
            if new:
                journal.append(rec)
            summary.count(rec, skipped=skipped)
            bar.update(1)
            if on_tile is not None and new:
                on_tile(rec)

        def drain(block_until: int) -> None:
            nonlocal pending
            while len(pending) > block_until:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    record(fut.result(), skipped=False, new=True)

        try:
            for tile in _dedupe(tiles):
                grid_key = (tile.zoom, tile.size_px)
                if grid_key not in checked_grids:
                    source.check_tile(tile)
                    checked_grids.add(grid_key)
                prev = done.get(tile.id)
                if prev is not None and prev.status == "outside":
                    record(prev, skipped=True, new=False)
                    continue
                if (
                    prev is not None
                    and prev.status == "ok"
                    and prev.path
                    and (out / prev.path).is_file()
                ):
                    record(prev, skipped=True, new=False)
                    continue
                if coverage is not None and not coverage.intersects(tile.footprint()):
                    rec = TileRecord.for_tile(tile, source.name, "outside", fetched_at=_now_iso())
                    record(rec, skipped=False, new=True)
                    continue
                file_exists = (out / tile_relpath(tile)).is_file()
                pending.add(pool.submit(_fetch_one, tile, source, fetcher, out, file_exists))
                # A bounded window of work in flight: memory stays flat for millions of tiles.
                drain(2 * cfg.max_concurrency)
            drain(0)
        except BaseException:
            for fut in pending:
                fut.cancel()
            if fetcher is not None:
                fetcher.cancel()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
            journal.close()
            if fetcher is not None:
                summary.requests = fetcher.stats.requests
                summary.retries = fetcher.stats.retries
                summary.cache_hits = fetcher.stats.cache_hits
                fetcher.close()
            # Even an interrupted run leaves a manifest matching its journal.
            try:
                summary.manifest_path = write_manifest(
                    read_journal(journal_path).values(), out / MANIFEST_NAME
                )
                if manifest_parquet:
                    write_manifest(
                        read_journal(journal_path).values(),
                        out / Path(MANIFEST_NAME).with_suffix(".parquet").name,
                        parquet=True,
                    )
            except Exception:
                log.exception("could not write the tile manifest of %s", out)
                raise
            summary.elapsed_s = time.monotonic() - t0
    log.info(
        "%s: %d tiles: %d ok (%d already there), %d outside, %d failed; %d requests, %d retries, "
        "%d cache hits, %.1f s",
        out,
        summary.n_tiles,
        summary.n_ok,
        summary.n_skipped,
        summary.n_outside,
        summary.n_failed,
        summary.requests,
        summary.retries,
        summary.cache_hits,
        summary.elapsed_s,
    )
    if summary.n_failed and raise_on_failure:
        first_id, first_err = summary.failures[0]
        err = DownloadError(
            f"{summary.n_failed} of {summary.n_tiles} tiles failed after retries "
            f"(first: tile {first_id}: {first_err})",
            where=str(out),
            fix="re-run the same download: finished tiles are skipped and only the failed ones "
            f"are fetched again; each failure is listed in the 'error' column of {MANIFEST_NAME}",
        )
        err.summary = summary
        raise err
    return summary
