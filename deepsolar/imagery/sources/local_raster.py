"""A local orthophoto (GeoTIFF, COG, or any GDAL raster) as an imagery source.

It is read in windows and warped onto the tile grid.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from deepsolar.core.config import StrictModel
from deepsolar.core.errors import ConfigError, InputDataError
from deepsolar.core.http import HttpFetcher
from deepsolar.geo.tiling import LONLAT, WEB_MERCATOR, Tile
from deepsolar.imagery.sources.base import ImagerySource

Resampling = Literal["nearest", "bilinear", "cubic", "lanczos", "average"]


class LocalRasterSourceConfig(StrictModel):
    """A georeferenced orthophoto (GeoTIFF, COG, or any GDAL raster).

    It is read in windows and warped onto the tile grid.
    """

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
        """The source this config describes (opens and checks the raster).

        Returns:
            The local raster source.

        Raises:
            InputDataError: If the raster is missing, unreadable, not georeferenced or truncated.
            ConfigError: If ``bands`` or ``value_range`` do not fit the raster.
        """
        return LocalRasterSource(self)


class LocalRasterSource(ImagerySource):
    """Reads a local raster through a WarpedVRT whose grid is exactly the tile's pixel grid.

    Args:
        config: The raster file and how to read it (bands, value range, resampling).

    Raises:
        InputDataError: If the raster is missing, unreadable, not georeferenced or truncated.
        ConfigError: If ``bands`` or ``value_range`` do not fit the raster.
    """

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
        """Refuse a truncated TIFF before any tile is written.

        Every data block the file's index lists must lie inside the file (a cut-off download or
        copy opens fine when the index comes first, as in a COG, and fails only when the missing
        blocks are read).
        """
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
        """The raster's footprint.

        Returns:
            The raster's bounds as an EPSG:4326 polygon.
        """
        return self._coverage

    def fetch_tile(self, tile: Tile, fetcher: HttpFetcher | None = None) -> np.ndarray | None:
        """Warp the raster onto the tile's pixel grid.

        Pixels outside the raster (or masked in it) are black.

        Args:
            tile: The grid tile to deliver.
            fetcher: Unused (a local source needs no network).

        Returns:
            The RGB uint8 image (tile.size_px, tile.size_px, 3), or None when the tile has no
            valid raster pixel.

        Raises:
            InputDataError: If the raster cannot be read (e.g. a corrupt block).
        """
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
        """Close the raster handles opened by every thread."""
        with self._open_lock:
            for ds in self._open:
                ds.close()
            self._open.clear()
        self._local = threading.local()
