"""The solarforest flow under Prefect's test harness, on the real Virginia DeepSolar subset."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
from shapely.geometry import Point, box
from sklearn.metrics import r2_score

from deepsolar.core.config import validate_config
from deepsolar.core.errors import ConfigError, InputDataError
from flows.solarforest import SolarForestFlowParams, main, solarforest

pytestmark = pytest.mark.usefixtures("prefect_harness")

VA = "tables/deepsolar_tract_va/deepsolar_tract_VA.csv"
PH = "number_of_solar_system_per_household"
AREA = "solar_panel_area_divided_by_area"
FAST_MODEL = {"n_estimators": 20, "max_features": "sqrt", "n_jobs": 1, "cv_folds": 3,
              "permutation_repeats": 1, "pdp_grid_resolution": 5}  # fmt: skip
FAST_EVAL = {"targets": [PH, AREA], "bootstrap_samples": 100}


def _params(shared_data: Path, out: Path, **kw) -> SolarForestFlowParams:
    data = {"features_path": str(shared_data / VA), "output_dir": str(out), "model": FAST_MODEL}
    data.update(kw)
    return validate_config(SolarForestFlowParams, data)


@pytest.mark.slow
def test_evaluate_writes_metrics_consistent_with_predictions(shared_data, tmp_path) -> None:
    out = tmp_path / "eval"
    res = solarforest(_params(shared_data, out, mode="evaluate", evaluation=FAST_EVAL))
    m = json.loads((out / "metrics.json").read_text())
    assert m == json.loads(json.dumps(res["metrics"]))
    oof = pd.read_csv(out / "oof_predictions.csv", dtype={"fips": str})
    groups = oof.groupby(["target", "transform", "model", "scheme"])
    assert len(groups) == 2 * 2 * 4 * 2  # every target x transform x model x CV scheme
    for (target, transform, model, scheme), g in groups:
        run = m["targets"][target]["runs"][transform][model][scheme]["pooled"]
        assert r2_score(g["observed"], g["predicted"]) == pytest.approx(run["r2"])
    assert m["target"] == PH
    assert m["variants"]["one_stage"]["random"]["pooled"]["r2"] > 0.3
    for name in ("r2_table.md", "calibration.png", "partial_dependence.png",
                 "permutation_importances.csv", "impurity_importances.png"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name


def _mapping_gpkg(shared_data: Path, path: Path) -> pd.DataFrame:
    """A GeoPackage shaped like the mapping flow's output: layer ``tracts`` (GEOID + target) and
    another layer that must survive. Targets and GEOIDs are real VA values; the polygons are
    SYNTHETIC 0.01-degree squares around the DeepSolar tract centroids."""
    raw = pd.read_csv(shared_data / VA, dtype={"fips": str})
    t = raw.dropna(subset=["lat", "lon", AREA]).head(250)
    geoms = [
        box(lo - 0.005, la - 0.005, lo + 0.005, la + 0.005)
        for lo, la in zip(t.lon, t.lat, strict=True)
    ]
    # no household counts in the layer (our built-in tracts have none): the deployment density
    # comes from our residential systems and the feature table's households
    tracts = gpd.GeoDataFrame(
        {"GEOID": t["fips"].to_numpy(), AREA: t[AREA].to_numpy(),
         "solar_system_count": t["solar_system_count"].to_numpy(),
         "solar_system_count_residential": t["solar_system_count_residential"].to_numpy(),
         "household_count_in_features": t["household_count"].to_numpy(),
         "n_panels": np.arange(len(t))},
        geometry=geoms, crs=4326,
    )  # fmt: skip
    tracts.to_file(path, layer="tracts", driver="GPKG")
    gpd.GeoDataFrame({"id": [1]}, geometry=[Point(-77, 38)], crs=4326).to_file(path, layer="panels")
    return tracts


@pytest.mark.slow
def test_train_then_predict_into_the_mapping_geopackage(shared_data, tmp_path) -> None:
    gpkg = tmp_path / "region.gpkg"
    tracts = _mapping_gpkg(shared_data, gpkg)
    out = tmp_path / "sf"
    common = {"target_path": str(gpkg), "predictions_gpkg": str(gpkg)}
    model_cfg = {**FAST_MODEL, "two_stage": True}
    res = solarforest(_params(shared_data, out, mode="train", model=model_cfg, **common))
    side = json.loads(Path(res["sidecar"]).read_text())
    # trained on our tracts only, the paper's target computed from them (tracts with households)
    with_households = int((tracts["household_count_in_features"] > 0).sum())
    assert side["target"] == PH and side["n_train_tracts"] == with_households
    assert side["config"]["two_stage"] is True
    assert Path(res["partial_dependence"]).is_file()

    res = solarforest(_params(shared_data, out, mode="predict", **common))
    assert res["predictions_gpkg"] == str(gpkg) and res["n_tracts"] == len(tracts)
    layers = {name for name, _ in pyogrio.list_layers(gpkg)}
    assert layers == {"tracts", "panels"}  # the other layer survived
    got = gpd.read_file(gpkg, layer="tracts")
    assert len(got) == len(tracts) and (got["n_panels"] == tracts["n_panels"]).all()
    pred = got[f"predicted_{PH}"]
    assert pred.notna().all() and (pred >= 0).all()
    assert got["p_nonzero"].between(0, 1).all()
    obs = got[f"observed_{PH}"]
    expected = tracts["solar_system_count_residential"] / tracts["household_count_in_features"]
    ok = tracts["household_count_in_features"].to_numpy() > 0
    np.testing.assert_allclose(obs[ok], expected[ok])
    csv = pd.read_csv(out / "predictions.csv", dtype={"fips": str})
    np.testing.assert_allclose(csv.set_index("fips").loc[got["GEOID"], f"predicted_{PH}"], pred)
    # evaluate on our map output: the same deployment density, every target from our layer
    ev = {"targets": [PH, "solar_system_count"], "transforms": ["none"], "bootstrap_samples": 50}
    res = solarforest(
        _params(shared_data, tmp_path / "ev", mode="evaluate", evaluation=ev,
                permutation_importance=False, target_path=str(gpkg))
    )  # fmt: skip
    m = res["metrics"]
    assert m["targets"][PH]["n_tracts"] == with_households
    assert m["targets"]["solar_system_count"]["n_tracts"] == len(tracts)
    oof = pd.read_csv(tmp_path / "ev" / "oof_predictions.csv", dtype={"fips": str})
    sel = oof[(oof["target"] == PH) & (oof["model"] == "mean") & (oof["scheme"] == "random")]
    np.testing.assert_allclose(
        sel.set_index("fips").loc[tracts["GEOID"][ok], "observed"], expected[ok].to_numpy()
    )
    # running predict again replaces the prediction columns instead of duplicating them
    solarforest(_params(shared_data, out, mode="predict", **common))
    again = gpd.read_file(gpkg, layer="tracts")
    assert list(again.columns) == list(got.columns)


def test_bad_parameters_fail_before_work(shared_data, tmp_path) -> None:
    with pytest.raises(ConfigError, match="exactly one of features_path or features_url"):
        validate_config(SolarForestFlowParams, {"output_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="model.n_trees"):
        _params(shared_data, tmp_path, model={"n_trees": 3})
    with pytest.raises(InputDataError, match="no trained model"):
        solarforest(_params(shared_data, tmp_path / "none", mode="predict"))
    assert not (tmp_path / "none").exists()  # nothing written
    with pytest.raises(InputDataError, match="target_path not found"):
        solarforest(_params(shared_data, tmp_path, target_path=str(tmp_path / "missing.gpkg")))


def test_cli_reports_a_clear_error(shared_data, tmp_path, capsys) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"features_path: {tmp_path / 'nope.csv'}\noutput_dir: {tmp_path}\n")
    assert main(["--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "solarforest failed" in err and "features_path not found" in err


def test_example_config_is_valid() -> None:
    from deepsolar.core.config import load_config

    repo = Path(__file__).resolve().parents[2]
    p = load_config(SolarForestFlowParams, repo / "configs/solarforest.yaml")
    assert p.mode == "evaluate" and p.features_path.name == "deepsolar_tract_VA.csv"
    assert p.model.target == PH  # the paper's deployment density
    assert p.targets == [PH, AREA, "solar_system_count"]
    assert p.evaluation.transforms == ["none", "log1p"]
    assert p.evaluation.models() == ["mean", "linear", "one_stage", "two_stage"]


def test_quick_overrides_are_valid_parameters() -> None:
    from deepsolar.core.config import apply_override
    from deepsolar.jobs.solarforest import QUICK

    data = {"features_path": "x.csv"}
    for k, v in QUICK.items():
        apply_override(data, f"{k}={v}")
    p = validate_config(SolarForestFlowParams, data)
    assert p.model.n_estimators < 100 and p.permutation_importance is False


def test_cli_overrides() -> None:
    from deepsolar.core.config import apply_override

    data = {"model": {"n_estimators": 300}}
    apply_override(data, "model.two_stage=true")
    apply_override(data, "model.feature_groups=[environment, location]")
    apply_override(data, "mode=train")
    assert data == {
        "mode": "train",
        "model": {
            "n_estimators": 300,
            "two_stage": True,
            "feature_groups": ["environment", "location"],
        },
    }
    with pytest.raises(ConfigError, match="bad --set"):
        apply_override(data, "model.two_stage")
