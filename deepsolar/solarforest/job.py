"""The ``solarforest`` job: its parameters, overrides and input checks.

Its parameters (``SolarForestFlowParams``, see configs/solarforest.yaml), ``--set`` / ``--quick``
overrides and input checks. Prefect-free, so the CLI validates a run before any flow module (or
Prefect server) starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from deepsolar.core.config import StrictModel
from deepsolar.core.errors import ConfigError, InputDataError
from deepsolar.solarforest.config import EvaluationConfig, SolarForestConfig
from deepsolar.solarforest.schema import DEEPSOLAR_TRACT_URL


class SolarForestFlowParams(StrictModel):
    """Parameters of the ``solarforest`` flow (see configs/solarforest.yaml)."""

    mode: Literal["train", "evaluate", "predict"] = "evaluate"
    features_path: Path | None = Field(
        None, description="DeepSolar tract table (deepsolar_tract.csv or a subset of it)"
    )
    features_url: str | None = Field(
        None, description=f"download the national table instead (e.g. {DEEPSOLAR_TRACT_URL})"
    )
    cache_dir: Path = Path("data/cache/deepsolar")
    lexicon_path: Path | None = Field(
        None, description="deepsolar_lexicon.csv; default: the one beside features_path"
    )
    target_path: Path | None = Field(
        None, description="per-tract target from our mapping flow (.gpkg/.csv/.parquet, GEOID)"
    )
    target_layer: str = "tracts"
    tracts_path: Path | None = Field(
        None, description="tract polygons for the predictions layer; default: target_path if .gpkg"
    )
    tracts_layer: str | None = None
    output_dir: Path = Path("out/solarforest")
    model_path: Path | None = Field(None, description="default: <output_dir>/solarforest.skops")
    predictions_gpkg: Path | None = Field(
        None,
        description="GeoPackage whose 'tracts' layer receives the predictions (may be the mapping "
        "flow's own GeoPackage); default: <output_dir>/solarforest_predictions.gpkg",
    )
    evaluation: EvaluationConfig = Field(
        default_factory=EvaluationConfig,
        description="evaluate mode: targets, transforms, models and bootstrap of the R² table",
    )
    permutation_importance: bool = True
    model: SolarForestConfig = Field(default_factory=SolarForestConfig)

    @model_validator(mode="after")
    def _one_source(self) -> SolarForestFlowParams:
        if (self.features_path is None) == (self.features_url is None):
            raise ValueError("give exactly one of features_path or features_url")
        return self

    @property
    def targets(self) -> list[str]:
        """Target columns this run needs (every evaluated target in evaluate mode)."""
        if self.mode == "evaluate":
            return self.evaluation.resolved_targets(self.model.target)
        return [self.model.target]

    @property
    def resolved_model_path(self) -> Path:
        """The model file: ``model_path``, else ``<output_dir>/solarforest.skops``."""
        return self.model_path or self.output_dir / "solarforest.skops"


def check_inputs(p: SolarForestFlowParams) -> None:
    """Fail before any work on inputs that cannot exist (missing files, wrong model suffix).

    Args:
        p: the run's parameters.

    Raises:
        InputDataError: a named file is missing (or, to predict, the model file).
        ConfigError: the model path does not end in ``.skops``.
    """
    files = [("features_path", p.features_path), ("lexicon_path", p.lexicon_path)]
    files += [("target_path", p.target_path)]
    for name, path in files:
        if path is not None and not path.is_file():
            raise InputDataError(
                f"{name} not found", where=str(path), fix=f"set {name} to an existing file"
            )
    if p.tracts_path is not None and not Path(str(p.tracts_path).removeprefix("zip://")).exists():
        raise InputDataError(
            "tracts_path not found", where=str(p.tracts_path), fix="pass an existing file"
        )
    if p.resolved_model_path.suffix != ".skops":
        raise ConfigError(
            "model_path must end in .skops", where=str(p.resolved_model_path), fix="rename it"
        )
    if p.mode == "predict" and not p.resolved_model_path.is_file():
        raise InputDataError(
            "no trained model to predict with",
            where=str(p.resolved_model_path),
            fix="run the flow with mode: train first, or set model_path",
        )
