"""The HTTP client of the project: every network fetch goes through :class:`HttpFetcher`.

``HttpFetcher`` gives bounded concurrency (a semaphore around each request), a rate limit (a
token bucket shared by all threads), retries with exponential backoff and jitter that honour
``Retry-After`` (seconds or an HTTP date) on 429/503, one overall deadline per request (connect,
headers and body: see :func:`deadline_transport`), a check that each body decodes as an image of
the expected size, and an optional disk cache of raw responses keyed by a hash of the *redacted*
URL. Secrets (API keys) are registered with :func:`register_secret` and are replaced by
``REDACTED`` in every message, log record (including httpx's own) and cache key.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import io
import logging
import os
import random
import re
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpcore
import httpx
import numpy as np
from pydantic import Field

from deepsolar.core.config import StrictModel
from deepsolar.core.errors import DownloadError
from deepsolar.core.io import atomic_write_bytes

log = logging.getLogger(__name__)

REDACTED = "REDACTED"
USER_AGENT = "deepsolar/0.1 (solar panel mapping; tile downloader)"

# Statuses worth another try: the server is overloaded, rate limiting or briefly broken.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# Statuses that mean "this tile does not exist here" rather than "something is broken".
MISSING_STATUSES = frozenset({204, 404, 410})
# Statuses after which every further request would fail the same way: stop the whole run.
FATAL_STATUSES = frozenset({401, 403})
# Requests (each after all its retries) that failed to connect in a row, with no answer from the
# server since, before the whole run stops with "cannot reach ...".
UNREACHABLE_AFTER_REQUESTS = 3


# --------------------------------------------------------------------------------------------
# Secrets: never in a message, a log record, a cache key or a file


_secrets: set[str] = set()
_secret_patterns: list[re.Pattern[str]] = []
_secrets_lock = threading.Lock()


def _secret_pattern(secret: str) -> re.Pattern[str]:
    """A regex matching ``secret`` in any URL encoding.

    Each character raw or percent-encoded (upper or lower case hex, once or twice), a space also
    as ``+``. This covers quote(), quote_plus() with any ``safe`` set, urlencode() and httpx's own
    normalisation at once.
    """
    parts = []
    for ch in secret:
        alts = [re.escape(ch)]
        enc = "".join(f"%{b:02X}" for b in ch.encode("utf-8"))
        for form in (enc, enc.replace("%", "%25")):
            alts.append("".join(f"[{c}{c.lower()}]" if c.isalpha() else re.escape(c) for c in form))
        if ch == " ":
            alts.append(r"\+")
        parts.append("(?:" + "|".join(alts) + ")")
    return re.compile("".join(parts))


def register_secret(value: str) -> None:
    """Remember a secret (an API key) so :func:`redact` and log records hide it from now on.

    Args:
        value: The secret; values shorter than 4 characters are ignored (they would redact
            ordinary text).
    """
    if value and len(value) >= 4:  # a 1-3 character "secret" would redact ordinary text
        with _secrets_lock:
            if value not in _secrets:
                _secrets.add(value)
                _secret_patterns.append(_secret_pattern(value))
                _secret_patterns.sort(key=lambda p: len(p.pattern), reverse=True)


def redact(text: str) -> str:
    """``text`` with every registered secret, in any URL encoding, replaced by REDACTED.

    Args:
        text: A message, URL or log line.

    Returns:
        The text with secrets hidden (unchanged when none is registered).
    """
    if not _secrets or not text:
        return text
    for pat in list(_secret_patterns):
        text = pat.sub(REDACTED, text)
    return text


def quiet_http_logs() -> None:
    """Httpx logs every request URL at INFO: keep that off unless DEEPSOLAR_HTTP_LOG=1.

    Even redacted, URLs of a whole region's tiles are noise in an operator's log.
    """
    if os.environ.get("DEEPSOLAR_HTTP_LOG", "").strip() not in ("1", "true", "yes"):
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)


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


def redact_logs(*logger_names: str) -> None:
    """Redact registered secrets from every record these loggers emit (httpx logs each URL).

    Args:
        logger_names: names of the loggers whose own records are rewritten (a filter on a
            logger does not reach its children: name each one).
    """
    for name in logger_names:
        logging.getLogger(name).addFilter(_FILTER)


redact_logs(
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    __name__,
)
quiet_http_logs()


# --------------------------------------------------------------------------------------------
# Config


class DownloadConfig(StrictModel):
    """How politely and how robustly to download."""

    max_concurrency: int = Field(8, ge=1, le=64, description="requests in flight at once")
    max_requests_per_s: float | None = Field(
        10.0, gt=0, description="rate limit across all threads (None: unlimited)"
    )
    timeout_s: float = Field(
        20.0,
        gt=0,
        description="deadline of one request: connecting, the headers and the whole body (a "
        "server trickling its answer is cut off at this deadline)",
    )
    max_body_mb: float = Field(
        32.0, gt=0, description="largest response body accepted, in MiB (larger ones fail)"
    )
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

    Args:
        max_per_s: Most request starts per second; None or 0: no limit.
        stop: Event that cancels waiting threads (:class:`FetchCancelled`); None: a private one.
    """

    def __init__(self, max_per_s: float | None, stop: threading.Event | None = None) -> None:
        self.interval_s = 1.0 / max_per_s if max_per_s else 0.0
        self._next = 0.0
        self._pause_until = 0.0
        self._lock = threading.Lock()
        self._stop = stop or threading.Event()

    def pause_until(self, t_monotonic: float) -> None:
        """Make every thread wait until ``t_monotonic`` (``time.monotonic()`` scale).

        Args:
            t_monotonic: The time to wait until, in seconds on the ``time.monotonic()`` clock.
        """
        with self._lock:
            self._pause_until = max(self._pause_until, t_monotonic)

    def acquire(self) -> None:
        """Block until this thread may start a request.

        Raises:
            FetchCancelled: If the fetcher is cancelled while waiting.
        """
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
                raise FetchCancelled()
            if reserved:
                with self._lock:
                    if time.monotonic() >= self._pause_until:
                        return
                # A pause arrived while this thread slept: its slot is dropped; wait again.


class FetchCancelled(Exception):
    """The download was cancelled (:meth:`HttpFetcher.cancel`) while this request waited."""


class _BodyTooLarge(Exception):
    def __init__(self, n_bytes: int) -> None:
        super().__init__(n_bytes)
        self.n_bytes = n_bytes


# --------------------------------------------------------------------------------------------
# One overall deadline per request: connect, TLS, the status line and headers, and the body

_deadline = threading.local()  # .at: time.monotonic() by which this thread's request must end


def _time_left(timeout: float | None, exc: type[Exception]) -> float | None:
    """``timeout`` shortened to what is left of this thread's request deadline.

    Raises ``exc`` when the deadline has passed; returns ``timeout`` itself when no deadline is
    set.
    """
    at: float | None = getattr(_deadline, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise exc("the request's overall deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the calling thread's request deadline.

    So a server trickling its headers or body one byte at a time is cut off there (httpx's own
    timeouts are per read, and a trickle never trips them).
    """

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _time_left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _time_left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        t = _time_left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, t))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend with :class:`_DeadlineStream` connections."""

    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        t = _time_left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._backend.connect_tcp(host, port, t, local_address, socket_options)
        )

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        t = _time_left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, t, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def deadline_transport(limits: httpx.Limits) -> httpx.HTTPTransport:
    """An httpx transport whose connections honour :func:`request_deadline`.

    Args:
        limits: The connection pool's limits.

    Returns:
        The transport, for ``httpx.Client(transport=...)``.

    Raises:
        RuntimeError: If the installed httpcore no longer lets the backend be set.
    """
    transport = httpx.HTTPTransport(limits=limits)
    pool = transport._pool  # httpcore.ConnectionPool: the one place its backend can be set
    if not hasattr(pool, "_network_backend"):
        raise RuntimeError("httpcore changed: ConnectionPool has no _network_backend")
    pool._network_backend = _DeadlineBackend(pool._network_backend)
    return transport


@contextlib.contextmanager
def request_deadline(seconds: float) -> Iterator[float]:
    """Give this thread's requests on a :func:`deadline_transport` one overall deadline.

    Within the context, the requests must end within ``seconds`` in all.

    Args:
        seconds: Time allowed from now, in seconds.

    Yields:
        The deadline, in seconds on the ``time.monotonic()`` clock.
    """
    _deadline.at = time.monotonic() + seconds
    try:
        yield _deadline.at
    finally:
        _deadline.at = None


# --------------------------------------------------------------------------------------------
# Body check


class BadBody(Exception):
    """A 200 response whose body is not the expected image (HTML page, truncated, wrong size)."""


# Largest image a response may hold, checked from its header before any pixel is decoded (a
# 640-px Static Maps tile is 0.4 MP, a 512-px retina server tile 0.26 MP).
MAX_IMAGE_PIXELS = 4096 * 4096


def image_header_size(body: bytes) -> tuple[int, int]:
    """(width, height) read from an image's header only, without decoding any pixel.

    Args:
        body: The encoded image (PNG, JPEG, any format Pillow reads).

    Returns:
        ``(width, height)`` in px.

    Raises:
        BadBody: If the header is not an image's, or announces a decompression bomb.
    """
    from PIL import Image, UnidentifiedImageError

    # (No warnings.catch_warnings here: it changes process-wide state and is not thread-safe.)
    try:
        with Image.open(io.BytesIO(body)) as im:
            return im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise BadBody(
            f"body does not decode as an image ({len(body)} bytes; {type(err).__name__})"
        ) from None
    except Image.DecompressionBombError:
        raise BadBody(f"image header announces a huge image ({len(body)} bytes)") from None


def decode_image(body: bytes, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image body to RGB uint8 (H, W, 3), strictly; BadBody says why it is not usable.

    Never echoes the body's content (it may be any local file, or a page with a key in it). The
    size is read from the header before decoding, so an oversized image costs no memory. The
    decode is strict: truncated data, a PNG chunk whose CRC does not match, and JPEG data that
    libjpeg-turbo reports as corrupt (``Corrupt JPEG data ...``, which other decoders only print
    while returning wrong pixels) are all BadBody.

    Args:
        body: The encoded image bytes.
        expected_size: ``(width, height)`` in px the image must have; None: any size up to
            ``MAX_IMAGE_PIXELS``.

    Returns:
        The RGB image, uint8 of shape (H, W, 3).

    Raises:
        BadBody: If the body is empty, text, truncated, corrupt, of the wrong size or too large.
    """
    if not body:
        raise BadBody("empty body")
    if body[:64].lstrip().startswith((b"<", b"{")):
        raise BadBody(f"body is text (HTML, XML or JSON), not an image ({len(body)} bytes)")
    if body.startswith(b"\x89PNG") and b"IEND" not in body[-16:]:
        raise BadBody(f"PNG is truncated ({len(body)} bytes, no IEND chunk)")
    if body.startswith(b"\xff\xd8") and not body.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        raise BadBody(f"JPEG is truncated ({len(body)} bytes, no end marker)")
    w, h = image_header_size(body)
    if expected_size is not None and (w, h) != tuple(expected_size):
        ew, eh = expected_size
        raise BadBody(f"image is {w}x{h} px, expected {ew}x{eh}")
    if w * h > MAX_IMAGE_PIXELS:
        raise BadBody(f"image is {w}x{h} px, larger than any tile ({MAX_IMAGE_PIXELS:,} px max)")
    if body.startswith(b"\xff\xd8"):
        arr = _decode_jpeg_strict(body)
    else:
        arr = _decode_pil_strict(body)
    if arr.shape[:2] != (h, w):  # pragma: no cover - a decoder disagreeing with its own header
        raise BadBody(f"image decodes to {arr.shape[1]}x{arr.shape[0]} px, header says {w}x{h}")
    return arr


def _decode_jpeg_strict(body: bytes) -> np.ndarray:
    import simplejpeg

    try:
        arr = simplejpeg.decode_jpeg(body, colorspace="RGB", strict=True)
    except ValueError as err:  # simplejpeg's error for corrupt data and libjpeg warnings
        why = " ".join(str(err).split())[:120]
        raise BadBody(f"JPEG data is corrupt ({why})") from None
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _decode_pil_strict(body: bytes) -> np.ndarray:
    from PIL import Image, ImageFile

    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone relaxed Pillow globally: not for tiles
        raise BadBody("refusing to decode with PIL.ImageFile.LOAD_TRUNCATED_IMAGES set")
    try:
        if body.startswith(b"\x89PNG"):
            with Image.open(io.BytesIO(body)) as im:
                im.verify()  # every chunk's CRC, IDAT included
        with Image.open(io.BytesIO(body)) as im:
            im.load()
            rgb = im.convert("RGB")
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for broken data
        # the type only: a decoder's message may quote bytes of the body
        raise BadBody(f"image data is corrupt ({type(err).__name__})") from None
    return np.asarray(rgb, dtype=np.uint8).copy()


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date).

    Args:
        value: The header's value, or None.
        now: Current time as a Unix timestamp in seconds (for HTTP dates); None: ``time.time()``.

    Returns:
        The wait in seconds (>= 0), or None if absent or unparseable.
    """
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
        """Add to counters by name, e.g. ``add(requests=1, bytes=n)``.

        Args:
            **kw: Counter name (``requests``, ``retries``, ``cache_hits``, ``failures``,
                ``bytes``) -> amount to add.
        """
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
    :class:`~deepsolar.core.errors.DownloadError` naming the redacted URL, the last status, the number
    of attempts and what to do.

    Args:
        config: Timeouts, retries, rate and concurrency limits, cache folder; None: defaults.
    """

    def __init__(self, config: DownloadConfig | None = None) -> None:
        self.config = config or DownloadConfig()
        c = self.config
        self._stop = threading.Event()
        self._limiter = RateLimiter(c.max_requests_per_s, self._stop)
        self._slots = threading.BoundedSemaphore(c.max_concurrency)
        limits = httpx.Limits(
            max_connections=c.max_concurrency, max_keepalive_connections=c.max_concurrency
        )
        self._client = httpx.Client(
            timeout=httpx.Timeout(c.timeout_s),
            transport=deadline_transport(limits),
            follow_redirects=True,
            headers={"User-Agent": c.user_agent},
        )
        self.stats = FetchStats()
        self._rng = random.Random()
        # Requests that ended with every attempt failing to connect, since the last answer of
        # any kind: a few in a row mean the server cannot be reached at all (stop the run).
        self._unreachable = 0
        self._unreachable_lock = threading.Lock()
        quiet_http_logs()  # again: Prefect may have configured logging after the import
        if c.cache_dir is not None:
            Path(c.cache_dir).mkdir(parents=True, exist_ok=True)

    # -- lifecycle
    def cancel(self) -> None:
        """Make waiting and retrying requests give up quickly (used on interrupt)."""
        self._stop.set()

    def close(self) -> None:
        """Close the HTTP connections."""
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

        Args:
            url: The URL to fetch (``http(s)://`` or ``file://``), secrets included.
            redacted_url: The URL as it may be shown; None: ``url`` redacted.
            headers: Extra request headers.
            expected_size: ``(width, height)`` in px the image must have; None: any.

        Returns:
            The image, RGB uint8 of shape (H, W, 3).

        Raises:
            DownloadError: When every attempt failed or the answer is final (404, 401, a long
                Retry-After), or the server is unreachable (``fatal``).
            FetchCancelled: If the fetcher was cancelled.
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
            raise FetchCancelled()

    def _request(self, url: str, headers: dict[str, str]) -> tuple[int, httpx.Headers, bytes, str]:
        """One GET under an overall deadline of ``timeout_s``.

        The deadline covers connecting, the status line and headers and the whole body (see
        :func:`deadline_transport`; a server trickling any of them one byte at a time is cut off
        there). The body is also checked against ``max_body_mb`` as it arrives.
        """
        c = self.config
        limit = int(c.max_body_mb * 1024 * 1024)
        request = self._client.build_request("GET", url, headers=headers)
        with request_deadline(c.timeout_s) as deadline:
            try:
                resp = self._client.send(request, stream=True)
                try:
                    declared = resp.headers.get("Content-Length", "")
                    if declared.isdigit() and int(declared) > limit:
                        raise _BodyTooLarge(int(declared))
                    buf = bytearray()
                    for chunk in resp.iter_bytes():
                        buf += chunk
                        if len(buf) > limit:
                            raise _BodyTooLarge(len(buf))
                        if self._stop.is_set():
                            raise FetchCancelled()
                    return resp.status_code, resp.headers, bytes(buf), resp.reason_phrase
                finally:
                    resp.close()
            except httpx.TimeoutException:
                raise
            except httpx.HTTPError:
                if time.monotonic() >= deadline:  # cut by the deadline, seen as another error
                    raise httpx.ReadTimeout("deadline passed", request=request) from None
                raise

    def _get_with_retries(
        self, url: str, shown: str, headers: dict[str, str], expected_size: tuple[int, int] | None
    ) -> tuple[bytes, np.ndarray]:
        """``(body, image)`` of ``url`` after at most ``max_retries`` retries.

        A DownloadError (naming ``shown``) when every attempt failed or the answer is final.
        """
        c = self.config
        attempts = c.max_retries + 1
        last_reason = "no attempt made"
        last_status: int | None = None
        n_connect_failures = 0
        for attempt in range(1, attempts + 1):
            if self._stop.is_set():
                raise FetchCancelled()
            wait_s: float | None = None
            answer, failure = self._attempt(url, headers)
            if answer is None:
                last_status, last_reason = None, failure
                n_connect_failures += failure.startswith("connection error")
            else:
                last_status = answer[0]
                done, last_reason, wait_s = self._judge_answer(
                    answer, shown, attempt, expected_size
                )
                if done is not None:
                    return done
            if attempt == attempts:
                break
            self.stats.add(retries=1)
            delay = wait_s if wait_s is not None else self._backoff_s(attempt)
            log.info(
                "retry %d/%d in %.2f s: %s (%s)", attempt, c.max_retries, delay, shown, last_reason
            )
            self._sleep(delay)
        self.stats.add(failures=1)
        if n_connect_failures == attempts:
            self._count_unreachable(shown, attempts, last_reason)
        raise _download_error(
            f"download failed after {attempts} attempt{'s' if attempts > 1 else ''}; "
            f"last problem: {last_reason}",
            shown,
            last_status,
            attempts,
        )

    def _attempt(
        self, url: str, headers: dict[str, str]
    ) -> tuple[tuple[int, httpx.Headers, bytes, str] | None, str]:
        """One request under the rate limit and the concurrency bound.

        Returns ``(answer, "")``, or ``(None, why it failed)`` for a failure worth a retry
        (``why`` starts with "connection error" when it could not connect).
        """
        c = self.config
        self._limiter.acquire()
        try:
            with self._slots:
                self.stats.add(requests=1)
                answer = self._request(url, headers)
        except httpx.TimeoutException:
            return None, f"no complete answer within timeout_s={c.timeout_s:g} s"
        except httpx.ConnectError as err:
            return None, f"connection error ({type(err).__name__}: {redact(str(err))[:200]})"
        except _BodyTooLarge as err:
            return (
                None,
                f"body of {err.n_bytes:,} bytes or more is larger than max_body_mb={c.max_body_mb:g}",
            )
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as err:
            # Any other failure of this one request (a body cut short, broken gzip, a
            # redirect loop, a protocol error) is this tile's problem: retry, then report.
            return None, f"request failed ({type(err).__name__}: {redact(str(err))[:200]})"
        with self._unreachable_lock:
            self._unreachable = 0  # the server answered: it is reachable
        return answer, ""

    def _judge_answer(
        self,
        answer: tuple[int, httpx.Headers, bytes, str],
        shown: str,
        attempt: int,
        expected_size: tuple[int, int] | None,
    ) -> tuple[tuple[bytes, np.ndarray] | None, str, float | None]:
        """What an answer means.

        ``(result, "", None)`` for a usable image, ``(None, why, wait_s)`` for one worth a retry
        (``wait_s`` from Retry-After, else None), or a DownloadError for a final answer (404, 401,
        a Retry-After beyond max_retry_after_s).
        """
        c = self.config
        status, resp_headers, body, reason = answer
        self.stats.add(bytes=len(body))
        if status == 200:
            try:
                return (body, decode_image(body, expected_size)), "", None
            except BadBody as err:
                return None, f"bad body: {err}", None
        if status in RETRY_STATUSES or status >= 500:
            last_reason = f"HTTP {status}"
            retry_after = parse_retry_after(resp_headers.get("Retry-After"))
            if retry_after is None or status not in (429, 503):
                return None, last_reason, None
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
            self._limiter.pause_until(time.monotonic() + retry_after)
            return None, last_reason + f" (Retry-After {retry_after:.1f} s)", retry_after
        self.stats.add(failures=1)
        what = {
            404: "not found",
            204: "no content",
            410: "gone",
            401: "unauthorized",
            403: "forbidden",
        }
        raise _download_error(
            f"the server answered HTTP {status} ({what.get(status, reason)})",
            shown,
            status,
            attempt,
            fatal=status in FATAL_STATUSES,
        )

    def _count_unreachable(self, shown: str, attempts: int, last_reason: str) -> None:
        """Count a request whose every attempt failed to connect.

        After UNREACHABLE_AFTER_REQUESTS in a row (no answer since) a fatal DownloadError stops
        the run.
        """
        with self._unreachable_lock:
            self._unreachable += 1
            unreachable = self._unreachable
        if unreachable >= UNREACHABLE_AFTER_REQUESTS:
            host = urlparse(shown).netloc or shown
            err = _download_error(
                f"cannot reach {host}: {unreachable} requests in a row failed to connect, "
                f"{attempts} attempts each, and no request got any answer since "
                f"(last problem: {last_reason})",
                shown,
                None,
                attempts,
                fatal=True,
            )
            err.fix = (
                "check the URL template's host and port, the network and any proxy, then "
                "re-run: finished tiles are kept"
            )
            raise err
