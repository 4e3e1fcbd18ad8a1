"""The fetcher: :class:`HttpFetcher`, through which every network fetch goes.

Bounded concurrency, the shared rate limit, retries with backoff and jitter that honour
``Retry-After``, one overall deadline per request, the body check, the disk cache of raw
responses, and one clear :class:`~deepsolar.core.errors.DownloadError` when a tile cannot be had.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx
import numpy as np

from deepsolar.core.errors import DownloadError
from deepsolar.core.http.bodies import BadBody, decode_image, parse_retry_after
from deepsolar.core.http.config import DownloadConfig
from deepsolar.core.http.limits import (
    FetchCancelled,
    RateLimiter,
    deadline_transport,
    request_deadline,
)
from deepsolar.core.http.redaction import quiet_http_logs, redact, redact_logs
from deepsolar.core.io import atomic_write_bytes

# The package's name, as before it was split into modules: logging configuration names it.
log = logging.getLogger("deepsolar.core.http")
redact_logs(log.name)

# Statuses worth another try: the server is overloaded, rate limiting or briefly broken.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# Statuses that mean "this tile does not exist here" rather than "something is broken".
MISSING_STATUSES = frozenset({204, 404, 410})
# Statuses after which every further request would fail the same way: stop the whole run.
FATAL_STATUSES = frozenset({401, 403})
# Requests (each after all its retries) that failed to connect in a row, with no answer from the
# server since, before the whole run stops with "cannot reach ...".
UNREACHABLE_AFTER_REQUESTS = 3


class _BodyTooLarge(Exception):
    def __init__(self, n_bytes: int) -> None:
        super().__init__(n_bytes)
        self.n_bytes = n_bytes


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
