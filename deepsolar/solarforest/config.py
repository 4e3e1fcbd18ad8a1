"""SolarForest's settings: the ``model:`` and ``evaluation:`` sections of configs/solarforest.yaml.

Pydantic models only (no scikit-learn, no pandas), so that a run's parameters validate before the
model code is imported.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from deepsolar.core.config import StrictModel
from deepsolar.solarforest.schema import DEFAULT_TARGET, STANDARD_TARGETS, target_units

#: The paper's headline factors (partial-dependence plots).
HEADLINE_FACTORS: tuple[str, ...] = (
    "population_density",
    "average_household_income",
    "gini_index",
    "daily_solar_radiation",
)
FeatureGroup = Literal[
    "environment", "socioeconomic", "electricity", "policy", "voting", "location"
]
CVScheme = Literal["random", "spatial"]
Variant = Literal["one_stage", "two_stage"]
Baseline = Literal["mean", "linear"]
Transform = Literal["none", "log1p"]
#: Every model the evaluation can compare, in table order.
MODEL_ORDER: tuple[str, ...] = ("mean", "linear", "one_stage", "two_stage")
MODEL_LABELS = {
    "mean": "baseline: training mean",
    "linear": "baseline: ridge regression",
    "one_stage": "SolarForest one-stage",
    "two_stage": "SolarForest two-stage",
}
SCHEME_LABELS = {"random": "random CV", "spatial": "county CV"}


class SolarForestConfig(StrictModel):
    """Model and evaluation settings (the ``model:`` section of configs/solarforest.yaml)."""

    target: str = Field(
        DEFAULT_TARGET,
        description="column to predict: the paper's number_of_solar_system_per_household by "
        "default, or any DeepSolar target (solar_panel_area_divided_by_area, solar_system_count...)",
    )
    feature_groups: list[FeatureGroup] = Field(
        default_factory=lambda: ["environment", "socioeconomic", "electricity", "policy", "voting"],
        description="lexicon groups used as features ('location' = lat/lon, off by default)",
    )
    features: list[str] | None = Field(
        None, description="explicit feature list; overrides feature_groups"
    )
    exclude_features: list[str] = Field(default_factory=list)
    two_stage: bool = Field(False, description="zero/non-zero classifier, then regression")
    combine: Literal["expected", "hard"] = "expected"
    classifier_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    zero_threshold: float = Field(0.0, ge=0.0, description="y <= this counts as 'no solar'")
    min_households: int = Field(
        0,
        ge=0,
        description="leave out tracts with fewer households (ACS household_count): a per-household "
        "density of a tract with 10 households is one system away from an extreme value",
    )
    target_transform: Transform = Field(
        "none", description="none | log1p: the forest is fitted to log(1 + target_scale x y)"
    )
    target_scale: float | None = Field(
        None,
        gt=0.0,
        description="units the target is shown and log1p-transformed in, as a multiplier of the "
        "column (None: 1000 for per-household targets = per thousand households, else 1)",
    )
    n_estimators: int = Field(100, ge=1, le=10_000)
    max_features: float | Literal["sqrt", "log2"] = Field(
        "sqrt",
        description="features tried per split: sqrt(p) (fast: the full evaluation table in minutes "
        "on 2 cores), or a fraction such as 0.33 (p/3)",
    )
    min_samples_leaf: int = Field(1, ge=1)
    n_jobs: int = Field(-1, description="cores for the forests (-1 = all)")
    random_state: int = 0
    cv_folds: int = Field(5, ge=2, le=100)
    cv_schemes: list[CVScheme] = Field(default_factory=lambda: ["random", "spatial"], min_length=1)
    permutation_repeats: int = Field(5, ge=1)
    pdp_features: list[str] = Field(default_factory=lambda: list(HEADLINE_FACTORS))
    pdp_grid_resolution: int = Field(30, ge=2)
    calibration_bins: int = Field(10, ge=2)

    @property
    def resolved_target_scale(self) -> float:
        """The target's display multiplier: ``target_scale``, else the target's default."""
        return self.target_scale if self.target_scale is not None else target_units(self.target)[0]

    @field_validator("max_features")
    @classmethod
    def _fraction(cls, v: float | str) -> float | str:
        if isinstance(v, float) and not 0.0 < v <= 1.0:
            raise ValueError("a fraction of features must be in (0, 1]")
        return v


class EvaluationConfig(StrictModel):
    """What :func:`evaluate` compares (the ``evaluation:`` section of configs/solarforest.yaml)."""

    targets: list[str] | None = Field(
        None,
        description="targets to evaluate; None: model.target, then the paper's deployment density, "
        "panel area per square mile and the system count",
    )
    transforms: list[Transform] = Field(default_factory=lambda: ["none", "log1p"], min_length=1)
    variants: list[Variant] = Field(
        default_factory=lambda: ["one_stage", "two_stage"], min_length=1
    )
    baselines: list[Baseline] = Field(
        default_factory=lambda: ["mean", "linear"],
        description="plain models on the same features and folds: what the forest adds",
    )
    bootstrap_samples: int = Field(
        1000, ge=0, le=100_000, description="resamples for the R² interval (0: none)"
    )
    bootstrap_by: Literal["county", "tract"] = Field(
        "county", description="resample whole counties (tracts in a county are not independent)"
    )
    confidence: float = Field(0.95, gt=0.0, lt=1.0)

    def resolved_targets(self, primary: str) -> list[str]:
        """The targets to evaluate, without repeats.

        Args:
            primary: the model's own target (first when ``targets`` is None).

        Returns:
            ``targets``, or ``primary`` then the standard targets.
        """
        wanted = self.targets if self.targets is not None else [primary, *STANDARD_TARGETS]
        return list(dict.fromkeys(wanted))

    def models(self) -> list[str]:
        """The compared models (baselines and forest variants), in table order.

        Returns:
            Model names of ``MODEL_ORDER`` that are chosen.
        """
        chosen = set(self.baselines) | set(self.variants)
        return [m for m in MODEL_ORDER if m in chosen]
