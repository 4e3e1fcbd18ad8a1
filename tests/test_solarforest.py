"""SolarForest on the real DeepSolar Virginia subset (small forests to stay fast)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import r2_score

from deepsolar import solarforest as sf
from deepsolar.config import validate_config
from deepsolar.errors import ConfigError, InputDataError
from deepsolar.tractdb import is_target_column, read_tract_db

VA = "tables/deepsolar_tract_va/deepsolar_tract_VA.csv"
# Small, fast forests: the reported run (docs/solarforest.md) uses 300 trees.
FAST = dict(n_estimators=30, max_features="sqrt", n_jobs=1, permutation_repeats=2, cv_folds=4)


@pytest.fixture(scope="module")
def db(shared_data: Path):
    return read_tract_db(shared_data / VA)


@pytest.fixture(scope="module")
def cfg() -> sf.SolarForestConfig:
    return sf.SolarForestConfig(**FAST)


@pytest.fixture(scope="module")
def data(db, cfg) -> sf.TrainingData:
    return sf.prepare_data(db, cfg)


@pytest.fixture(scope="module")
def cv(data, cfg):
    return sf.evaluate(data, cfg)


@pytest.fixture(scope="module")
def model2(data, cfg) -> sf.SolarForestModel:
    return sf.fit_solarforest(data, cfg.model_copy(update={"two_stage": True}))


def test_training_data_has_no_leakage_and_drops_missing_targets(db, data) -> None:
    assert data.target == "solar_panel_area_divided_by_area"
    assert data.n_dropped_missing_target == int(db.table[data.target].isna().sum()) == 1
    assert len(data.y) == len(db.table) - 1 and np.isfinite(data.y).all()
    assert not any(is_target_column(c) for c in data.features)
    assert "lat" not in data.features  # location is opt-in
    assert (
        list(data.X.columns) == data.features and data.X.dtypes.map(lambda d: d == np.float64).all()
    )
    assert data.fips.str.len().eq(11).all()


def test_data_hash_is_content_sensitive(data) -> None:
    h = data.sha256()
    assert h == sf.data_sha256(data.X.copy(), data.y.copy(), data.fips.copy())
    y2 = data.y.copy()
    y2[0] += 1e-9
    assert sf.data_sha256(data.X, y2, data.fips) != h
    assert sf.data_sha256(data.X.rename(columns={"gini_index": "g"}), data.y, data.fips) != h


def test_cross_validation_covers_every_tract_once_and_beats_the_mean(data, cv) -> None:
    metrics, results = cv
    assert set(metrics["variants"]) == {"one_stage", "two_stage"}
    for (variant, scheme), r in results.items():
        assert np.isfinite(r.oof).all()
        assert sorted(np.unique(r.fold)) == [0, 1, 2, 3]
        # the pooled R² in the JSON is the R² of these out-of-fold predictions
        assert metrics["variants"][variant][scheme]["pooled"]["r2"] == pytest.approx(
            r2_score(data.y, r.oof)
        )
        assert (r.oof >= 0).all()  # a density forest never predicts negative area
    # Real skill on the real data (0.2-0.25 measured with 30-300 trees), far from the mean's 0.
    assert metrics["variants"]["one_stage"]["random"]["pooled"]["r2"] > 0.1


def test_spatial_folds_hold_out_whole_counties(data, cv) -> None:
    _, results = cv
    fold = results[("one_stage", "spatial")].fold
    per_county = pd.Series(fold).groupby(data.counties.to_numpy()).nunique()
    assert (per_county == 1).all()
    rnd = (
        pd.Series(results[("one_stage", "random")].fold).groupby(data.counties.to_numpy()).nunique()
    )
    assert (rnd > 1).any()  # random folds do split counties


def test_shuffled_target_has_no_skill(data, cfg) -> None:
    """The same pipeline on a permuted target: R² near or below 0 (the metric is not flattered)."""
    rng = np.random.default_rng(0)
    shuffled = sf.TrainingData(
        data.X, rng.permutation(data.y), data.fips, data.target, data.features
    )
    r = sf.cross_validate(shuffled, cfg, "random")
    assert r.metrics["pooled"]["r2"] < 0.05


def test_two_stage_classifier_metrics_and_calibration(data, cv) -> None:
    metrics, results = cv
    for scheme in ("random", "spatial"):
        c = metrics["variants"]["two_stage"][scheme]["classifier"]
        assert c["nonzero_fraction"] == pytest.approx(np.mean(data.y > 0))
        assert c["auc"] > 0.65  # ~0.77 measured
        p = results[("two_stage", scheme)].p_nonzero
        assert ((p >= 0) & (p <= 1)).all()
        assert c["brier"] == pytest.approx(np.mean((p - (data.y > 0)) ** 2))
        cal = c["calibration"]
        assert len(cal["prob_pred"]) == len(cal["prob_true"]) >= 5
        assert 0 <= c["ece"] < 0.2
    assert "classifier" not in metrics["variants"]["one_stage"]["random"]


def test_two_stage_combination_rules(data, model2) -> None:
    est = model2.estimator
    X = data.X.iloc[:300]
    p = est.predict_proba_nonzero(X)
    reg = est.regressor_.predict(X)
    np.testing.assert_allclose(est.predict(X), p * reg)
    est.set_params(combine="hard")
    try:
        np.testing.assert_allclose(est.predict(X), np.where(p >= 0.5, reg, 0.0))
    finally:
        est.set_params(combine="expected")


def test_two_stage_needs_zero_and_nonzero_tracts(data, cfg) -> None:
    pos = data.y > 0
    est = sf.SolarForestEstimator(two_stage=True, n_estimators=5)
    with pytest.raises(InputDataError, match="both zero and non-zero"):
        est.fit(data.X[pos], data.y[pos])


def test_log1p_transform_predicts_in_target_units(data) -> None:
    est = sf.SolarForestEstimator(target_transform="log1p", n_estimators=10, n_jobs=1)
    est.fit(data.X, data.y)
    pred = est.predict(data.X)
    np.testing.assert_allclose(pred, np.expm1(est.regressor_.predict(data.X)))
    assert r2_score(np.log1p(data.y), np.log1p(pred)) > 0.5  # in-sample, log scale


def test_importances(data, cfg, model2) -> None:
    imp = sf.impurity_importances(model2)
    assert set(imp["feature"]) == set(data.features)
    assert imp["impurity_regressor"].sum() == pytest.approx(1.0)
    assert imp["impurity_classifier"].sum() == pytest.approx(1.0)
    perm = sf.permutation_importances(data, cfg, max_test_rows=200)
    assert set(perm["feature"]) == set(data.features)
    assert perm["permutation_r2_drop_mean"].iloc[0] > 0  # some feature matters on held-out data


def test_partial_dependence_plot_of_headline_factors(tmp_path, data, model2) -> None:
    path, skipped = sf.plot_partial_dependence(
        model2, data.X, tmp_path / "pdp.png", grid_resolution=5, max_rows=200
    )
    assert skipped == [] and path.stat().st_size > 10_000
    # a factor the model does not use is reported, not a crash
    _, skipped = sf.plot_partial_dependence(
        model2, data.X, tmp_path / "pdp2.png", ["gini_index", "lat"], grid_resolution=5, max_rows=50
    )
    assert skipped == ["lat"]


def test_evaluation_outputs(tmp_path, data, cv) -> None:
    metrics, results = cv
    paths = sf.write_evaluation(tmp_path, metrics, data, results)
    m = json.loads(Path(paths["metrics_json"]).read_text())
    assert m["n_tracts"] == len(data.y) and m["data_sha256"] == data.sha256()
    assert m["versions"]["scikit-learn"]
    oof = pd.read_csv(paths["oof_predictions"], dtype={"fips": str})
    assert r2_score(oof[f"observed_{data.target}"], oof["oof_two_stage_spatial"]) == pytest.approx(
        m["variants"]["two_stage"]["spatial"]["pooled"]["r2"]
    )
    table = Path(paths["r2_table"]).read_text()
    assert table.count("\n") == 6 and "spatial (county) K-fold" in table
    for k in ("calibration", "observed_vs_predicted"):
        assert Path(paths[k]).stat().st_size > 5_000


def test_save_load_round_trip_and_sidecar(tmp_path, data, model2) -> None:
    path = sf.save_model(model2, tmp_path / "m.skops")
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["features"] == data.features and side["target"] == data.target
    assert side["data_sha256"] == data.sha256()
    assert set(side["versions"]) >= {"scikit-learn", "numpy", "pandas", "skops", "python"}
    assert side["config"]["two_stage"] is True
    loaded = sf.load_model(path)
    np.testing.assert_array_equal(
        loaded.estimator.predict(data.X), model2.estimator.predict(data.X)
    )
    pred = sf.predict_tracts(loaded, pd.concat([data.fips.rename("fips"), data.X], axis=1))
    assert list(pred.columns) == ["fips", f"predicted_{data.target}", "p_nonzero"]


def test_load_refuses_tampered_or_incomplete_models(tmp_path, model2) -> None:
    path = sf.save_model(model2, tmp_path / "m.skops")
    side = path.with_suffix(".json")
    good = side.read_text()
    with path.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(InputDataError, match="SHA-256"):
        sf.load_model(path)
    side.unlink()
    with pytest.raises(InputDataError, match="sidecar not found"):
        sf.load_model(path)
    side.write_text(good.replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(InputDataError, match="format 99"):
        sf.load_model(path)
    with pytest.raises(ConfigError, match=r"\.skops"):
        sf.save_model(model2, tmp_path / "m.pkl")


def test_model_applied_to_a_table_without_its_features(db, model2) -> None:
    table = db.table.drop(columns=["gini_index", "daily_solar_radiation"])
    with pytest.raises(InputDataError, match="lacks 2 of the model's") as err:
        sf.predict_tracts(model2, table, where="some.csv")
    assert "gini_index" in str(err.value) and err.value.where == "some.csv"


@pytest.mark.parametrize(
    ("update", "error", "message"),
    [
        (
            {"target": "solar_panels"},
            InputDataError,
            "target column 'solar_panels' not in the table",
        ),
        ({"features": ["gini_index", "no_such_column"]}, InputDataError, "no_such_column"),
        ({"features": ["gini_index", "total_panel_area"]}, ConfigError, "leak"),
        ({"feature_groups": [], "features": None}, ConfigError, "no feature left"),
    ],
)
def test_bad_config_against_the_table(db, cfg, update, error, message) -> None:
    with pytest.raises(error, match=message):
        sf.prepare_data(db, cfg.model_copy(update=update))


def test_all_nan_feature_and_target(db, cfg) -> None:
    t = db.table.assign(gini_index=np.nan)
    with pytest.raises(InputDataError, match=r"\['gini_index'\] are empty"):
        sf.prepare_data(db, cfg, t)
    t = db.table.assign(solar_panel_area_divided_by_area=np.nan)
    with pytest.raises(InputDataError, match="is empty"):
        sf.prepare_data(db, cfg, t)


def test_too_few_rows_or_counties_for_the_folds(db, cfg) -> None:
    few = sf.prepare_data(db, cfg, db.table.head(3))
    with pytest.raises(InputDataError, match="3 tract\\(s\\) are too few for 4-fold"):
        sf.cross_validate(few, cfg, "random")
    # Norfolk city and one neighbour: 2 counties, plenty of tracts
    two = db.table[db.table["fips"].str[:5].isin(["51710", "51810"])]
    d = sf.prepare_data(db, cfg, two)
    assert len(d.y) > 20
    with pytest.raises(InputDataError, match="2 county\\(ies\\) are too few"):
        sf.cross_validate(d, cfg, "spatial")


def test_config_is_strict() -> None:
    with pytest.raises(ConfigError, match="n_trees"):
        validate_config(sf.SolarForestConfig, {"n_trees": 5})
    with pytest.raises(ConfigError, match="max_features"):
        validate_config(sf.SolarForestConfig, {"max_features": 1.5})
    with pytest.raises(ConfigError, match="cv_schemes"):
        validate_config(sf.SolarForestConfig, {"cv_schemes": ["temporal"]})


def test_external_target_replaces_deepsolar_target(db, cfg) -> None:
    from deepsolar.tractdb import join_target

    t = db.table.dropna(subset=["solar_panel_area_divided_by_area"]).head(400)
    ours = pd.DataFrame({"GEOID": t["fips"], "solar_panel_area_divided_by_area": np.arange(400.0)})
    joined = join_target(db, ours)
    d = sf.prepare_data(db, cfg, joined)
    np.testing.assert_array_equal(d.y, np.arange(400.0))
    assert d.features == sf.prepare_data(db, cfg).features
