"""Load the DeepSolar tract database (Yu et al. 2018) and tract target tables.

The national file ``deepsolar_tract.csv`` (one row per 2010 census tract, ~72k rows x ~170 columns)
is read from a local path (:func:`read_tract_db`) or downloaded once into a cache
(:func:`get_tract_db`). Documented quirks are repaired on load:

- ``fips`` is kept as an 11-character string (the national file loses the leading zero of states
  01-09 when it is read as a number);
- per-capita / per-household ratios are ``inf`` where the denominator is 0 -> NaN;
- some numeric columns are typed as text (``electricity_price_transportation``) -> numbers;
- ``True``/``False`` columns (``voting_*_dem_win``) -> 0/1.

Columns are grouped by the source named in the DeepSolar lexicon (``deepsolar_lexicon.csv``):
environment (NASA climate), socio-economic (ACS), electricity (EIA), policy (DSIRE), voting,
location (lat/lon). Every column produced by the detector itself (tile and system counts, panel
areas and their ratios) is a *target*: it is never a feature, because a model fed
``total_panel_area`` would "predict" solar density from solar density.

The default target is the paper's SolarForest target, the deployment density
``number_of_solar_system_per_household`` (residential systems / households; shown per thousand
households, :func:`target_units`).

A target table from our own mapping flow (GeoPackage layer ``tracts``, CSV or Parquet with a
string ``GEOID`` column) is read by :func:`read_target_table` - which computes the deployment density
from our residential system counts and the tract's households when the table lacks it - and joined
to the features' ``fips`` by :func:`join_target`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from deepsolar.core.errors import DownloadError, InputDataError, OfflineError

log = logging.getLogger(__name__)

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


@dataclass
class TractDB:
    """A loaded tract table with its column roles.

    ``table`` has ``fips`` (11-char string, unique) and numeric columns; ``groups`` maps each feature
    group to its columns; ``targets`` lists the detector-derived columns present.
    """

    table: pd.DataFrame
    groups: dict[str, list[str]]
    targets: list[str]
    source: str
    sha256: str
    repairs: dict[str, int] = field(default_factory=dict)

    def features(self, groups: list[str] | tuple[str, ...] | None = None) -> list[str]:
        """Feature columns of the chosen groups (all groups when None), in table order."""
        chosen = set(FEATURE_GROUPS if groups is None else groups)
        unknown = chosen - set(FEATURE_GROUPS)
        if unknown:
            raise InputDataError(
                f"unknown feature group(s) {sorted(unknown)}",
                where=self.source,
                fix=f"use some of {list(FEATURE_GROUPS)}",
            )
        wanted = {c for g in chosen for c in self.groups.get(g, [])}
        return [c for c in self.table.columns if c in wanted]


def target_units(target: str) -> tuple[float, str]:
    """``(scale, unit)``: multiply the column by ``scale`` to show it in ``unit``.

    Per-household densities are shown per thousand households (the paper's figures); everything
    else in its own units. The log1p target transform acts on the scaled value, where it matters:
    log1p of systems per household (median 0.0006) would be the identity.
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
    """True for a column derived from the detector's output (counts, areas, densities)."""
    return name in TARGET_COLUMNS or bool(_TARGET_PATTERN.match(name))


def county_of(fips: pd.Series) -> pd.Series:
    """County FIPS (state + county, 5 chars) of 11-char tract FIPS codes."""
    return fips.str[:COUNTY_FIPS_LEN]


def atomic_replace(tmp: str | Path, dest: str | Path) -> None:
    """Move a finished temporary file over ``dest`` with normal permissions (mkstemp makes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, dest)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def normalize_fips(values: pd.Series, *, where: str, column: str = "fips") -> pd.Series:
    """11-char tract FIPS strings; restores leading zeros lost to numeric parsing ("1001020100")."""
    s = values.astype("string").str.strip()
    s = s.str.replace(r"\.0+$", "", regex=True)  # "51710001300.0" from a float column
    bad = s.isna() | ~s.str.fullmatch(r"\d{1,11}").fillna(False)
    if bad.any():
        examples = values[bad].head(3).tolist()
        raise InputDataError(
            f"{int(bad.sum())} row(s) have a missing or non-numeric tract FIPS in '{column}' "
            f"(e.g. {examples})",
            where=where,
            fix=f"give every row an 11-digit census tract FIPS code in '{column}'",
        )
    return s.str.zfill(FIPS_LEN).astype(str)


def read_lexicon(path: str | Path) -> pd.DataFrame:
    """The DeepSolar data dictionary: ``column_name``, ``explanation``, ``source``."""
    p = Path(path)
    try:
        lex = pd.read_csv(p)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise InputDataError(
            f"cannot read the lexicon: {err}", where=str(p), fix=f"pass the path of {LEXICON_NAME}"
        ) from None
    missing = {"column_name", "source"} - set(lex.columns)
    if missing:
        raise InputDataError(
            f"the lexicon lacks column(s) {sorted(missing)}",
            where=str(p),
            fix=f"pass the DeepSolar {LEXICON_NAME} (columns column_name, explanation, source)",
        )
    return lex


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


def group_columns(columns: list[str], lexicon: pd.DataFrame | None = None) -> dict[str, str]:
    """Role of each column: a feature group, ``target`` or ``id``.

    With a lexicon the group follows its ``source`` column; columns the lexicon does not know (or
    no lexicon) are grouped by name.
    """
    sources: dict[str, str] = {}
    if lexicon is not None:
        sources = dict(zip(lexicon["column_name"].astype(str), lexicon["source"], strict=False))
    out = {}
    for c in columns:
        g = _group_from_source(c, sources.get(c)) if c in sources else None
        out[c] = g if g is not None else _group_from_name(c)
    return out


def _repair_types(df: pd.DataFrame, where: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """Numbers typed as text -> numbers, booleans -> 0/1, +-inf -> NaN. Returns counts of repairs."""
    repairs = {"text_to_number_columns": 0, "unparseable_values": 0, "inf_values": 0}
    out = {}
    for c in df.columns:
        s = df[c]
        if c in ID_COLUMNS:
            out[c] = s
            continue
        if s.dtype == bool:
            out[c] = s.astype(float)
            continue
        if not pd.api.types.is_numeric_dtype(s):
            text = s.astype("string").str.strip()
            lowered = text.str.lower()
            if lowered.dropna().isin(["true", "false"]).all() and lowered.notna().any():
                out[c] = lowered.map({"true": 1.0, "false": 0.0}).astype(float)
                continue
            num = pd.to_numeric(text.replace({"": pd.NA}), errors="coerce")
            if num.notna().sum() == 0 and text.notna().any():
                out[c] = s  # a genuine text column (not in the schema): kept, never a feature
                continue
            lost = int((num.isna() & text.notna() & (text != "")).sum())
            repairs["text_to_number_columns"] += 1
            repairs["unparseable_values"] += lost
            if lost:
                log.warning("%s: column %s had %d non-numeric value(s) -> NaN", where, c, lost)
            s = num.astype(float)
        s = s.astype(float)
        inf = np.isinf(s.to_numpy())
        if inf.any():
            repairs["inf_values"] += int(inf.sum())
            s = s.mask(inf)
        out[c] = s
    return pd.DataFrame(out, index=df.index), repairs


def read_tract_db(path: str | Path, *, lexicon: str | Path | None = None) -> TractDB:
    """Read a DeepSolar tract table (national ``deepsolar_tract.csv`` or a subset of it).

    ``lexicon``: path of ``deepsolar_lexicon.csv``; by default the one beside ``path`` if present,
    otherwise columns are grouped by name.
    """
    p = Path(path)
    where = str(p)
    if not p.is_file():
        raise InputDataError(
            "DeepSolar tract table not found",
            where=where,
            fix="pass the path of deepsolar_tract.csv (or a subset with the same columns), or "
            "download it with get_tract_db()",
        )
    try:
        df = pd.read_csv(p, dtype={"fips": str}, low_memory=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputDataError(
            f"cannot read the tract table as CSV: {err}",
            where=where,
            fix="pass a comma-separated file with a header row",
        ) from None
    # The national file starts with an unnamed row-index column.
    df = df.loc[:, [c for c in df.columns if not str(c).startswith("Unnamed:")]]
    if "fips" not in df.columns:
        raise InputDataError(
            "the tract table has no 'fips' column",
            where=where,
            fix="pass a DeepSolar tract table (its tract FIPS column is named 'fips')",
        )
    if df.empty:
        raise InputDataError(
            "the tract table has no rows", where=where, fix="pass a non-empty table"
        )
    fips = normalize_fips(df["fips"], where=where)
    repairs = {"fips_zero_padded": int((df["fips"].astype(str).str.len() < FIPS_LEN).sum())}
    dup = fips.duplicated()
    if dup.any():
        raise InputDataError(
            f"{int(dup.sum())} duplicated tract FIPS (e.g. {fips[dup].head(3).tolist()})",
            where=where,
            fix="keep one row per census tract",
        )
    df["fips"] = fips
    df, type_repairs = _repair_types(df, where)
    repairs.update(type_repairs)

    lex_path = Path(lexicon) if lexicon is not None else p.with_name(LEXICON_NAME)
    lex = read_lexicon(lex_path) if (lexicon is not None or lex_path.is_file()) else None
    roles = group_columns(list(df.columns), lex)
    groups: dict[str, list[str]] = {g: [] for g in FEATURE_GROUPS}
    for c, g in roles.items():
        if g in groups and pd.api.types.is_numeric_dtype(df[c]):
            groups[g].append(c)
    targets = [c for c, g in roles.items() if g == "target"]
    log.info("read %d tracts x %d columns from %s (repairs: %s)", len(df), df.shape[1], p, repairs)
    return TractDB(
        table=df.reset_index(drop=True),
        groups=groups,
        targets=targets,
        source=where,
        sha256=file_sha256(p),
        repairs=repairs,
    )


def get_tract_db(
    url: str = DEEPSOLAR_TRACT_URL,
    cache_dir: str | Path = "data/cache/deepsolar",
    *,
    timeout_s: float = 60.0,
    refresh: bool = False,
) -> Path:
    """Path of the national tract CSV, downloaded once from ``url`` into ``cache_dir``.

    A cached copy is used without contacting the network. The download streams to a temporary
    file that replaces the cache entry only when complete.
    """
    import httpx

    cache = Path(cache_dir)
    name = Path(httpx.URL(url).path).name or "deepsolar_tract.csv"
    dest = cache / name
    if dest.is_file() and not refresh:
        return dest
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=cache)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            httpx.stream("GET", url, timeout=timeout_s, follow_redirects=True) as resp,
        ):
            if resp.status_code != 200:
                raise DownloadError(
                    f"HTTP {resp.status_code} while downloading the DeepSolar tract database",
                    where=url,
                    fix="check the address, or download deepsolar_tract.csv by hand and pass its path",
                )
            for chunk in resp.iter_bytes():
                out.write(chunk)
        atomic_replace(tmp, dest)
    except (httpx.ConnectError, httpx.ConnectTimeout) as err:
        raise OfflineError(
            f"cannot reach the DeepSolar download server ({err})",
            where=url,
            fix=(
                f"connect to the internet, or download {DEEPSOLAR_TRACT_URL} elsewhere and pass "
                "the local file's path (features_path) instead of a URL"
            ),
        ) from None
    except httpx.HTTPError as err:
        raise DownloadError(
            f"download of the DeepSolar tract database failed: {err}",
            where=url,
            fix="retry later, or download deepsolar_tract.csv by hand and pass its path",
        ) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("downloaded %s -> %s", url, dest)
    return dest


def _as_list(targets: str | list[str] | tuple[str, ...]) -> list[str]:
    return [targets] if isinstance(targets, str) else list(dict.fromkeys(targets))


def deployment_density(systems: pd.Series, households: pd.Series) -> pd.Series:
    """Residential systems per household; NaN where households are 0 or unknown (DeepSolar: inf)."""
    s = pd.to_numeric(systems, errors="coerce").astype(float)
    h = pd.to_numeric(households, errors="coerce").astype(float)
    return (s / h.where(h > 0)).astype(float)


def read_target_table(
    path: str | Path,
    target: str | list[str] | tuple[str, ...] = DEFAULT_TARGET,
    *,
    layer: str = "tracts",
    geoid_column: str = "GEOID",
    households: pd.Series | None = None,
) -> pd.DataFrame:
    """Read per-tract targets (GeoPackage layer, CSV or Parquet) with a GEOID column.

    ``target``: one column name or several. Returns a frame with ``GEOID`` (11-char string), one
    float column per target and, for a GeoPackage with geometry, a ``geometry`` column.

    The paper's deployment density (``number_of_solar_system_per_household``) is computed as our
    residential system count (``solar_system_count_residential``) over the tract's households when
    the table does not already hold it (our mapping flow writes it only when its tract layer had
    household counts): the households come from the table's ``household_count`` column, else from
    ``households`` (a Series indexed by 11-char GEOID, e.g. the DeepSolar feature table's ACS
    ``household_count``). ``result.attrs["derived"]`` names the targets computed here and
    ``result.attrs["partially_scanned_tracts"]`` counts tracts whose ``scanned_fraction`` < 1 (their
    systems are an undercount of the tract's).
    """
    targets = _as_list(target)
    p = Path(path)
    where = f"{p}" + (f" (layer {layer})" if p.suffix.lower() == ".gpkg" else "")
    if not p.is_file():
        raise InputDataError("target table not found", where=str(p), fix="pass an existing file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".gpkg":
            import pyogrio

            layers = [row[0] for row in pyogrio.list_layers(p)]
            if layer not in layers:
                raise InputDataError(
                    f"the GeoPackage has no layer '{layer}' (layers: {layers})",
                    where=str(p),
                    fix="pass the tract layer's name as target_layer",
                )
            import geopandas as gpd

            df = gpd.read_file(p, layer=layer)
        elif suffix == ".csv":
            df = pd.read_csv(p, dtype={geoid_column: str})
        elif suffix in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        else:
            raise InputDataError(
                f"unsupported target table format '{suffix}'",
                where=str(p),
                fix="use a GeoPackage (.gpkg), CSV (.csv) or Parquet (.parquet) file",
            )
    except InputDataError:
        raise
    except Exception as err:  # pyogrio / pyarrow / pandas parse errors differ by format
        raise InputDataError(
            f"cannot read the target table: {err}", where=where, fix="check the file is not corrupt"
        ) from None
    if geoid_column not in df.columns:
        raise InputDataError(
            f"the target table has no column '{geoid_column}' (columns: {list(df.columns)[:20]})",
            where=where,
            fix=f"write the tract GEOID as '{geoid_column}'",
        )
    geoid = normalize_fips(df[geoid_column], where=where, column=geoid_column)
    if geoid.duplicated().any():
        raise InputDataError(
            f"duplicated {geoid_column} values (e.g. {geoid[geoid.duplicated()].head(3).tolist()})",
            where=where,
            fix="keep one row per census tract",
        )
    out = df.copy()
    out["GEOID"] = geoid
    derived: list[str] = []
    for t in targets:
        have = t in df.columns and pd.to_numeric(df[t], errors="coerce").notna().any()
        if have or t != PER_HOUSEHOLD_TARGET or RESIDENTIAL_SYSTEMS_COLUMN not in df.columns:
            continue
        if HOUSEHOLD_COLUMN in df.columns:
            hh = df[HOUSEHOLD_COLUMN]
        elif households is not None:
            hh = households.reindex(geoid.to_numpy())
            hh.index = df.index
        else:
            raise InputDataError(
                f"cannot compute '{t}': the target table has no '{HOUSEHOLD_COLUMN}' and no "
                "household counts were given",
                where=where,
                fix=f"add '{HOUSEHOLD_COLUMN}' to the tract layer, or use a feature table that "
                "has it (the DeepSolar tract table does)",
            )
        out[t] = deployment_density(df[RESIDENTIAL_SYSTEMS_COLUMN], hh)
        derived.append(t)
    for t in targets:
        if t not in out.columns:
            extra = (
                f" (or '{RESIDENTIAL_SYSTEMS_COLUMN}' to compute it from)"
                if t == PER_HOUSEHOLD_TARGET
                else ""
            )
            raise InputDataError(
                f"the target table has no column '{t}'{extra} (columns: {list(df.columns)[:20]})",
                where=where,
                fix=f"write the target as '{t}' or choose another model.target",
            )
        y = pd.to_numeric(out[t], errors="coerce")
        bad = y.isna() & out[t].notna()
        if bad.any():
            raise InputDataError(
                f"{int(bad.sum())} non-numeric value(s) in target column '{t}'",
                where=where,
                fix="store the target as numbers",
            )
        out[t] = y.replace([np.inf, -np.inf], np.nan).astype(float)
    partial = 0
    if "scanned_fraction" in out.columns:
        frac = pd.to_numeric(out["scanned_fraction"], errors="coerce")
        partial = int((frac < 0.999).sum())
        if partial:
            log.warning(
                "%d of %d tract(s) were only partly scanned: their targets undercount the tract",
                partial, len(out),
            )  # fmt: skip
    keep = ["GEOID", *targets] + (["geometry"] if "geometry" in out.columns else [])
    result = out[keep]
    result.attrs.update({"derived": derived, "partially_scanned_tracts": partial})
    if derived:
        log.info("computed %s from our residential systems and household counts", derived)
    return result


def join_target(
    db: TractDB,
    target_table: pd.DataFrame,
    target: str | list[str] | tuple[str, ...] = DEFAULT_TARGET,
) -> pd.DataFrame:
    """Feature table rows joined to an external target table on ``fips == GEOID`` (inner join).

    Any column of the feature table with a target's name (and every other detector-derived
    column) is dropped first, so the targets always come from ``target_table``.
    """
    targets = _as_list(target)
    feats = db.table.drop(columns=[c for c in db.table.columns if c in db.targets or c in targets])
    tt = pd.DataFrame(target_table[["GEOID", *targets]])
    joined = feats.merge(tt, left_on="fips", right_on="GEOID", how="inner").drop(columns="GEOID")
    if joined.empty:
        raise InputDataError(
            f"no tract of the target table matches a tract of the feature table "
            f"(target GEOIDs e.g. {tt['GEOID'].head(3).tolist()}, feature fips e.g. "
            f"{db.table['fips'].head(3).tolist()})",
            where=db.source,
            fix="use a feature table that covers the mapped region (same 2010 tract FIPS codes)",
        )
    n_unmatched = len(tt) - len(joined)
    if n_unmatched:
        log.warning("%d target tract(s) have no features and are left out", n_unmatched)
    joined.attrs.update(getattr(target_table, "attrs", {}))
    return joined


_GEOID_CANDIDATES = ("GEOID", "GEOID10", "GEOID20", "fips")


def read_tract_polygons(path: str | Path, *, layer: str | None = None):
    """Tract polygons (GeoDataFrame with an 11-char ``GEOID`` column) from any vector file.

    Accepts our mapping flow's GeoPackage (``GEOID``), TIGER/Line 2010 (``GEOID10``, also
    ``zip://...zip``) or 2020 (``GEOID20``) files. Returns None when the layer has no polygons.
    """
    import geopandas as gpd

    where = f"{path}" + (f" (layer {layer})" if layer else "")
    local = str(path).removeprefix("zip://")
    if not Path(local).exists():
        raise InputDataError(
            "tract polygon file not found", where=str(path), fix="pass an existing file"
        )
    try:
        gdf = gpd.read_file(path, layer=layer) if layer else gpd.read_file(path)
    except Exception as err:  # pyogrio raises DataSourceError / DataLayerError for many causes
        raise InputDataError(
            f"cannot read tract polygons: {err}",
            where=where,
            fix="pass a GeoPackage / shapefile / zip of census tract polygons (and its layer name)",
        ) from None
    col = next((c for c in _GEOID_CANDIDATES if c in gdf.columns), None)
    if col is None:
        raise InputDataError(
            f"no tract id column among {list(_GEOID_CANDIDATES)} (columns: {list(gdf.columns)[:15]})",
            where=where,
            fix="give the tract layer a GEOID column with 11-digit tract FIPS codes",
        )
    if "geometry" not in gdf.columns or gdf.geometry.isna().all():
        return None
    kinds = set(gdf.geometry.geom_type.dropna())
    if not kinds <= {"Polygon", "MultiPolygon"}:
        return None
    gdf = gdf.copy()
    gdf["GEOID"] = normalize_fips(gdf[col], where=where, column=col)
    if col != "GEOID":
        gdf = gdf.drop(columns=[col])
    return gdf
