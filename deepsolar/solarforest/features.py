"""SolarForest's training data: features, the columns a config selects, the rows with a target.

The feature table (joined to an external target when given), the feature columns a config selects
(never a target or an identifier), and the rows with a target.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from deepsolar.core.errors import ConfigError, InputDataError
from deepsolar.solarforest.config import SolarForestConfig
from deepsolar.solarforest.schema import (
    FEATURE_GROUPS,
    HOUSEHOLD_COLUMN,
    ID_COLUMNS,
    is_target_column,
)
from deepsolar.solarforest.tractdb import (
    TractDB,
    county_of,
    join_target,
    read_target_table,
    read_tract_db,
)

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """Features ``X`` (DataFrame, model column order), target ``y``, tract ``fips``, county groups."""

    X: pd.DataFrame
    y: np.ndarray
    fips: pd.Series
    target: str
    features: list[str]
    n_dropped_missing_target: int = 0
    source_sha256: str | None = None
    n_dropped_min_households: int = 0

    @property
    def counties(self) -> pd.Series:
        """The 5-char county FIPS of each row (the spatial CV and bootstrap groups)."""
        return county_of(self.fips)

    def sha256(self) -> str:
        """Content hash of this training set (:func:`data_sha256`).

        Returns:
            The hex digest.
        """
        return data_sha256(self.X, self.y, self.fips)


def data_sha256(X: pd.DataFrame, y: np.ndarray, fips: pd.Series) -> str:
    """Content hash of a training set: column names, tract ids, every value (order-sensitive).

    Args:
        X: the features.
        y: the target.
        fips: the tract ids.

    Returns:
        The hex SHA-256.
    """
    frame = X.reset_index(drop=True).copy()
    frame.insert(0, "__fips__", fips.to_numpy())
    frame["__y__"] = np.asarray(y, dtype=float)
    h = hashlib.sha256("\x1f".join(map(str, frame.columns)).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()


def _listed_features(table: pd.DataFrame, config: SolarForestConfig, where: str) -> list[str]:
    """``config.features``, checked to exist and to leak neither the target nor an identifier."""
    feats = list(dict.fromkeys(config.features or []))
    missing = [c for c in feats if c not in table.columns]
    if missing:
        raise InputDataError(
            f"feature column(s) {missing} not in the table",
            where=where,
            fix="correct model.features (see deepsolar_lexicon.csv for the column names)",
        )
    leaky = [c for c in feats if is_target_column(c) or c == config.target or c in ID_COLUMNS]
    if leaky:
        raise ConfigError(
            f"feature(s) {leaky} are the target, derived from the detected panels, or "
            "identifiers: a model using them would leak the answer",
            where="model.features",
            fix="remove them from model.features",
        )
    return feats


def select_features(
    db: TractDB, config: SolarForestConfig, table: pd.DataFrame | None = None
) -> list[str]:
    """Feature columns for ``config``: explicit list or lexicon groups, minus leakage and ids.

    Args:
        db: the tract table (its column groups).
        config: the model settings (``features`` / ``feature_groups`` / ``exclude_features``).
        table: the table the features are taken from (default: ``db.table``).

    Returns:
        The feature columns, numeric and not all empty.
    """
    table = db.table if table is None else table
    where = db.source
    target = config.target
    if config.features is not None:
        feats = _listed_features(table, config, where)
    else:
        feats = [c for c in db.features(config.feature_groups) if c in table.columns]
    excl = set(config.exclude_features)
    feats = [c for c in feats if c not in excl and c != target]
    if not feats:
        raise ConfigError(
            "no feature left after applying feature_groups / features / exclude_features",
            where="model",
            fix=f"choose at least one group of {list(FEATURE_GROUPS)} or list features",
        )
    non_numeric = [c for c in feats if not pd.api.types.is_numeric_dtype(table[c])]
    if non_numeric:
        raise InputDataError(
            f"feature column(s) {non_numeric} are not numeric",
            where=where,
            fix="exclude them (model.exclude_features) or store them as numbers",
        )
    all_nan = [c for c in feats if table[c].isna().all()]
    if all_nan:
        raise InputDataError(
            f"feature column(s) {all_nan} are empty (all NaN) in this table",
            where=where,
            fix="add them to model.exclude_features, or use a table where they are filled",
        )
    return feats


def _enough_households(
    table: pd.DataFrame, keep: np.ndarray, config: SolarForestConfig, where: str
) -> tuple[np.ndarray, int]:
    """``keep`` less the tracts with fewer than ``config.min_households``; and how many those are."""
    if config.min_households <= 0:
        return keep, 0
    if HOUSEHOLD_COLUMN not in table.columns:
        raise InputDataError(
            f"model.min_households needs the '{HOUSEHOLD_COLUMN}' column",
            where=where,
            fix="use the DeepSolar tract table as features, or set min_households: 0",
        )
    hh = pd.to_numeric(table[HOUSEHOLD_COLUMN], errors="coerce").to_numpy(dtype=float)
    enough = hh >= config.min_households  # NaN households: not enough
    n_few = int((keep & ~enough).sum())
    log.info("left out %d tract(s) with < %d households", n_few, config.min_households)
    return keep & enough, n_few


def prepare_data(
    db: TractDB, config: SolarForestConfig, table: pd.DataFrame | None = None
) -> TrainingData:
    """Training set: rows with a finite target, the selected feature columns, tract ids.

    Args:
        db: the DeepSolar tract table.
        config: the model settings.
        table: the feature table joined to an external target
            (:func:`deepsolar.solarforest.tractdb.join_target`); by default the DeepSolar table.

    Returns:
        The training set.
    """
    table = db.table if table is None else table
    target = config.target
    if target not in table.columns:
        raise InputDataError(
            f"target column '{target}' not in the table (DeepSolar targets here: {db.targets})",
            where=db.source,
            fix="set model.target to one of the listed columns, or join a target table",
        )
    y_all = pd.to_numeric(table[target], errors="coerce").replace([np.inf, -np.inf], np.nan)
    if y_all.isna().all():
        raise InputDataError(
            f"target column '{target}' is empty (all NaN)",
            where=db.source,
            fix="choose another target or a table where it is filled",
        )
    feats = select_features(db, config, table)
    keep = y_all.notna().to_numpy()
    n_drop = int((~keep).sum())
    if n_drop:
        log.info("left out %d tract(s) without a value of %s", n_drop, target)
    keep, n_few = _enough_households(table, keep, config, db.source)
    y = y_all[keep].to_numpy(dtype=float)
    if (config.two_stage or config.target_transform == "log1p") and (y < 0).any():
        raise InputDataError(
            f"target '{target}' has negative values; the two-stage model and the log1p "
            "transform need a non-negative target",
            where=db.source,
            fix="use a non-negative target (densities, counts, areas)",
        )
    sub = table.loc[keep]
    return TrainingData(
        X=sub[feats].reset_index(drop=True).astype(float),
        y=y,
        fips=sub["fips"].reset_index(drop=True).astype(str),
        target=target,
        features=feats,
        n_dropped_missing_target=n_drop,
        source_sha256=db.sha256,
        n_dropped_min_households=n_few,
    )


def load_training_table(
    features_path: str | Path,
    config: SolarForestConfig,
    *,
    lexicon_path: str | Path | None = None,
    target_path: str | Path | None = None,
    target_layer: str = "tracts",
    targets: list[str] | None = None,
) -> tuple[TractDB, pd.DataFrame]:
    """The feature table, joined to an external per-tract target table when one is given.

    The paper's deployment density is computed from our residential systems and the tract's
    households when our table lacks it; the households then come from the feature table's ACS
    ``household_count`` (see :func:`deepsolar.solarforest.tractdb.read_target_table`).

    Args:
        features_path: the DeepSolar tract table.
        config: the model settings (its ``target``).
        lexicon_path: ``deepsolar_lexicon.csv`` (default: the one beside ``features_path``).
        target_path: our per-tract target table, or None to use the DeepSolar targets.
        target_layer: its GeoPackage layer.
        targets: every target column to take from ``target_path`` (default: ``config.target``).

    Returns:
        The tract table and the table to train on (joined, or ``db.table``).
    """
    db = read_tract_db(features_path, lexicon=lexicon_path)
    if target_path is None:
        return db, db.table
    wanted = list(dict.fromkeys(targets or [config.target]))
    households = (
        db.table.set_index("fips")[HOUSEHOLD_COLUMN] if HOUSEHOLD_COLUMN in db.table else None
    )
    tt = read_target_table(target_path, wanted, layer=target_layer, households=households)
    return db, join_target(db, tt, wanted)
