"""The DeepSolar tract table's schema: column names, column roles and target units.

Columns are grouped by the source named in the DeepSolar lexicon (``deepsolar_lexicon.csv``):
environment (NASA climate), socio-economic (ACS), electricity (EIA), policy (DSIRE), voting,
location (lat/lon). Every column produced by the detector itself (tile and system counts, panel
areas and their ratios) is a *target*: it is never a feature, because a model fed
``total_panel_area`` would "predict" solar density from solar density.

The default target is the paper's SolarForest target, the deployment density
``number_of_solar_system_per_household`` (residential systems / households; shown per thousand
households, :func:`target_units`).

Plain Python (no pandas): the job's parameter model imports it to validate a run quickly.
"""

from __future__ import annotations

import re
from typing import Any

#: Published address of the national tract database (Stanford DeepSolar project page).
DEEPSOLAR_TRACT_URL = "https://web.stanford.edu/group/deepsolar/deepsolar_tract.csv"
#: The paper's SolarForest target: solar deployment density, residential systems per household
#: (shown per thousand households, as in the paper's figures).
PER_HOUSEHOLD_TARGET = "number_of_solar_system_per_household"
#: Default target: the paper's deployment density.
DEFAULT_TARGET = PER_HOUSEHOLD_TARGET
#: Targets the evaluation report compares by default: the paper's deployment density, panel area
#: per square mile (the density DeepSolar's maps show) and the tract's system count.
STANDARD_TARGETS: tuple[str, ...] = (
    PER_HOUSEHOLD_TARGET,
    "solar_panel_area_divided_by_area",
    "solar_system_count",
)
#: Households per tract (ACS): the denominator of the deployment density.
HOUSEHOLD_COLUMN = "household_count"
#: Residential system count: the numerator of the deployment density.
RESIDENTIAL_SYSTEMS_COLUMN = "solar_system_count_residential"
FIPS_LEN = 11
COUNTY_FIPS_LEN = 5
LEXICON_NAME = "deepsolar_lexicon.csv"

#: Columns derived from the detector's output: possible targets, never features.
TARGET_COLUMNS: tuple[str, ...] = (
    "tile_count",
    "tile_count_residential",
    "tile_count_nonresidential",
    "solar_system_count",
    "solar_system_count_residential",
    "solar_system_count_nonresidential",
    "total_panel_area",
    "total_panel_area_residential",
    "total_panel_area_nonresidential",
    "solar_panel_area_divided_by_area",
    "solar_panel_area_per_capita",
    "number_of_solar_system_per_household",
)
# Name patterns of detector-derived columns, so a renamed or new target column in a later release
# of the file is excluded too (leakage is the one mistake that silently inflates R²).
_TARGET_PATTERN = re.compile(
    r"^(tile_count|solar_system_count|total_panel_area|solar_panel_area|number_of_solar_system)"
)
#: Identifiers and text labels: never features.
ID_COLUMNS: tuple[str, ...] = ("fips", "county", "state", "row_index_in_deepsolar_tract")

FEATURE_GROUPS: tuple[str, ...] = (
    "environment",
    "socioeconomic",
    "electricity",
    "policy",
    "voting",
    "location",
)
# Lexicon ``source`` (lower-cased substring) -> feature group.
_SOURCE_GROUPS: tuple[tuple[str, str], ...] = (
    ("deepsolar", "target"),
    ("nasa", "environment"),
    ("acs", "socioeconomic"),
    ("eia", "electricity"),
    ("dsireusa", "policy"),
    ("townhall", "voting"),
    ("guardian", "voting"),
)
_LOCATION = frozenset({"lat", "lon"})
# Used only when no lexicon is at hand (e.g. the national file downloaded alone).
_ENVIRONMENT = frozenset(
    {
        "elevation",
        "heating_design_temperature",
        "cooling_design_temperature",
        "earth_temperature_amplitude",
        "frost_days",
        "air_temperature",
        "relative_humidity",
        "daily_solar_radiation",
        "atmospheric_pressure",
        "wind_speed",
        "earth_temperature",
        "heating_degree_days",
        "cooling_degree_days",
    }
)
_POLICY = frozenset(
    {"net_metering", "feedin_tariff", "cooperate_tax", "property_tax", "sales_tax", "rebate"}
)


def target_units(target: str) -> tuple[float, str]:
    """``(scale, unit)``: multiply the column by ``scale`` to show it in ``unit``.

    Per-household densities are shown per thousand households (the paper's figures); everything
    else in its own units. The log1p target transform acts on the scaled value, where it matters:
    log1p of systems per household (median 0.0006) would be the identity.

    Args:
        target: a target column name.

    Returns:
        The multiplier and the unit's label ("" when unknown).
    """
    if target.endswith("per_household"):
        return 1000.0, "systems per 1000 households"
    if target == "solar_panel_area_divided_by_area" or target.endswith("_per_mi2"):
        return 1.0, "m² per mi²"
    if target.endswith("per_capita"):
        return 1.0, "m² per person"
    if target.startswith("solar_system_count"):
        return 1.0, "systems"
    if target.startswith("total_panel_area"):
        return 1.0, "m²"
    if target.startswith("tile_count"):
        return 1.0, "tiles"
    return 1.0, ""


def is_target_column(name: str) -> bool:
    """True for a column derived from the detector's output (counts, areas, densities).

    Args:
        name: a column name.

    Returns:
        Whether the column is a possible target (never a feature).
    """
    return name in TARGET_COLUMNS or bool(_TARGET_PATTERN.match(name))


def _group_from_source(name: str, source: str | None) -> str | None:
    if name in ID_COLUMNS:
        return "id"
    if is_target_column(name):
        return "target"
    if name in _LOCATION:
        return "location"
    if source is None:
        return None
    src = str(source).lower()
    for key, group in _SOURCE_GROUPS:
        if key in src:
            return group
    return None


def _group_from_name(name: str) -> str:
    """Fallback grouping by column name (same result as the lexicon on the DeepSolar schema)."""
    g = _group_from_source(name, None)
    if g is not None:
        return g
    if name in _ENVIRONMENT:
        return "environment"
    if name.startswith("electricity_") or name == "avg_electricity_retail_rate":
        return "electricity"
    if name.startswith("voting_"):
        return "voting"
    if name.startswith("incentive_") or name in _POLICY:
        return "policy"
    return "socioeconomic"


def group_columns(columns: list[str], lexicon: Any | None = None) -> dict[str, str]:
    """Role of each column: a feature group, ``target`` or ``id``.

    With a lexicon the group follows its ``source`` column; columns the lexicon does not know (or
    no lexicon) are grouped by name.

    Args:
        columns: the table's column names.
        lexicon: the DeepSolar data dictionary (a DataFrame with ``column_name`` and ``source``,
            see :func:`deepsolar.solarforest.tractdb.read_lexicon`), or None.

    Returns:
        Column name -> role.
    """
    sources: dict[str, str] = {}
    if lexicon is not None:
        sources = dict(zip(lexicon["column_name"].astype(str), lexicon["source"], strict=False))
    out = {}
    for c in columns:
        g = _group_from_source(c, sources.get(c)) if c in sources else None
        out[c] = g if g is not None else _group_from_name(c)
    return out
