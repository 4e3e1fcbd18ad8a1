"""How politely and how robustly to download: :class:`DownloadConfig`."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from deepsolar.core.config import StrictModel

USER_AGENT = "deepsolar/0.1 (solar panel mapping; tile downloader)"


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
