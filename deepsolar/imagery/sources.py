"""Imagery sources behind one interface: local GeoTIFF/COG, any XYZ tile server, Google Static Maps.

Every source turns a grid :class:`~deepsolar.geo.tiling.Tile` into an RGB uint8 array of exactly the
tile's pixels (``tile.size_px`` square, on the Web-Mercator grid), or ``None`` when the tile lies
outside the source's coverage. Network sources fetch through the one
:class:`~deepsolar.imagery.download.HttpFetcher` (rate limit, retries, cache); the local source reads its
raster directly. Configs are a pydantic union discriminated by ``kind``::

    source:
      kind: xyz
      url_template: https://tiles.example.com/{z}/{x}/{y}.jpg
      max_zoom: 19
"""

from __future__ import annotations

import math
import os
import string
import threading
import warnings
from abc import ABC, abstractmethod
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode, urlparse

import cv2
import numpy as np
from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from deepsolar.core.config import StrictModel, short_repr
from deepsolar.core.errors import ConfigError, DownloadError, InputDataError, SourceError
from deepsolar.geo.tiling import LONLAT, WEB_MERCATOR, Tile
from deepsolar.imagery.download import REDACTED, HttpFetcher, register_secret

GOOGLE_STATIC_MAX_SIZE_PX = 640  # the Static Maps API's largest size at scale=1 (standard plan)
_SERVER_TILE_MEMORY_CACHE = 64  # decoded server tiles kept per XYZ source (~12 MB at 256 px)


class ImagerySource(ABC):
    """One imagery provider. Subclasses set ``name`` and ``needs_network``."""

    name: str
    needs_network: bool = False

    @abstractmethod
    def fetch_tile(self, tile: Tile, fetcher: HttpFetcher | None) -> np.ndarray | None:
        """RGB uint8 array (tile.size_px, tile.size_px, 3) of the tile, or None if outside coverage."""

    def fetch_tile_coverage(
        self, tile: Tile, fetcher: HttpFetcher | None
    ) -> tuple[np.ndarray | None, bool]:
        """``(image, partial)``: the tile as :meth:`fetch_tile` gives it, and whether part of it
        has no imagery (black there). Sources that can tell override this."""
        return self.fetch_tile(tile, fetcher), False

    def coverage_lonlat(self) -> BaseGeometry | None:
        """Where the source has imagery (EPSG:4326 polygon), or None if unknown / worldwide."""
        return None

    def check_tile(self, tile: Tile) -> None:
        """Raise SourceError if this source cannot serve tiles of this grid at all (checked once)."""
        return None

    def close(self) -> None:
        """Release files or connections held by the source."""
        return None

    def __enter__(self) -> ImagerySource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# Local GeoTIFF / COG


Resampling = Literal["nearest", "bilinear", "cubic", "lanczos", "average"]


class LocalRasterSourceConfig(StrictModel):
    """A georeferenced orthophoto (GeoTIFF, COG, or any GDAL raster) read in windows and warped
    onto the tile grid."""

    kind: Literal["local"] = "local"
    path: Path = Field(description="raster file (any CRS; it is warped to EPSG:3857)")
    name: str | None = Field(
        None, description="source name in the manifest (default: local:<file>)"
    )
    bands: list[int] | None = Field(
        None,
        description="1-based band numbers for R, G, B (or one band for grey); default: 1,2,3 or 1",
    )
    value_range: tuple[float, float] | None = Field(
        None, description="pixel values mapped to 0..255 for non-8-bit rasters, e.g. [0, 4095]"
    )
    resampling: Resampling = "bilinear"

    @field_validator("bands")
    @classmethod
    def _check_bands(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (len(v) not in (1, 3) or min(v) < 1):
            raise ValueError("bands must list 1 or 3 band numbers, counting from 1")
        return v

    @field_validator("value_range")
    @classmethod
    def _check_range(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not v[0] < v[1]:
            raise ValueError("value_range must be [low, high] with low < high")
        return v

    def build(self) -> LocalRasterSource:
        return LocalRasterSource(self)


class LocalRasterSource(ImagerySource):
    """Reads a local raster through a WarpedVRT whose grid is exactly the tile's pixel grid."""

    needs_network = False

    def __init__(self, config: LocalRasterSourceConfig) -> None:
        import rasterio
        from rasterio.enums import ColorInterp, MaskFlags, Resampling
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
        from rasterio.warp import transform_bounds

        self.config = config
        self.path = Path(config.path).expanduser()
        self.name = config.name or f"local:{self.path.name}"
        if not self.path.is_file():
            raise InputDataError(
                "raster file not found",
                where=str(self.path),
                fix="check the path of the orthophoto in the source config",
            )
        try:
            with warnings.catch_warnings():
                # An ungeoreferenced file gets a clear InputDataError below, not a warning.
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                src = rasterio.open(self.path)
        except RasterioIOError as err:
            raise InputDataError(
                f"cannot read the file as a raster ({err})",
                where=str(self.path),
                fix="pass a GeoTIFF / COG (or another raster GDAL reads); check it is not truncated "
                "with 'gdalinfo -checksum'",
            ) from None
        try:
            self._validate(src, ColorInterp, MaskFlags)
            self._check_complete(src)
            self._crs = src.crs
            b = transform_bounds(src.crs, LONLAT, *src.bounds, densify_pts=21)
            self._bounds_3857 = transform_bounds(src.crs, WEB_MERCATOR, *src.bounds, densify_pts=21)
        finally:
            src.close()
        self._coverage = box(*b)
        self._resampling = Resampling[config.resampling]
        self._local = threading.local()
        self._open: list[Any] = []
        self._open_lock = threading.Lock()

    def _validate(self, src: Any, ColorInterp: Any, MaskFlags: Any) -> None:
        from affine import Affine

        if src.crs is None:
            how = (
                "it has ground control points but no CRS for them"
                if src.gcps[0]
                else "it has no coordinate reference system"
            )
            raise InputDataError(
                f"the raster is not georeferenced: {how}",
                where=str(self.path),
                fix="georeference it first, e.g. 'gdal_translate -a_srs EPSG:26918 -a_ullr <ulx> "
                "<uly> <lrx> <lry> in.tif out.tif', or put a world file (.tfw) and a .prj beside it; "
                "for GCPs run 'gdalwarp -t_srs EPSG:3857 in.tif out.tif'",
            )
        if src.transform == Affine.identity():
            raise InputDataError(
                "the raster has a CRS but no geotransform (pixel positions are unknown)",
                where=str(self.path),
                fix="set its corner coordinates, e.g. 'gdal_translate -a_ullr <ulx> <uly> <lrx> "
                "<lry> in.tif out.tif', or add a world file (.tfw)",
            )
        count = src.count
        bands = self.config.bands
        if bands is None:
            ci = list(src.colorinterp)
            colour = [i + 1 for i, c in enumerate(ci) if c != ColorInterp.alpha]
            bands = colour[:3] if len(colour) >= 3 else colour[:1]
        if not bands or max(bands) > count:
            raise ConfigError(
                f"bands {bands} asked for, but the raster has {count} band(s)",
                where=str(self.path),
                fix="set 'bands' to 1-3 band numbers that exist (e.g. [1, 2, 3])",
            )
        self._bands = bands
        dtypes = {src.dtypes[b - 1] for b in bands}
        if dtypes != {"uint8"} and self.config.value_range is None:
            raise ConfigError(
                f"the raster's pixels are {sorted(dtypes)}, not 8-bit",
                where=str(self.path),
                fix="set value_range: [low, high] in the source config to map values to 0..255 "
                "(e.g. [0, 4095] for 12-bit, [0, 1] for reflectance), or convert it with "
                "'gdal_translate -ot Byte -scale'",
            )
        self._palette = None
        if len(bands) == 1 and src.colorinterp[bands[0] - 1] == ColorInterp.palette:
            cmap = src.colormap(bands[0])
            lut = np.zeros((256, 3), np.uint8)
            for k, rgba in cmap.items():
                if 0 <= k < 256:
                    lut[k] = rgba[:3]
            self._palette = lut
        # A raster with neither nodata nor alpha nor an internal mask marks no pixel as empty, so
        # the warp adds an alpha band to tell "outside the raster" from "black pixels".
        flags = src.mask_flag_enums[0]
        self._add_alpha = flags == [MaskFlags.all_valid]

    def _check_complete(self, src: Any) -> None:
        """Refuse a truncated TIFF before any tile is written: every data block the file's
        index lists must lie inside the file (a cut-off download or copy opens fine when the
        index comes first, as in a COG, and fails only when the missing blocks are read)."""
        if src.driver != "GTiff":
            return
        size = self.path.stat().st_size
        n_blocks = 0
        for bidx in range(1, src.count + 1):
            for (row, col), _ in src.block_windows(bidx):
                n_blocks += 1
                if n_blocks > 500_000:  # ~7 s; a huge raster: its first 500,000 blocks are checked
                    return
                off = src.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=bidx)
                length = src.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=bidx)
                if off and length and int(off) + int(length) > size:
                    raise InputDataError(
                        f"the raster file is truncated: block ({row}, {col}) of band {bidx} ends "
                        f"at byte {int(off) + int(length):,} but the file has {size:,} bytes",
                        where=str(self.path),
                        fix="download or copy the file again (check it with 'gdalinfo -checksum')",
                    )
            if src.interleaving is not None and src.interleaving.name == "PIXEL":
                return  # one block holds every band: band 1's blocks are all of them

    def _dataset(self) -> Any:
        # rasterio datasets are not thread-safe: one handle per thread, closed in close().
        ds = getattr(self._local, "ds", None)
        if ds is None:
            import rasterio

            ds = rasterio.open(self.path)
            self._local.ds = ds
            with self._open_lock:
                self._open.append(ds)
        return ds

    def coverage_lonlat(self) -> BaseGeometry | None:
        return self._coverage

    def fetch_tile(self, tile: Tile, fetcher: HttpFetcher | None = None) -> np.ndarray | None:
        from rasterio.errors import RasterioError
        from rasterio.vrt import WarpedVRT

        left, bottom, right, top = tile.bounds_3857
        bl, bb, br, bt = self._bounds_3857
        if left >= br or right <= bl or bottom >= bt or top <= bb:
            return None
        s = tile.size_px
        try:
            with WarpedVRT(
                self._dataset(),
                crs=WEB_MERCATOR,
                transform=tile.transform_3857,
                width=s,
                height=s,
                resampling=self._resampling,
                add_alpha=self._add_alpha,
            ) as vrt:
                data = vrt.read(indexes=self._bands)
                mask = vrt.dataset_mask()
        except RasterioError as err:
            raise InputDataError(
                f"cannot read tile {tile.id} from the raster ({err})",
                where=str(self.path),
                fix="the file may be corrupted: check it with 'gdalinfo -checksum' and re-create it",
            ) from None
        if not mask.any():
            return None
        img = np.moveaxis(data, 0, -1)
        if self.config.value_range is not None:
            lo, hi = self.config.value_range
            img = np.clip((img.astype(np.float64) - lo) * (255.0 / (hi - lo)), 0, 255)
            img = np.rint(img).astype(np.uint8)
        if self._palette is not None:
            img = self._palette[img[..., 0]]
        elif img.shape[-1] == 1:
            img = np.repeat(img, 3, axis=-1)
        img = np.ascontiguousarray(img, dtype=np.uint8)
        img[mask == 0] = 0  # outside the raster: black, whatever the warp put there
        return img

    def close(self) -> None:
        with self._open_lock:
            for ds in self._open:
                ds.close()
            self._open.clear()
        self._local = threading.local()


# --------------------------------------------------------------------------------------------
# XYZ tile servers


_XYZ_FIELDS = {"z", "x", "y", "-y", "s", "key"}


def _template_fields(template: str) -> set[str]:
    try:
        return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as err:
        raise ValueError(f"url_template has unbalanced braces ({err})") from None


class XYZSourceConfig(StrictModel):
    """Any slippy-map tile server: ``{z}/{x}/{y}`` URL template (``{-y}`` for TMS row order,
    ``{s}`` for subdomains, ``{key}`` for a key read from ``api_key_env``)."""

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
        return XYZSource(self)


def _env_secret(var: str, what: str) -> str:
    value = os.environ.get(var, "").strip()
    if not value:
        raise ConfigError(
            f"the {what} is not set: environment variable {var} is empty or missing",
            where=f"environment variable {var}",
            fix=f"export {var}=<your key> before running (keep keys out of config files)",
        )
    register_secret(value)
    return value


class XYZSource(ImagerySource):
    """Assembles a grid tile from the server tiles covering its pixel window (crop / resample)."""

    needs_network = True

    def __init__(self, config: XYZSourceConfig) -> None:
        self.config = config
        self.name = config.name or f"xyz:{urlparse(config.url_template).netloc or 'file'}"
        self._key = (
            _env_secret(config.api_key_env, "tile server key") if config.api_key_env else None
        )
        self._fields = _template_fields(config.url_template)
        self._mem: OrderedDict[tuple[int, int, int], np.ndarray | None] = OrderedDict()
        self._inflight: dict[tuple[int, int, int], threading.Event] = {}
        self._lock = threading.Lock()

    def coverage_lonlat(self) -> BaseGeometry | None:
        return box(*self.config.bounds_lonlat) if self.config.bounds_lonlat else None

    def server_tile_url(self, z: int, x: int, y: int, *, redacted: bool = False) -> str:
        """URL of one server tile (``redacted``: with the key replaced, for messages and caching)."""
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
        return self.fetch_tile_coverage(tile, fetcher)[0]

    def fetch_tile_coverage(
        self, tile: Tile, fetcher: HttpFetcher | None
    ) -> tuple[np.ndarray | None, bool]:
        """The grid tile, and True when some of the server tiles it needs are missing (gaps
        answered 404/204/410 with ``missing_tiles: outside``): those parts are black."""
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
        """Whether server tile (tx, ty) overlaps the grid tile's own pixels (not only the
        one-pixel resampling margin): a missing one then leaves a black patch in the tile."""
        t = self.config.server_tile_size_px
        px0, py0 = tile.pixel_origin()
        s = tile.size_px
        return (
            tx * t < (px0 + s) * f
            and (tx + 1) * t > px0 * f
            and ty * t < (py0 + s) * f
            and (ty + 1) * t > py0 * f
        )


# --------------------------------------------------------------------------------------------
# Google Static Maps


class GoogleStaticSourceConfig(StrictModel):
    """Google Maps Static API: one request per tile, centred on the tile (DeepSolar's imagery).

    The API key is read from the environment variable ``api_key_env`` and never written anywhere.
    Google's terms restrict storing imagery: see docs/imagery-sources.md.
    """

    kind: Literal["google_static"] = "google_static"
    api_key_env: str = Field("GOOGLE_MAPS_API_KEY", description="environment variable with the key")
    base_url: str = "https://maps.googleapis.com/maps/api/staticmap"
    maptype: Literal["satellite", "hybrid", "roadmap", "terrain"] = "satellite"
    name: str | None = Field(
        None, description="source name in the manifest (default: google_static:<maptype>)"
    )

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, v: str) -> str:
        u = urlparse(v)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise ValueError("base_url must be an http(s) URL with a host")
        if u.query:
            raise ValueError("base_url must not carry query parameters (the key is added for you)")
        return v

    def build(self) -> GoogleStaticSource:
        return GoogleStaticSource(self)


class GoogleStaticSource(ImagerySource):
    """``center`` = tile centre, ``zoom`` = grid zoom, ``size`` = tile size: exactly the tile."""

    needs_network = True

    def __init__(self, config: GoogleStaticSourceConfig) -> None:
        self.config = config
        self.name = config.name or f"google_static:{config.maptype}"
        self._key = _env_secret(config.api_key_env, "Google Maps API key")

    def check_tile(self, tile: Tile) -> None:
        if tile.size_px > GOOGLE_STATIC_MAX_SIZE_PX:
            raise SourceError(
                f"Google Static Maps serves at most {GOOGLE_STATIC_MAX_SIZE_PX} px images; the grid's "
                f"tiles are {tile.size_px} px",
                where=f"source {self.name}",
                fix="use a tile grid with tile_size_px <= 640 (DeepSolar used 320)",
            )

    def tile_url(self, tile: Tile, *, redacted: bool = False) -> str:
        lon, lat = tile.center_lonlat
        params = {
            "center": f"{lat:.9f},{lon:.9f}",
            "zoom": tile.zoom,
            "size": f"{tile.size_px}x{tile.size_px}",
            "maptype": self.config.maptype,
            "key": REDACTED if redacted else self._key,
        }
        return f"{self.config.base_url}?{urlencode(params, safe=',')}"

    def fetch_tile(self, tile: Tile, fetcher: HttpFetcher | None) -> np.ndarray | None:
        if fetcher is None:
            raise SourceError(
                "the Google Static source needs an HttpFetcher",
                fix="call it through download_tiles",
            )
        return fetcher.get_image(
            self.tile_url(tile),
            redacted_url=self.tile_url(tile, redacted=True),
            expected_size=(tile.size_px, tile.size_px),
        )


# --------------------------------------------------------------------------------------------
# The union


SourceConfig = Annotated[
    LocalRasterSourceConfig | XYZSourceConfig | GoogleStaticSourceConfig,
    Field(discriminator="kind"),
]
_SOURCE_ADAPTER: TypeAdapter[Any] = TypeAdapter(SourceConfig)


def _describe(err: ValidationError) -> str:
    """Like config.format_validation_error, but never echoes the value of an unknown key: a key
    pasted into a config (``api_key: ...``) must not end up in an error message or a log."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{loc}: unknown option (keys belong in environment variables)")
        else:
            got = e.get("input")
            echo = got is not None and not isinstance(got, dict)
            got_s = f" (got {short_repr(got)})" if echo else ""
            lines.append(f"{loc[:200]}: {str(e['msg'])[:200]}{got_s}")
    return "; ".join(lines)


def parse_source_config(data: Any, *, where: str = "source") -> SourceConfig:
    """Validate a mapping (``kind: local | xyz | google_static`` + options) into a source config."""
    if isinstance(data, LocalRasterSourceConfig | XYZSourceConfig | GoogleStaticSourceConfig):
        return data
    try:
        return _SOURCE_ADAPTER.validate_python(data)
    except ValidationError as err:
        raise ConfigError(
            f"invalid imagery source: {_describe(err)}",
            where=where,
            fix="set kind to local, xyz or google_static and correct the listed fields "
            "(see docs/imagery-sources.md)",
        ) from None


def build_source(data: Any, *, where: str = "source") -> ImagerySource:
    """Validate a source config (mapping or model) and build the source."""
    return parse_source_config(data, where=where).build()
