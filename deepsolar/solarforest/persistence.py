"""Saving and loading a fitted SolarForest.

The fitted forests go to a ``.skops`` file (no pickle: loading executes no code) and everything
needed to trust and reuse them - feature list, target, config, data hash, library versions, the
file's SHA-256 - to a JSON sidecar next to it. Loading checks the file against its sidecar before
anything is deserialised.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from deepsolar.core.errors import ConfigError, InputDataError
from deepsolar.core.io import atomic_output, file_sha256
from deepsolar.solarforest.config import SolarForestConfig
from deepsolar.solarforest.estimators import SolarForestEstimator
from deepsolar.solarforest.model import MODEL_FORMAT_VERSION, SolarForestModel, library_versions
from deepsolar.solarforest.outputs import write_json

# The only non-default types a SolarForest .skops file may hold: numpy dtypes and sklearn's tree
# node storage. Anything else in a file is refused before it is loaded.
_SKOPS_TRUSTED = ("numpy.dtype", "sklearn.tree._tree.Tree")
_SIDECAR_KEYS = {
    "format_version",
    "model_sha256",
    "features",
    "target",
    "estimator_params",
    "config",
}


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def save_model(model: SolarForestModel, path: str | Path) -> Path:
    """Write ``path`` (.skops, the forests) and ``path.with_suffix('.json')`` (metadata).

    Args:
        model: the fitted model; its ``metadata`` becomes the written sidecar's.
        path: the model file (must end in ``.skops``).

    Returns:
        ``path``.
    """
    import skops.io as sio

    p = Path(path)
    if p.suffix != ".skops":
        raise ConfigError(
            "a SolarForest model file must end in .skops",
            where=str(p),
            fix="name it e.g. solarforest.skops",
        )
    est = model.estimator
    with atomic_output(p) as tmp:
        sio.dump({"regressor": est.regressor_, "classifier": est.classifier_}, str(tmp))
        meta = dict(model.metadata)
        meta.update(
            {
                "format_version": MODEL_FORMAT_VERSION,
                "model_file": p.name,
                "model_sha256": file_sha256(tmp),
                "target": model.target,
                "features": list(model.features),
                "estimator_params": est.get_params(),
                "config": model.config.model_dump(mode="json"),
            }
        )
        meta.setdefault("versions", library_versions())
    write_json(_sidecar(p), meta)
    model.metadata = meta
    return p


def _read_sidecar(p: Path) -> dict[str, Any]:
    """The sidecar of model file ``p``, checked to exist, parse, and be of this format."""
    side = _sidecar(p)
    for f, what in ((p, "model file"), (side, "model metadata sidecar")):
        if not f.is_file():
            raise InputDataError(
                f"{what} not found",
                where=str(f),
                fix="pass the .skops file written by the solarforest train flow (its .json sidecar "
                "must sit next to it)",
            )
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputDataError(
            f"unreadable model sidecar: {err}", where=str(side), fix="retrain the model"
        ) from None
    required = _SIDECAR_KEYS
    if not isinstance(meta, dict) or required - set(meta):
        raise InputDataError(
            f"the sidecar lacks {sorted(required - set(meta if isinstance(meta, dict) else {}))}",
            where=str(side),
            fix="retrain the model with this version of deepsolar",
        )
    if meta["format_version"] != MODEL_FORMAT_VERSION:
        raise InputDataError(
            f"model format {meta['format_version']} is not supported (this code reads "
            f"{MODEL_FORMAT_VERSION})",
            where=str(side),
            fix="retrain the model with this version of deepsolar",
        )
    return meta


def _trusted_types(p: Path, meta: dict[str, Any]) -> list[str]:
    """The types to trust when loading ``p``.

    It must match its recorded SHA-256 and hold only allow-listed types beyond skops' defaults.
    """
    import skops.io as sio

    digest = file_sha256(p)
    if digest != meta["model_sha256"]:
        raise InputDataError(
            "the model file does not match the SHA-256 recorded in its sidecar (modified, "
            "truncated, or a different model)",
            where=str(p),
            fix="use the model file and sidecar written together, or retrain",
        )
    try:
        untrusted = sio.get_untrusted_types(file=p)
    except Exception as err:  # a corrupt archive raises zipfile/json errors
        raise InputDataError(
            f"not a skops model file: {err}", where=str(p), fix="retrain"
        ) from None
    extra = sorted(set(untrusted) - set(_SKOPS_TRUSTED))
    if extra:
        raise InputDataError(
            f"the model file holds types outside the SolarForest allow-list: {extra}",
            where=str(p),
            fix="only load models written by deepsolar's save_model",
        )
    return list(untrusted)


def load_model(path: str | Path) -> SolarForestModel:
    """Load a model written by :func:`save_model`, refusing a file that does not match its sidecar.

    Checks, before anything is deserialised: the sidecar exists and names this file, the file's
    SHA-256 equals the recorded one, and the file holds only scikit-learn/numpy types plus the
    allow-listed tree storage. A different scikit-learn version is reported as a warning.

    Args:
        path: the ``.skops`` file (its ``.json`` sidecar beside it).

    Returns:
        The model, ready to predict.
    """
    import skops.io as sio

    p = Path(path)
    meta = _read_sidecar(p)
    parts = sio.load(p, trusted=_trusted_types(p, meta))
    saved_sklearn = meta.get("versions", {}).get("scikit-learn")
    now = library_versions()
    if saved_sklearn and saved_sklearn != now["scikit-learn"]:
        warnings.warn(
            f"model {p} was trained with scikit-learn {saved_sklearn}, this is "
            f"{now['scikit-learn']}: predictions may differ slightly",
            stacklevel=2,
        )
    config = SolarForestConfig.model_validate(meta["config"])
    est = SolarForestEstimator(**meta["estimator_params"])
    est.regressor_ = parts["regressor"]
    est.classifier_ = parts["classifier"]
    est.feature_names_in_ = np.asarray(meta["features"], dtype=object)
    est.n_features_in_ = len(meta["features"])
    return SolarForestModel(est, list(meta["features"]), meta["target"], config, meta)
