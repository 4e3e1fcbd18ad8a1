"""Load the DeepSolar tract database (Yu et al. 2018) and tract target tables.

The national file ``deepsolar_tract.csv`` (one row per 2010 census tract, ~72k rows x ~170 columns)
is read from a local path (:func:`read_tract_db`) or downloaded once into a cache
(:func:`get_tract_db`). Documented quirks are repaired on load:

- ``fips`` is kept as an 11-character string (the national file loses the leading zero of states
  01-09 when it is read as a number);
- per-capita / per-household ratios are ``inf`` where the denominator is 0 -> NaN;
- some numeric columns are typed as text (``electricity_price_transportation``) -> numbers;
- ``True``/``False`` columns (``voting_*_dem_win``) -> 0/1.

Column roles (feature groups, targets, identifiers) are defined in
:mod:`deepsolar.solarforest.schema`.

A target table from our own mapping flow (GeoPackage layer ``tracts``, CSV or Parquet with a
string ``GEOID`` column) is read by :func:`read_target_table` - which computes the deployment density
from our residential system counts and the tract's households when the table lacks it - and joined
to the features' ``fips`` by :func:`join_target`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepsolar.core.errors import DownloadError, InputDataError, OfflineError
from deepsolar.core.io import atomic_output, file_sha256
from deepsolar.solarforest.schema import (
    COUNTY_FIPS_LEN,
    DEEPSOLAR_TRACT_URL,
    DEFAULT_TARGET,
    FEATURE_GROUPS,
    FIPS_LEN,
    HOUSEHOLD_COLUMN,
    ID_COLUMNS,
    LEXICON_NAME,
    PER_HOUSEHOLD_TARGET,
    RESIDENTIAL_SYSTEMS_COLUMN,
    group_columns,
)

log = logging.getLogger(__name__)


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
        """Feature columns of the chosen groups (all groups when None), in table order.

        Args:
            groups: feature group names (of ``FEATURE_GROUPS``), or None for all.

        Returns:
            The columns, in table order.
        """
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


def county_of(fips: pd.Series) -> pd.Series:
    """County FIPS (state + county, 5 chars) of 11-char tract FIPS codes.

    Args:
        fips: 11-char tract FIPS strings.

    Returns:
        The 5-char county FIPS of each.
    """
    return fips.str[:COUNTY_FIPS_LEN]


def normalize_fips(values: pd.Series, *, where: str, column: str = "fips") -> pd.Series:
    """11-char tract FIPS strings; restores leading zeros lost to numeric parsing ("1001020100").

    Args:
        values: tract ids (strings or numbers).
        where: the source, for the error message.
        column: the column's name, for the error message.

    Returns:
        The 11-char FIPS strings.
    """
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
    """The DeepSolar data dictionary: ``column_name``, ``explanation``, ``source``.

    Args:
        path: path of ``deepsolar_lexicon.csv``.

    Returns:
        The lexicon table.
    """
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


def _read_tract_csv(p: Path, where: str) -> pd.DataFrame:
    """The tract table's rows, without the national file's unnamed row-index column."""
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
    return df


def read_tract_db(path: str | Path, *, lexicon: str | Path | None = None) -> TractDB:
    """Read a DeepSolar tract table (national ``deepsolar_tract.csv`` or a subset of it).

    Args:
        path: the tract table (CSV with a ``fips`` column).
        lexicon: path of ``deepsolar_lexicon.csv``; by default the one beside ``path`` if present,
            otherwise columns are grouped by name.

    Returns:
        The repaired table with its column roles, source path, SHA-256 and repair counts.
    """
    p = Path(path)
    where = str(p)
    df = _read_tract_csv(p, where)
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

    Args:
        url: the table's address.
        cache_dir: folder of the cached copy.
        timeout_s: network timeout, seconds.
        refresh: download again even when a cached copy exists.

    Returns:
        The cached file's path.
    """
    import httpx

    cache = Path(cache_dir)
    name = Path(httpx.URL(url).path).name or "deepsolar_tract.csv"
    dest = cache / name
    if dest.is_file() and not refresh:
        return dest
    try:
        with (
            atomic_output(dest, suffix=".part") as tmp,
            open(tmp, "wb") as out,
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
    log.info("downloaded %s -> %s", url, dest)
    return dest


def _as_list(targets: str | list[str] | tuple[str, ...]) -> list[str]:
    return [targets] if isinstance(targets, str) else list(dict.fromkeys(targets))


def deployment_density(systems: pd.Series, households: pd.Series) -> pd.Series:
    """Residential systems per household; NaN where households are 0 or unknown (DeepSolar: inf).

    Args:
        systems: residential system counts per tract.
        households: households per tract (aligned with ``systems``).

    Returns:
        Systems per household (float).
    """
    s = pd.to_numeric(systems, errors="coerce").astype(float)
    h = pd.to_numeric(households, errors="coerce").astype(float)
    return (s / h.where(h > 0)).astype(float)


def _read_table_file(p: Path, layer: str, geoid_column: str, where: str) -> pd.DataFrame:
    """A target table's rows, by format (GeoPackage layer, CSV or Parquet)."""
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

            return gpd.read_file(p, layer=layer)
        if suffix == ".csv":
            return pd.read_csv(p, dtype={geoid_column: str})
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(p)
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


def _derive_densities(
    df: pd.DataFrame,
    out: pd.DataFrame,
    targets: list[str],
    geoid: pd.Series,
    households: pd.Series | None,
    where: str,
) -> list[str]:
    """Compute the deployment density into ``out`` where the table lacks it; returns the derived."""
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
    return derived


def _numeric_targets(df: pd.DataFrame, out: pd.DataFrame, targets: list[str], where: str) -> None:
    """Check every target column of ``out`` is there and numeric; make it float (inf -> NaN)."""
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


def read_target_table(
    path: str | Path,
    target: str | list[str] | tuple[str, ...] = DEFAULT_TARGET,
    *,
    layer: str = "tracts",
    geoid_column: str = "GEOID",
    households: pd.Series | None = None,
) -> pd.DataFrame:
    """Read per-tract targets (GeoPackage layer, CSV or Parquet) with a GEOID column.

    The paper's deployment density (``number_of_solar_system_per_household``) is computed as our
    residential system count (``solar_system_count_residential``) over the tract's households when
    the table does not already hold it (our mapping flow writes it only when its tract layer had
    household counts): the households come from the table's ``household_count`` column, else from
    ``households``.

    Args:
        path: the table (``.gpkg``, ``.csv``, ``.parquet`` / ``.pq``).
        target: one column name or several.
        layer: the GeoPackage layer.
        geoid_column: the tract id column.
        households: households per tract, a Series indexed by 11-char GEOID (e.g. the DeepSolar
            feature table's ACS ``household_count``).

    Returns:
        A frame with ``GEOID`` (11-char string), one float column per target and, for a GeoPackage
        with geometry, a ``geometry`` column. ``result.attrs["derived"]`` names the targets
        computed here and ``result.attrs["partially_scanned_tracts"]`` counts tracts whose
        ``scanned_fraction`` < 1 (their systems are an undercount of the tract's).
    """
    targets = _as_list(target)
    p = Path(path)
    where = f"{p}" + (f" (layer {layer})" if p.suffix.lower() == ".gpkg" else "")
    df = _read_table_file(p, layer, geoid_column, where)
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
    derived = _derive_densities(df, out, targets, geoid, households, where)
    _numeric_targets(df, out, targets, where)
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

    Args:
        db: the feature table.
        target_table: per-tract targets with a ``GEOID`` column (:func:`read_target_table`).
        target: one target column or several.

    Returns:
        The joined rows (the target table's ``attrs`` carried over).
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


def read_tract_polygons(path: str | Path, *, layer: str | None = None) -> Any:
    """Tract polygons (GeoDataFrame with an 11-char ``GEOID`` column) from any vector file.

    Accepts our mapping flow's GeoPackage (``GEOID``), TIGER/Line 2010 (``GEOID10``, also
    ``zip://...zip``) or 2020 (``GEOID20``) files.

    Args:
        path: the vector file.
        layer: its layer (default: the first).

    Returns:
        The polygons (a GeoDataFrame), or None when the layer has no polygons.
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
