"""What bounds a request in time: the shared rate limit and the per-request deadline.

:class:`RateLimiter` (a token bucket shared by all threads, paused by Retry-After) and
:class:`FetchCancelled`; :func:`deadline_transport` and :func:`request_deadline` give each
request one overall deadline covering connect, TLS, the status line and headers, and the body.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore
import httpx

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
