"""The interface every imagery source implements, and what sources share.

Every source turns a grid :class:`~deepsolar.geo.tiling.Tile` into an RGB uint8 array of exactly
the tile's pixels (``tile.size_px`` square, on the Web-Mercator grid), or ``None`` when the tile
lies outside the source's coverage. Network sources fetch through the one
:class:`~deepsolar.core.http.HttpFetcher` (rate limit, retries, cache).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod

import numpy as np
from shapely.geometry.base import BaseGeometry

from deepsolar.core.errors import ConfigError
from deepsolar.core.http import HttpFetcher, register_secret
from deepsolar.geo.tiling import Tile


class ImagerySource(ABC):
    """One imagery provider. Subclasses set ``name`` and ``needs_network``."""

    name: str
    needs_network: bool = False

    @abstractmethod
    def fetch_tile(self, tile: Tile, fetcher: HttpFetcher | None) -> np.ndarray | None:
        """RGB uint8 array (tile.size_px, tile.size_px, 3) of the tile, or None if outside coverage.

        Args:
            tile: The grid tile to deliver.
            fetcher: The shared HTTP fetcher; network sources need one, local ones take None.

        Returns:
            The tile image (px), or None when the tile lies outside the source's coverage.

        Raises:
            SourceError: If a network source gets no fetcher.
            DownloadError: If a network fetch fails.
            InputDataError: If a local raster cannot be read.
        """

    def fetch_tile_coverage(
        self, tile: Tile, fetcher: HttpFetcher | None
    ) -> tuple[np.ndarray | None, bool]:
        """``(image, partial)``: the tile as :meth:`fetch_tile` gives it, and whether it has gaps.

        ``partial`` says part of the tile has no imagery (black there). Sources that can tell
        override this; the default is never partial.

        Args:
            tile: The grid tile to deliver.
            fetcher: The shared HTTP fetcher; network sources need one, local ones take None.

        Returns:
            The tile image (or None outside coverage) and whether part of it is missing.
        """
        return self.fetch_tile(tile, fetcher), False

    def coverage_lonlat(self) -> BaseGeometry | None:
        """Where the source has imagery, or None if unknown / worldwide.

        Returns:
            The coverage polygon in EPSG:4326 degrees, or None.
        """
        return None

    def check_tile(self, tile: Tile) -> None:
        """Raise SourceError if this source cannot serve tiles of this grid at all (checked once).

        Args:
            tile: Any tile of the grid (its zoom and size are checked).

        Raises:
            SourceError: If the source cannot serve this grid (e.g. tiles too large).
        """
        return None

    def close(self) -> None:
        """Release files or connections held by the source."""
        return None

    def __enter__(self) -> ImagerySource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def env_secret(var: str, what: str) -> str:
    """The secret held by environment variable ``var``, registered for redaction.

    Args:
        var: the environment variable's name.
        what: what the secret is, for the error message (e.g. "tile server key").

    Returns:
        The value, stripped. A ConfigError when the variable is empty or missing.
    """
    value = os.environ.get(var, "").strip()
    if not value:
        raise ConfigError(
            f"the {what} is not set: environment variable {var} is empty or missing",
            where=f"environment variable {var}",
            fix=f"export {var}=<your key> before running (keep keys out of config files)",
        )
    register_secret(value)
    return value
