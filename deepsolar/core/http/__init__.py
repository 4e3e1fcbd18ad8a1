"""The HTTP client of the project: every network fetch goes through :class:`HttpFetcher`.

``HttpFetcher`` gives bounded concurrency (a semaphore around each request), a rate limit (a
token bucket shared by all threads), retries with exponential backoff and jitter that honour
``Retry-After`` (seconds or an HTTP date) on 429/503, one overall deadline per request (connect,
headers and body: see :func:`~deepsolar.core.http.limits.deadline_transport`), a check that each
body decodes as an image of the expected size, and an optional disk cache of raw responses keyed
by a hash of the *redacted* URL. Secrets (API keys) are registered with :func:`register_secret`
and are replaced by ``REDACTED`` in every message, log record (including httpx's own) and cache
key.

The modules, each depending only on those above it:

- ``redaction``: the registry of secrets, :func:`redact` and the redacting log filter;
- ``config``: :class:`DownloadConfig`;
- ``limits``: the shared rate limit, :class:`FetchCancelled` and the per-request deadline;
- ``bodies``: the image check of a body (:func:`decode_image`) and ``Retry-After``;
- ``fetcher``: :class:`HttpFetcher`, which uses all of them.

This package re-exports the names the rest of the project imports from it.
"""

from __future__ import annotations

from deepsolar.core.http.bodies import BadBody, decode_image, parse_retry_after
from deepsolar.core.http.config import DownloadConfig
from deepsolar.core.http.fetcher import HttpFetcher
from deepsolar.core.http.limits import FetchCancelled
from deepsolar.core.http.redaction import REDACTED, redact, redact_logs, register_secret

__all__ = [
    "REDACTED",
    "BadBody",
    "DownloadConfig",
    "FetchCancelled",
    "HttpFetcher",
    "decode_image",
    "parse_retry_after",
    "redact",
    "redact_logs",
    "register_secret",
]
