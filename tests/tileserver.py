"""A local HTTP tile server on 127.0.0.1 for tests, with fault injection.

It serves a SYNTHETIC world image (a generated pattern, not real imagery) two ways:

- XYZ tiles: ``GET /tiles/{z}/{x}/{y}.png`` -> the world pattern's pixels of that 256-px tile;
- a Google-Static-Maps-style endpoint: ``GET /maps/api/staticmap?center=lat,lon&zoom=z&size=WxH
  &maptype=satellite&key=K`` -> the W x H window of the same world image centred on lat/lon.

The pattern is a pure function of (zoom, global pixel), :func:`pattern_pixels`, so a test can
compute exactly what any grid tile must look like. Faults (:class:`Fault`) make the first N
matching requests answer 429 with Retry-After, 5xx, an HTML page, a truncated or corrupt body, an
image of the wrong size, a dropped connection, or a response slower than the client's timeout.
The server counts requests, keeps a log (time, path, query, status) and the largest number of
requests in flight at once.

Usage::

    with TileServer() as srv:
        srv.add_fault(Fault("status", status=429, retry_after="1", times=1))
        url = srv.xyz_template  # http://127.0.0.1:PORT/tiles/{z}/{x}/{y}.png
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlparse

import cv2
import numpy as np

FaultKind = Literal[
    "status",
    "slow",
    "truncate",
    "corrupt",
    "wrong_size",
    "html",
    "drop",
    "gzip_broken",
    "redirect_loop",
    "trickle",
    "trickle_headers",
    "huge",
    "corrupt_middle",
]


def pattern_pixels(zoom: int, u0: int, v0: int, width: int, height: int) -> np.ndarray:
    """SYNTHETIC world image at ``zoom``: RGB uint8 (height, width, 3) of global pixels
    ``[u0, u0+width) x [v0, v0+height)`` (256-based Web-Mercator pixel coordinates).

    R and G are ramps of the column and row (smooth, so resampling is testable), B identifies the
    256-px block and the zoom (so a crop from the wrong place or zoom is detected).
    """
    u = np.arange(u0, u0 + width, dtype=np.int64)[None, :]
    v = np.arange(v0, v0 + height, dtype=np.int64)[:, None]
    r = np.broadcast_to(u % 256, (height, width))
    g = np.broadcast_to(v % 256, (height, width))
    b = ((u // 256) * 37 + (v // 256) * 101 + zoom * 53) % 256
    return np.stack([r, g, np.broadcast_to(b, (height, width))], axis=-1).astype(np.uint8)


def tile_pixels(tile: Any) -> np.ndarray:
    """The SYNTHETIC world image under one grid tile (what the server serves for it)."""
    px0, py0 = tile.pixel_origin()
    return pattern_pixels(tile.zoom, px0, py0, tile.size_px, tile.size_px)


def tiles_around(grid: Any, lon: float, lat: float, n_x: int, n_y: int) -> list[Any]:
    """An n_x x n_y block of ``grid`` tiles starting at the tile holding (lon, lat), row-major."""
    t0 = grid.tile_at(lon, lat)
    return [grid.tile(t0.x + i, t0.y + j) for j in range(n_y) for i in range(n_x)]


def lonlat_to_global_px(lon: float, lat: float, zoom: int) -> tuple[float, float]:
    """Global Web-Mercator pixel coordinate (256-based) of a lon/lat at ``zoom``."""
    world = 256 * 2**zoom
    lat_r = math.radians(lat)
    u = (lon + 180.0) / 360.0 * world
    v = (1.0 - math.log(math.tan(lat_r) + 1.0 / math.cos(lat_r)) / math.pi) / 2.0 * world
    return u, v


def encode(img: np.ndarray, fmt: str = "png") -> bytes:
    ok, buf = cv2.imencode("." + fmt, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


@dataclass
class Fault:
    """Make matching requests misbehave.

    ``times``: how many requests it hits (None: all of them); counted per path when ``per_path``
    (each tile gets the fault ``times`` times), else over all requests. ``path_regex`` restricts
    it (searched in the path + query). Kinds: ``status`` (answer ``status`` with an optional
    ``retry_after`` header value), ``slow`` (sleep ``delay_s`` then answer normally), ``truncate``
    (announce the full length, send half, close), ``corrupt`` (200 image/png of garbage),
    ``wrong_size`` (a valid PNG of another size), ``html`` (200 text/html error page), ``drop``
    (close without answering), ``gzip_broken`` (``Content-Encoding: gzip`` on a body that is not
    gzip), ``redirect_loop`` (302 to the same URL, forever), ``trickle`` (the body one byte every
    ``delay_s``), ``trickle_headers`` (the status line and headers one byte every ``delay_s``),
    ``huge`` (a valid 8000 x 8000 PNG, small on the wire), ``corrupt_middle`` (the image with 50
    bytes in the middle of its data overwritten: start and end markers intact).
    """

    kind: FaultKind
    times: int | None = 1
    status: int = 500
    retry_after: str | None = None
    delay_s: float = 0.0
    path_regex: str = ""
    per_path: bool = True
    hits: dict[str, int] = field(default_factory=dict)

    def claim(self, target: str) -> bool:
        if self.path_regex and not re.search(self.path_regex, target):
            return False
        key = target if self.per_path else "*"
        n = self.hits.get(key, 0)
        if self.times is not None and n >= self.times:
            return False
        self.hits[key] = n + 1
        return True


@dataclass
class RequestLog:
    t_start: float  # time.monotonic() when the request arrived
    t_end: float
    path: str
    query: dict[str, str]
    status: int  # 0 when the connection was dropped or cut


class TileServer:
    """Threaded HTTP server on 127.0.0.1 (a free port) serving the synthetic pattern."""

    def __init__(
        self,
        *,
        tile_size_px: int = 256,
        max_zoom: int = 23,
        image_format: str = "png",
        static_key: str | None = None,
        missing: set[tuple[int, int, int]] | None = None,
    ) -> None:
        self.tile_size_px = tile_size_px
        self.max_zoom = max_zoom
        self.image_format = image_format
        self.static_key = static_key  # when set, the static endpoint answers 403 to other keys
        self.missing = set(missing or ())  # (z, x, y) answered 404
        self.faults: list[Fault] = []
        self.log: list[RequestLog] = []
        self.keys_seen: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> TileServer:
        server = self

        class Handler(_Handler):
            tileserver = server

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> TileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses
    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def xyz_template(self) -> str:
        return f"{self.url}/tiles/{{z}}/{{x}}/{{y}}.{self.image_format}"

    @property
    def static_base_url(self) -> str:
        return f"{self.url}/maps/api/staticmap"

    # -- faults and counters
    def add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def reset_counters(self) -> None:
        with self._lock:
            self.log.clear()
            self.keys_seen.clear()
            self.max_in_flight = 0

    @property
    def n_requests(self) -> int:
        return len(self.log)

    def requests_for(self, path_regex: str) -> list[RequestLog]:
        with self._lock:
            return [r for r in self.log if re.search(path_regex, r.path)]

    # -- rendering
    def render_tile(self, z: int, x: int, y: int) -> np.ndarray:
        t = self.tile_size_px
        # A 512-px server tile at z covers the area of a 256-px tile at z: pattern at zoom z+1.
        scale = t // 256
        zz = z + int(math.log2(scale)) if scale > 1 else z
        return pattern_pixels(zz, x * t, y * t, t, t)

    def render_static(self, lat: float, lon: float, zoom: int, w: int, h: int) -> np.ndarray:
        u, v = lonlat_to_global_px(lon, lat, zoom)
        return pattern_pixels(zoom, round(u - w / 2), round(v - h / 2), w, h)


class _Handler(BaseHTTPRequestHandler):
    tileserver: TileServer
    protocol_version = "HTTP/1.1"  # keep-alive, like real tile servers

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return  # quiet: tests inspect TileServer.log instead

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        srv = self.tileserver
        t0 = time.monotonic()
        parsed = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
        with srv._lock:
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
            fault = next((f for f in srv.faults if f.claim(self.path)), None)
        logged = False
        try:
            if fault is not None and fault.kind == "slow":
                time.sleep(fault.delay_s)
            status, ctype, body, extra = self._answer(parsed.path, query, fault)
            special = ("drop", "truncate", "trickle", "trickle_headers")
            mode = fault.kind if fault is not None and fault.kind in special else "send"
            # Logged before the client can see the answer, so tests never race the log.
            with srv._lock:
                srv.log.append(
                    RequestLog(
                        t0, time.monotonic(), parsed.path, query, 0 if mode == "drop" else status
                    )
                )
                srv.in_flight -= 1
                logged = True
            if mode == "drop":
                self.close_connection = True
                return
            if mode == "trickle_headers":
                head = (
                    f"HTTP/1.1 {status} OK\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode()
                for i in range(len(head)):
                    self.wfile.write(head[i : i + 1])
                    self.wfile.flush()
                    time.sleep(fault.delay_s)  # type: ignore[union-attr]
                self.wfile.write(body)
                self.close_connection = True
                return
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()
            if mode == "truncate":  # announce the full length, send half, hang up
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
            elif mode == "trickle":  # one byte every delay_s
                for i in range(len(body)):
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(fault.delay_s)  # type: ignore[union-attr]
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): nothing to answer
        finally:
            if not logged:
                with srv._lock:
                    srv.log.append(RequestLog(t0, time.monotonic(), parsed.path, query, 0))
                    srv.in_flight -= 1

    def _answer(
        self, path: str, query: dict[str, str], fault: Fault | None
    ) -> tuple[int, str, bytes, dict[str, str]]:
        srv = self.tileserver
        text = "text/plain"
        if fault is not None and fault.kind == "status":
            extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return fault.status, text, b"injected error\n", extra
        if fault is not None and fault.kind == "redirect_loop":
            return 302, text, b"", {"Location": self.path}
        if fault is not None and fault.kind == "html":
            page = (
                b"<!DOCTYPE html><html><body><h1>Service temporarily unavailable</h1></body></html>"
            )
            return 200, "text/html", page, {}
        if "key" in query:
            with srv._lock:
                srv.keys_seen.append(query["key"])
        m = re.fullmatch(r"/tiles/(\d+)/(\d+)/(\d+)\.(png|jpg|jpeg)", path)
        if m:
            z, x, y = (int(g) for g in m.groups()[:3])
            if (
                z > srv.max_zoom
                or not (0 <= x < 2**z and 0 <= y < 2**z)
                or (z, x, y) in srv.missing
            ):
                return 404, text, b"no such tile\n", {}
            img = srv.render_tile(z, x, y)
        elif path == "/maps/api/staticmap":
            if srv.static_key is not None and query.get("key") != srv.static_key:
                return 403, text, b"The provided API key is invalid.\n", {}
            try:
                lat, lon = (float(p) for p in query["center"].split(","))
                zoom = int(query["zoom"])
                w, h = (int(p) for p in query["size"].split("x"))
            except (KeyError, ValueError):
                return 400, text, b"bad parameters\n", {}
            img = srv.render_static(lat, lon, zoom, w, h)
        else:
            return 404, text, b"not found\n", {}
        ctype = "image/png" if srv.image_format == "png" else "image/jpeg"
        if fault is not None and fault.kind == "wrong_size":
            img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2))
        if fault is not None and fault.kind == "huge":
            return 200, "image/png", _huge_png(), {}
        body = encode(img, srv.image_format)
        if fault is not None and fault.kind == "corrupt":
            body = body[:8] + bytes(np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8))
        if fault is not None and fault.kind == "corrupt_middle":
            body = corrupt_middle(body)
        if fault is not None and fault.kind == "gzip_broken":
            return 200, ctype, body, {"Content-Encoding": "gzip"}
        return 200, ctype, body, {}


def corrupt_middle(body: bytes, seed: int = 3) -> bytes:
    """``body`` with 50 bytes in the middle overwritten by random bytes without 0xFF (so JPEG
    markers stay where they were): the file still starts and ends like a valid image."""
    rng = np.random.default_rng(seed)
    junk = rng.integers(0, 255, 50, dtype=np.uint8).tobytes()
    mid = len(body) // 2
    return body[:mid] + junk + body[mid + 50 :]


_HUGE: list[bytes] = []


def _huge_png() -> bytes:
    if not _HUGE:
        _HUGE.append(encode(np.zeros((8000, 8000, 3), np.uint8), "png"))
    return _HUGE[0]
