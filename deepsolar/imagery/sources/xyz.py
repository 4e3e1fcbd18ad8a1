"""Any slippy-map (XYZ) tile server as an imagery source: grid tiles cut from server tiles."""

from __future__ import annotations

import math
import string
import threading
from collections import OrderedDict
from typing import Any, Literal
from urllib.parse import urlparse

import cv2
import numpy as np
from pydantic import Field, field_validator, model_validator
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from deepsolar.core.config import StrictModel
from deepsolar.core.errors import DownloadError, SourceError
from deepsolar.core.http import REDACTED, HttpFetcher
from deepsolar.geo.tiling import Tile
from deepsolar.imagery.sources.base import ImagerySource, env_secret

_SERVER_TILE_MEMORY_CACHE = 64  # decoded server tiles kept per XYZ source (~12 MB at 256 px)
_XYZ_FIELDS = {"z", "x", "y", "-y", "s", "key"}


def _template_fields(template: str) -> set[str]:
    try:
        return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as err:
        raise ValueError(f"url_template has unbalanced braces ({err})") from None


class XYZSourceConfig(StrictModel):
    """Any slippy-map tile server: a ``{z}/{x}/{y}`` URL template.

    ``{-y}`` for TMS row order, ``{s}`` for subdomains, ``{key}`` for a key read from
    ``api_key_env``.
    """

    kind: Literal["xyz"] = "xyz"
    url_template: str = Field(description="e.g. https://tiles.example.com/{z}/{x}/{y}.png")
    server_tile_size_px: int = Field(256, ge=64, le=4096, description="size of the server's tiles")
    max_zoom: int | None = Field(
        None, ge=0, le=30, description="deepest zoom the server has; deeper grids are upsampled"
    )
    headers: dict[str, str] = Field(default_factory=dict, description="extra HTTP headers")
    name: str | None = Field(None, description="source name in the manifest (default: xyz:<host>)")
    subdomains: list[str] = Field(default_factory=lambda: ["a", "b", "c"])
    api_key_env: str | None = Field(
        None, description="environment variable holding the key substituted for {key}"
    )
    missing_tiles: Literal["error", "outside"] = Field(
        "error", description="what a 404/204 from the server means: an error, or no coverage"
    )
    bounds_lonlat: tuple[float, float, float, float] | None = Field(
        None, description="coverage of the server as west, south, east, north (tiles outside skip)"
    )

    @field_validator("url_template")
    @classmethod
    def _check_template(cls, v: str) -> str:
        fields = _template_fields(v)
        unknown = fields - _XYZ_FIELDS
        if unknown:
            raise ValueError(
                f"url_template has unknown placeholder(s) {sorted(unknown)}; allowed are "
                "{z}, {x}, {y} (or {-y}), {s}, {key}"
            )
        missing = [f for f in ("z", "x") if f not in fields]
        if not ({"y", "-y"} & fields):
            missing.append("y")
        if missing:
            raise ValueError(
                "url_template must contain {z}, {x} and {y}; missing "
                + ", ".join("{" + m + "}" for m in missing)
            )
        scheme = urlparse(v.replace("{", "").replace("}", "")).scheme.lower()
        if scheme not in ("http", "https", "file"):
            raise ValueError(
                f"url_template must start with http://, https:// or file:// (got scheme {scheme!r})"
            )
        if scheme != "file" and not urlparse(v).netloc:
            raise ValueError("url_template has no host name")
        return v

    @model_validator(mode="after")
    def _check_placeholders(self) -> XYZSourceConfig:
        fields = _template_fields(self.url_template)
        if "key" in fields and not self.api_key_env:
            raise ValueError("url_template uses {key}: set api_key_env to the variable holding it")
        if "s" in fields and not self.subdomains:
            raise ValueError("url_template uses {s}: subdomains must not be empty")
        if self.bounds_lonlat is not None:
            w, s, e, n = self.bounds_lonlat
            if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
                raise ValueError("bounds_lonlat must be west, south, east, north in degrees")
        return self

    def build(self) -> XYZSource:
        """The source this config describes (reads the key from the environment).

        Returns:
            The XYZ source.

        Raises:
            ConfigError: If ``api_key_env`` is set but the variable is empty or missing.
        """
        return XYZSource(self)


class XYZSource(ImagerySource):
    """Assembles a grid tile from the server tiles covering its pixel window (crop / resample).

    Args:
        config: The tile server's settings; a key is read from ``config.api_key_env`` if set.
    """

    needs_network = True

    def __init__(self, config: XYZSourceConfig) -> None:
        self.config = config
        self.name = config.name or f"xyz:{urlparse(config.url_template).netloc or 'file'}"
        self._key = (
            env_secret(config.api_key_env, "tile server key") if config.api_key_env else None
        )
        self._fields = _template_fields(config.url_template)
        self._mem: OrderedDict[tuple[int, int, int], np.ndarray | None] = OrderedDict()
        self._inflight: dict[tuple[int, int, int], threading.Event] = {}
        self._lock = threading.Lock()

    def coverage_lonlat(self) -> BaseGeometry | None:
        """The configured ``bounds_lonlat``.

        Returns:
            The coverage box in EPSG:4326 degrees, or None when not configured.
        """
        return box(*self.config.bounds_lonlat) if self.config.bounds_lonlat else None

    def server_tile_url(self, z: int, x: int, y: int, *, redacted: bool = False) -> str:
        """URL of one server tile.

        Args:
            z: Server zoom level.
            x: Server tile column.
            y: Server tile row (XYZ order, north first; ``{-y}`` is derived for TMS).
            redacted: Replace the key with REDACTED (for messages and caching).

        Returns:
            The URL.
        """
        c = self.config
        values: dict[str, Any] = {"z": z, "x": x, "y": y, "-y": 2**z - 1 - y}
        if "s" in self._fields:
            values["s"] = c.subdomains[(x + y) % len(c.subdomains)]
        if "key" in self._fields:
            values["key"] = REDACTED if redacted else self._key
        return c.url_template.format(**values)

    def _server_tile(self, z: int, x: int, y: int, fetcher: HttpFetcher) -> np.ndarray | None:
        """One decoded server tile, None if the server has none (missing_tiles: outside)."""
        key = (z, x, y)
        while True:
            with self._lock:
                if key in self._mem:
                    self._mem.move_to_end(key)
                    return self._mem[key]
                event = self._inflight.get(key)
                if event is None:  # nobody fetches it: this thread does
                    event = self._inflight[key] = threading.Event()
                    break
            event.wait()  # a neighbouring tile's thread is fetching it; then read the cache
            with self._lock:
                if key in self._mem:
                    continue
            # That fetch failed: try it ourselves (loop claims the key).
        try:
            t = self.config.server_tile_size_px
            try:
                img: np.ndarray | None = fetcher.get_image(
                    self.server_tile_url(z, x, y),
                    redacted_url=self.server_tile_url(z, x, y, redacted=True),
                    headers=self.config.headers,
                    expected_size=(t, t),
                )
            except DownloadError as err:
                if self.config.missing_tiles == "outside" and err.status in (204, 404, 410):
                    img = None
                else:
                    raise
            with self._lock:
                self._mem[key] = img
                while len(self._mem) > _SERVER_TILE_MEMORY_CACHE:
                    self._mem.popitem(last=False)
            return img
        finally:
            with self._lock:
                self._inflight.pop(key, None)
            event.set()

    def fetch_tile(self, tile: Tile, fetcher: HttpFetcher | None) -> np.ndarray | None:
        """The grid tile, from the server tiles covering it (see :meth:`fetch_tile_coverage`).

        Args:
            tile: The grid tile to deliver.
            fetcher: The shared HTTP fetcher (required).

        Returns:
            The RGB uint8 image (tile.size_px, tile.size_px, 3), or None when no server tile
            it needs exists.

        Raises:
            SourceError: If ``fetcher`` is None.
            DownloadError: If a server tile cannot be fetched.
        """
        return self.fetch_tile_coverage(tile, fetcher)[0]

    def fetch_tile_coverage(
        self, tile: Tile, fetcher: HttpFetcher | None
    ) -> tuple[np.ndarray | None, bool]:
        """The grid tile, and True when some of the server tiles it needs are missing.

        Missing means gaps answered 404/204/410 with ``missing_tiles: outside``: those parts are
        black. Server tiles are cropped when the scales match, resampled otherwise (over-zoom
        beyond ``max_zoom``).

        Args:
            tile: The grid tile to deliver.
            fetcher: The shared HTTP fetcher (required).

        Returns:
            The RGB uint8 image (tile.size_px, tile.size_px, 3) or None when no server tile it
            needs exists, and whether part of it is missing.

        Raises:
            SourceError: If ``fetcher`` is None.
            DownloadError: If a server tile cannot be fetched.
        """
        if fetcher is None:
            raise SourceError(
                "the XYZ source needs an HttpFetcher", fix="call it through download_tiles"
            )
        c = self.config
        zs = min(tile.zoom, c.max_zoom) if c.max_zoom is not None else tile.zoom
        t = c.server_tile_size_px
        # Server pixels per grid pixel (grid pixels are 256-based Web-Mercator pixels).
        f = t * 2.0**zs / (256 * 2.0**tile.zoom)
        s = tile.size_px
        px0, py0 = tile.pixel_origin()
        exact = f >= 1 and float(f).is_integer()
        margin = 0 if exact else 1  # bilinear sampling reads one pixel beyond the window
        tx0 = math.floor((px0 * f - margin) / t)
        ty0 = math.floor((py0 * f - margin) / t)
        tx1 = math.ceil(((px0 + s) * f + margin) / t) - 1
        ty1 = math.ceil(((py0 + s) * f + margin) / t) - 1
        n = 2**zs
        mosaic = np.zeros(((ty1 - ty0 + 1) * t, (tx1 - tx0 + 1) * t, 3), np.uint8)
        any_data = gap = False
        for ty in range(ty0, ty1 + 1):
            for tx in range(tx0, tx1 + 1):
                if not (0 <= tx < n and 0 <= ty < n):
                    continue  # beyond the edge of the world (last row/column of the grid)
                img = self._server_tile(zs, tx, ty, fetcher)
                if img is None:
                    gap = gap or self._window_touches(tile, f, tx, ty)
                else:
                    any_data = True
                    oy, ox = (ty - ty0) * t, (tx - tx0) * t
                    mosaic[oy : oy + t, ox : ox + t] = img
        if not any_data:
            return None, False
        ox0, oy0 = px0 * f - tx0 * t, py0 * f - ty0 * t  # window origin inside the mosaic
        if exact:
            x0, y0, w = int(ox0), int(oy0), int(s * f)
            crop = mosaic[y0 : y0 + w, x0 : x0 + w]
            if w == s:
                return np.ascontiguousarray(crop), gap
            return cv2.resize(crop, (s, s), interpolation=cv2.INTER_AREA), gap
        # Over-zoom (or a non-integer scale): sample each output pixel centre bilinearly.
        m = np.array([[f, 0.0, ox0 + 0.5 * f - 0.5], [0.0, f, oy0 + 0.5 * f - 0.5]])
        img = cv2.warpAffine(
            mosaic,
            m,
            (s, s),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        return img, gap

    def _window_touches(self, tile: Tile, f: float, tx: int, ty: int) -> bool:
        """Whether server tile (tx, ty) overlaps the grid tile's own pixels.

        Not only the one-pixel resampling margin: a missing one then leaves a black patch in the
        tile.
        """
        t = self.config.server_tile_size_px
        px0, py0 = tile.pixel_origin()
        s = tile.size_px
        return (
            tx * t < (px0 + s) * f
            and (tx + 1) * t > px0 * f
            and ty * t < (py0 + s) * f
            and (ty + 1) * t > py0 * f
        )
