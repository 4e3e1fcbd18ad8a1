"""Google Maps Static API as an imagery source: one request per tile (DeepSolar's imagery)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlencode, urlparse

import numpy as np
from pydantic import Field, field_validator

from deepsolar.core.config import StrictModel
from deepsolar.core.errors import SourceError
from deepsolar.core.http import REDACTED, HttpFetcher
from deepsolar.geo.tiling import Tile
from deepsolar.imagery.sources.base import ImagerySource, env_secret

GOOGLE_STATIC_MAX_SIZE_PX = 640  # the Static Maps API's largest size at scale=1 (standard plan)


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
        """The source this config describes.

        Returns:
            The Google Static source.

        Raises:
            ConfigError: If the API key variable is empty or missing.
        """
        return GoogleStaticSource(self)


class GoogleStaticSource(ImagerySource):
    """``center`` = tile centre, ``zoom`` = grid zoom, ``size`` = tile size: exactly the tile.

    Args:
        config: The source's settings; the key is read from ``config.api_key_env``.
    """

    needs_network = True

    def __init__(self, config: GoogleStaticSourceConfig) -> None:
        self.config = config
        self.name = config.name or f"google_static:{config.maptype}"
        self._key = env_secret(config.api_key_env, "Google Maps API key")

    def check_tile(self, tile: Tile) -> None:
        """Refuse grids whose tiles exceed the API's largest image.

        Args:
            tile: Any tile of the grid.

        Raises:
            SourceError: If the tiles are larger than ``GOOGLE_STATIC_MAX_SIZE_PX`` (640 px).
        """
        if tile.size_px > GOOGLE_STATIC_MAX_SIZE_PX:
            raise SourceError(
                f"Google Static Maps serves at most {GOOGLE_STATIC_MAX_SIZE_PX} px images; the grid's "
                f"tiles are {tile.size_px} px",
                where=f"source {self.name}",
                fix="use a tile grid with tile_size_px <= 640 (DeepSolar used 320)",
            )

    def tile_url(self, tile: Tile, *, redacted: bool = False) -> str:
        """The Static Maps request URL of a grid tile.

        Args:
            tile: the grid tile (its centre, zoom and size are requested).
            redacted: the key replaced by REDACTED (for messages and the cache key).

        Returns:
            The URL.
        """
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
        """Request the tile's image from the Static Maps API.

        Args:
            tile: The grid tile (its centre, zoom and size are requested).
            fetcher: The shared HTTP fetcher (required).

        Returns:
            The RGB uint8 image (tile.size_px, tile.size_px, 3).

        Raises:
            SourceError: If ``fetcher`` is None.
            DownloadError: If the request fails.
        """
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
