"""Errors a user can act on: each says what was wrong, where, and what to do."""

from __future__ import annotations


class DeepSolarError(Exception):
    """Base error. ``str(err)`` reads as one short paragraph: what, where, what to do.

    Args:
        what: What was wrong.
        where: Where: the file, field or URL concerned; None: not shown.
        fix: What the user should do about it; None: not shown.
    """

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None) -> None:
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [self.what.rstrip(".") + "."]
        if self.where:
            parts.append(f"Where: {self.where}.")
        if self.fix:
            parts.append(f"What to do: {self.fix.rstrip('.')}.")
        return " ".join(parts)


class ConfigError(DeepSolarError):
    """A configuration file or flow parameter is invalid."""


class StaleCheckpointError(ConfigError):
    """An output folder's checkpoint was made by another config or model: resuming would mix them."""


class RegionError(DeepSolarError):
    """A region (state, county, tract, boundary file, bbox) cannot be resolved or is empty."""


class InputDataError(DeepSolarError):
    """An input file (raster, vector, table, image) is missing, unreadable or malformed."""


class SourceError(DeepSolarError):
    """An imagery source is misconfigured or cannot deliver tiles."""


class OutputError(DeepSolarError):
    """An output folder or file cannot be written (read-only, a file in the way, disk full)."""


class DownloadError(DeepSolarError):
    """A network fetch failed after all retries."""


class OfflineError(DeepSolarError):
    """Something must be fetched from the internet but this machine is offline."""
