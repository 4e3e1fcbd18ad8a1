"""The HTTP client (deepsolar.core.http): body checks, Retry-After, retries, timeouts and the
per-request deadline, and the rate limit, against tests/fixtures/tileserver.py on 127.0.0.1 (moved from
tests/test_download.py and tests/test_download_faults.py; secret redaction is tested in
tests/imagery/test_store_security.py). Tile images are the server's SYNTHETIC pattern."""

from __future__ import annotations

import email.utils
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from deepsolar.core.errors import DownloadError
from deepsolar.core.http import (
    BadBody,
    DownloadConfig,
    HttpFetcher,
    decode_image,
    parse_retry_after,
)
from deepsolar.geo.tiling import Tile
from tests.fixtures.downloads import FAST
from tests.fixtures.downloads import block_tiles as _tiles
from tests.fixtures.downloads import tile_url as _url
from tests.fixtures.tileserver import (
    Fault,
    TileServer,
    corrupt_middle,
    encode,
    pattern_pixels,
)
from tests.fixtures.tileserver import tile_pixels as _expected

# --------------------------------------------------------------------------------------------
# Body check and Retry-After


def test_decode_image_rejects_bad_bodies() -> None:
    img = pattern_pixels(5, 0, 0, 64, 48)
    png, jpg = encode(img, "png"), encode(img, "jpg")
    assert np.array_equal(decode_image(png, (64, 48)), img)
    assert decode_image(jpg, (64, 48)).shape == (48, 64, 3)
    cases = {
        b"": "empty",
        b"<!DOCTYPE html><html>503</html>": "text",
        b'{"error": "quota"}': "text",
        png[: len(png) // 2]: "truncated",
        jpg[: len(jpg) // 2]: "truncated",
        b"\x00\x01\x02garbage" * 10: "does not decode",
    }
    for body, why in cases.items():
        with pytest.raises(BadBody, match=why):
            decode_image(body)
    with pytest.raises(BadBody, match="64x48 px, expected 256x256"):
        decode_image(png, (256, 256))


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 7, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(7, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0


@pytest.mark.network
@pytest.mark.parametrize("retry_after", ["1", "date"])
def test_429_retry_after_is_honoured(server: TileServer, retry_after: str) -> None:
    if retry_after == "date":  # an HTTP date 2 s ahead (1 s resolution: the wait is 1-2 s)
        retry_after = email.utils.formatdate(time.time() + 2, usegmt=True)
    server.add_fault(Fault("status", status=429, retry_after=retry_after, times=1))
    tile = _tiles(1, 1)[0]
    with HttpFetcher(FAST) as f:
        img = f.get_image(_url(server, tile), expected_size=(256, 256))
    assert np.array_equal(img, _expected(tile))
    first, second = server.log
    assert first.status == 429 and second.status == 200
    assert second.t_start - first.t_end >= 0.95  # backoff alone would be ~0.01 s


@pytest.mark.network
@pytest.mark.parametrize(
    "fault",
    [
        Fault("status", status=503, times=2),
        Fault("status", status=500, times=1),
        Fault("status", status=502, times=1),
        Fault("corrupt"),
        Fault("truncate"),
        Fault("wrong_size"),
        Fault("html"),
        Fault("drop"),
    ],
    ids=lambda f: f.kind + (str(f.status) if f.kind == "status" else ""),
)
def test_transient_faults_are_retried(server: TileServer, fault: Fault) -> None:
    server.add_fault(fault)
    tile = _tiles(1, 1)[0]
    with HttpFetcher(FAST) as f:
        img = f.get_image(_url(server, tile), expected_size=(256, 256))
        assert f.stats.retries == fault.times
    assert np.array_equal(img, _expected(tile))
    assert server.n_requests == fault.times + 1


@pytest.mark.network
def test_timeout_is_retried(server: TileServer) -> None:
    server.add_fault(Fault("slow", delay_s=2.5))
    tile = _tiles(1, 1)[0]
    cfg = FAST.model_copy(update={"timeout_s": 0.3})
    t0 = time.monotonic()
    with HttpFetcher(cfg) as f:
        img = f.get_image(_url(server, tile), expected_size=(256, 256))
    assert np.array_equal(img, _expected(tile))
    assert 0.3 <= time.monotonic() - t0 < 2.0  # gave up on the slow answer, did not wait it out


@pytest.mark.network
def test_permanent_failure_is_one_clear_error(server: TileServer) -> None:
    server.add_fault(Fault("status", status=500, times=None))
    tile = _tiles(1, 1)[0]
    with (
        HttpFetcher(FAST.model_copy(update={"max_retries": 2})) as f,
        pytest.raises(DownloadError) as e,
    ):
        f.get_image(_url(server, tile), expected_size=(256, 256))
    msg = str(e.value)
    assert "after 3 attempts" in msg and "HTTP 500" in msg and _url(server, tile) in msg
    assert "What to do:" in msg and "re-run" in msg
    assert e.value.status == 500 and e.value.attempts == 3
    assert server.n_requests == 3
    # A server demanding an unreasonable wait fails at once instead of hanging the run.
    server.clear_faults()
    server.add_fault(Fault("status", status=429, retry_after="3600", times=None))
    t0 = time.monotonic()
    with HttpFetcher(FAST) as f, pytest.raises(DownloadError, match="asks to wait 3600 s"):
        f.get_image(_url(server, _tiles(2, 1)[1]))
    assert time.monotonic() - t0 < 1.0


def test_unreachable_server_is_one_clear_error() -> None:
    with TileServer() as srv:
        url = f"{srv.url}/tiles/1/0/0.png"
    # The server is stopped: its port refuses connections.
    with (
        HttpFetcher(FAST.model_copy(update={"max_retries": 1})) as f,
        pytest.raises(DownloadError) as e,
    ):
        f.get_image(url)
    assert "connection error" in str(e.value) and "after 2 attempts" in str(e.value)
    assert "reachable" in str(e.value)


@pytest.mark.network
def test_rate_limit_is_respected(server: TileServer) -> None:
    rate, n = 20.0, 21
    cfg = FAST.model_copy(update={"max_requests_per_s": rate, "max_concurrency": 8})
    tiles = _tiles(7, 3)
    with HttpFetcher(cfg) as f, ThreadPoolExecutor(8) as pool:
        t0 = time.monotonic()
        list(pool.map(lambda t: f.get_image(_url(server, t)), tiles))
        elapsed = time.monotonic() - t0
    assert len(tiles) == n == server.n_requests
    assert elapsed >= (n - 1) / rate * 0.95
    # Seen by the server: in any 0.5 s window at most 0.5 * rate (+2 for scheduling jitter on a
    # busy machine) requests started; without the limit all 21 arrive within a few ms.
    starts = sorted(r.t_start for r in server.log)
    most = max(np.searchsorted(starts, s + 0.5) - i for i, s in enumerate(starts))
    assert most <= 0.5 * rate + 2


# --------------------------------------------------------------------------------------------
# Any error of one request is retried; the deadline; the body check


@pytest.mark.network
@pytest.mark.parametrize("kind", ["gzip_broken", "redirect_loop"])
@pytest.mark.network
def test_one_bad_response_is_retried(server: TileServer, kind: str) -> None:
    # httpx follows 20 redirects: 25 loop hops end the first attempt with TooManyRedirects
    server.add_fault(Fault(kind, times=25 if kind == "redirect_loop" else 1))
    tile = _tiles(1, 1)[0]
    with HttpFetcher(FAST) as f:
        img = f.get_image(_url(server, tile), expected_size=(256, 256))
        assert f.stats.retries == 1
    assert np.array_equal(img, _expected(tile))


def _assert_cut_at_one_second(server: TileServer, tile: Tile) -> DownloadConfig:
    """With timeout_s 1 and one retry, fetching ``tile`` fails in two attempts of ~1 s each;
    returns that fetcher config."""
    cfg = FAST.model_copy(update={"timeout_s": 1.0, "max_retries": 1})
    t0 = time.monotonic()
    with HttpFetcher(cfg) as f, pytest.raises(DownloadError, match="within timeout_s=1 s"):
        f.get_image(_url(server, tile), expected_size=(256, 256))
    elapsed = time.monotonic() - t0
    assert 2 * 1.0 <= elapsed < 2 * 1.0 + 1.0, elapsed  # two attempts, each cut at 1 s
    return cfg


@pytest.mark.network
def test_a_trickling_body_is_cut_at_the_deadline(server: TileServer) -> None:
    server.add_fault(Fault("trickle", delay_s=0.05, times=None))  # a 256-px PNG takes minutes
    _assert_cut_at_one_second(server, _tiles(1, 1)[0])


@pytest.mark.network
def test_trickling_headers_are_cut_at_the_deadline(server: TileServer) -> None:
    # the status line and headers one byte every 0.2 s: ~17 s; each read is quick, so httpx's
    # per-read timeout alone would wait for all of them
    server.add_fault(Fault("trickle_headers", delay_s=0.2, times=None))
    tile = _tiles(1, 1)[0]
    cfg = _assert_cut_at_one_second(server, tile)
    server.clear_faults()
    with HttpFetcher(cfg) as f:  # the deadline does not outlive its request
        time.sleep(1.1)
        assert np.array_equal(
            f.get_image(_url(server, tile), expected_size=(256, 256)), _expected(tile)
        )


@pytest.mark.network
def test_oversized_image_is_refused_from_its_header(server: TileServer) -> None:
    huge = encode(np.zeros((8000, 8000, 3), np.uint8), "png")
    t0 = time.perf_counter()
    with pytest.raises(BadBody, match="8000x8000 px, expected 256x256"):
        decode_image(huge, (256, 256))
    with pytest.raises(BadBody, match="larger than any tile"):
        decode_image(huge)
    assert time.perf_counter() - t0 < 0.1  # decoding it would take ~0.3 s and 192 MB
    server.add_fault(Fault("huge", times=1))
    tile = _tiles(1, 1)[0]
    with HttpFetcher(FAST) as f:
        assert np.array_equal(
            f.get_image(_url(server, tile), expected_size=(256, 256)), _expected(tile)
        )
        assert f.stats.retries == 1
    # A body larger than max_body_mb is refused as it arrives.
    server.add_fault(Fault("huge", times=None))
    cfg = FAST.model_copy(update={"max_body_mb": 0.01, "max_retries": 0})
    with HttpFetcher(cfg) as f, pytest.raises(DownloadError, match="larger than max_body_mb"):
        f.get_image(_url(server, tile))


@pytest.mark.network
def test_corrupt_jpeg_data_with_valid_markers_is_a_failure() -> None:
    img = pattern_pixels(18, 1000, 2000, 256, 256)
    jpg = encode(img, "jpg")
    bad = corrupt_middle(jpg)
    assert bad[:2] == b"\xff\xd8" and bad[-2:] == b"\xff\xd9" and len(bad) == len(jpg)
    with pytest.raises(BadBody, match="JPEG data is corrupt"):
        decode_image(bad, (256, 256))
    png = encode(img, "png")
    with pytest.raises(BadBody, match="corrupt"):
        decode_image(corrupt_middle(png), (256, 256))
    # Of many random corruptions, libjpeg-turbo flags nearly all; the few it cannot see (JPEG has
    # no checksum) are measured here so a regression to a lax decoder shows.
    rng = np.random.default_rng(0)
    caught = 0
    for _ in range(40):
        b = bytearray(jpg)
        at = int(rng.integers(len(b) // 4, 3 * len(b) // 4))
        b[at : at + 50] = rng.integers(0, 255, 50, dtype=np.uint8).tobytes()
        try:
            decode_image(bytes(b), (256, 256))
        except BadBody:
            caught += 1
    assert caught >= 34, caught  # a lax decode (cv2 / Pillow) catches none of them
