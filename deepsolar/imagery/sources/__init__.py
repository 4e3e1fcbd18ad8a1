"""Imagery sources behind one interface: local GeoTIFF/COG, any XYZ tile server, Google Static Maps.

Every source turns a grid :class:`~deepsolar.geo.tiling.Tile` into an RGB uint8 array of exactly the
tile's pixels (``tile.size_px`` square, on the Web-Mercator grid), or ``None`` when the tile lies
outside the source's coverage. Network sources fetch through the one
:class:`~deepsolar.core.http.HttpFetcher` (rate limit, retries, cache); the local source reads its
raster directly. One module per source (:mod:`.local_raster`, :mod:`.xyz`, :mod:`.google_static`)
holds its config model and its class, on :class:`~.base.ImagerySource`. Configs are a pydantic
union discriminated by ``kind``::

    source:
      kind: xyz
      url_template: https://tiles.example.com/{z}/{x}/{y}.jpg
      max_zoom: 19
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from deepsolar.core.config import format_validation_error
from deepsolar.core.errors import ConfigError
from deepsolar.imagery.sources.base import ImagerySource
from deepsolar.imagery.sources.google_static import (
    GOOGLE_STATIC_MAX_SIZE_PX,
    GoogleStaticSource,
    GoogleStaticSourceConfig,
)
from deepsolar.imagery.sources.local_raster import LocalRasterSource, LocalRasterSourceConfig
from deepsolar.imagery.sources.xyz import XYZSource, XYZSourceConfig

__all__ = [
    "GOOGLE_STATIC_MAX_SIZE_PX",
    "GoogleStaticSource",
    "GoogleStaticSourceConfig",
    "ImagerySource",
    "LocalRasterSource",
    "LocalRasterSourceConfig",
    "SourceConfig",
    "XYZSource",
    "XYZSourceConfig",
    "build_source",
    "parse_source_config",
]

SourceConfig = Annotated[
    LocalRasterSourceConfig | XYZSourceConfig | GoogleStaticSourceConfig,
    Field(discriminator="kind"),
]
_SOURCE_ADAPTER: TypeAdapter[Any] = TypeAdapter(SourceConfig)


#: Said of an unknown key in a source config: a key pasted there must not be echoed or logged.
UNKNOWN_KEY_NOTE = "unknown option (keys belong in environment variables)"


def parse_source_config(data: Any, *, where: str = "source") -> SourceConfig:
    """Validate a mapping (``kind: local | xyz | google_static`` + options) into a source config.

    Args:
        data: The mapping, or a source config (returned as is).
        where: Where the mapping came from (a config field or file), for the error message.

    Returns:
        The validated source config of the given ``kind``.

    Raises:
        ConfigError: If the mapping is not a valid source config (unknown keys are named, never
            their values).
    """
    if isinstance(data, LocalRasterSourceConfig | XYZSourceConfig | GoogleStaticSourceConfig):
        return data
    try:
        return _SOURCE_ADAPTER.validate_python(data)
    except ValidationError as err:
        raise ConfigError(
            "invalid imagery source: "
            + format_validation_error(err, unknown_key_note=UNKNOWN_KEY_NOTE, limit=None),
            where=where,
            fix="set kind to local, xyz or google_static and correct the listed fields "
            "(see docs/imagery-sources.md)",
        ) from None


def build_source(data: Any, *, where: str = "source") -> ImagerySource:
    """Validate a source config (mapping or model) and build the source.

    Args:
        data: The source config, a mapping or a model.
        where: Where the config came from, for error messages.

    Returns:
        The imagery source, ready to fetch tiles.

    Raises:
        ConfigError: If the config is invalid or an API key variable is not set.
        InputDataError: If a local raster is missing or unusable.
    """
    return parse_source_config(data, where=where).build()
