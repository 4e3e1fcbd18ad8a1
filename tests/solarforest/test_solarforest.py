"""SolarForest on the real DeepSolar Virginia subset (small forests to stay fast)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import r2_score

from deepsolar import solarforest as sf
from deepsolar.core.config import validate_config
from deepsolar.core.errors import ConfigError, InputDataError
from deepsolar.solarforest.schema import is_target_column
from deepsolar.solarforest.tractdb import read_tract_db

VA = "tables/deepsolar_tract_va/deepsolar_tract_VA.csv"
PH = "number_of_solar_system_per_household"
AREA = "solar_panel_area_divided_by_area"
# Small, fast forests: the reported run (docs/solarforest.md) uses 100 trees and 5 folds.
FAST = dict(n_estimators=30, max_features="sqrt", n_jobs=1, permutation_repeats=2, cv_folds=4)
# The evaluation grid in the tests: two targets, both transforms, every model, both CV schemes.
GRID = sf.EvaluationConfig(targets=[PH, AREA], bootstrap_samples=300)


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
def cv(db, cfg):
    return sf.evaluate(db, cfg.model_copy(update={"n_estimators": 20, "cv_folds": 3}), GRID)


@pytest.fixture(scope="module")
def area_data(db, cfg) -> sf.TrainingData:
    return sf.prepare_data(db, cfg.model_copy(update={"target": AREA}))


@pytest.fixture(scope="module")
def model2(data, cfg) -> sf.SolarForestModel:
    return sf.fit_solarforest(data, cfg.model_copy(update={"two_stage": True}))


def test_training_data_has_no_leakage_and_drops_missing_targets(db, data, cfg) -> None:
    # the paper's target by default; tracts without households (DeepSolar: inf) have no density
    assert data.target == PH and cfg.resolved_target_scale == 1000.0
    assert data.n_dropped_missing_target == int(db.table[PH].isna().sum()) == 34
    assert (db.table.loc[db.table[PH].isna(), "household_count"] == 0).sum() == 34
    assert len(data.y) == len(db.table) - 34 and np.isfinite(data.y).all()
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


@pytest.mark.slow  # the evaluation grid: ~20 s on 2 cores
def test_evaluation_covers_every_target_transform_model_and_scheme(db, cv) -> None:
    metrics, results = cv
    models = ["mean", "linear", "one_stage", "two_stage"]
    assert set(results) == {
        (t, tr, m, s)
        for t in (PH, AREA)
        for tr in ("none", "log1p")
        for m in models
        for s in ("random", "spatial")
    }
    for (target, transform, model, scheme), r in results.items():
        assert np.isfinite(r.oof).all() and (r.oof >= 0).all()  # no negative density
        assert sorted(np.unique(r.fold)) == [0, 1, 2]
        scale = 1000.0 if target == PH else 1.0
        m = metrics["targets"][target]["runs"][transform][model][scheme]["pooled"]
        # every figure of the table is the score of these out-of-fold predictions
        assert m["r2"] == pytest.approx(r2_score(r.y, r.oof))
        assert m["r2_log1p"] == pytest.approx(
            r2_score(np.log1p(scale * r.y), np.log1p(scale * r.oof))
        )
        assert m["mae"] == pytest.approx(scale * np.mean(np.abs(r.y - r.oof)))
        lo, hi = m["r2_ci"]
        assert lo < hi and hi <= 1
    assert metrics["targets"][PH]["unit"] == "systems per 1000 households"
    assert metrics["targets"][PH]["n_tracts"] == len(db.table) - 34
    # the primary view (old layout) is the default target's untransformed forest runs
    assert metrics["target"] == PH
    assert metrics["variants"]["one_stage"] is metrics["targets"][PH]["runs"]["none"]["one_stage"]


@pytest.mark.slow  # the evaluation grid: ~20 s on 2 cores
def test_the_forest_adds_skill_over_the_baselines(cv) -> None:
    metrics, _ = cv
    runs = metrics["targets"][PH]["runs"]["none"]
    for scheme in ("random", "spatial"):
        # out-of-fold, the training mean scores at or just below 0
        assert -0.05 < runs["mean"][scheme]["pooled"]["r2"] <= 0.0
        forest = runs["one_stage"][scheme]["pooled"]["r2"]
        assert forest > 0.3  # 0.5-0.6 measured on the paper's target
        assert forest > runs["linear"][scheme]["pooled"]["r2"] + 0.1
    area = metrics["targets"][AREA]["runs"]["none"]
    assert area["one_stage"]["random"]["pooled"]["r2"] > 0.1  # 0.2-0.25 measured
    # on log scale the forest also beats the ridge regression fitted on that scale
    log_runs = metrics["targets"][PH]["runs"]["log1p"]
    assert (
        log_runs["one_stage"]["random"]["pooled"]["r2_log1p"]
        > log_runs["linear"]["random"]["pooled"]["r2_log1p"]
    )


@pytest.mark.slow  # the evaluation grid: ~20 s on 2 cores
def test_two_stage_runs_share_their_zero_nonzero_stage_across_transforms(cv) -> None:
    _, results = cv
    for target in (PH, AREA):
        for scheme in ("random", "spatial"):
            a = results[(target, "none", "two_stage", scheme)]
            b = results[(target, "log1p", "two_stage", scheme)]
            np.testing.assert_array_equal(a.p_nonzero, b.p_nonzero)
            assert not np.allclose(a.oof, b.oof)  # the regression stage differs


def test_small_evaluation_grid_scores_its_own_predictions(db) -> None:
    """Fast version of the grid: 600 tracts, tiny forests, every model, one CV scheme."""
    cfg = sf.SolarForestConfig(n_estimators=5, n_jobs=1, cv_folds=3, cv_schemes=["random"])
    ev = sf.EvaluationConfig(targets=[PH], bootstrap_samples=100)
    metrics, results = sf.evaluate(db, cfg, ev, db.table.head(600))
    assert len(results) == 2 * 4
    for (_, transform, model, _), r in results.items():
        m = metrics["targets"][PH]["runs"][transform][model]["random"]["pooled"]
        assert m["r2"] == pytest.approx(r2_score(r.y, r.oof))
        assert len(m["r2_ci"]) == 2 and len(m["r2_log1p_ci"]) == 2
    assert "two_stage" in metrics["variants"] and "mean" not in metrics["variants"]
    table = sf.r2_table(metrics)
    assert table.count("| deployment density (paper) (systems per 1000 households) |") == 8
    assert "R² random CV [95% CI]" in table and "county CV" not in table.splitlines()[0]


def test_bootstrap_weights_and_weighted_r2(data) -> None:
    y = data.y
    pred = y * 0.5 + np.mean(y) * 0.5
    ones = np.ones((1, len(y)))
    assert sf.weighted_r2(ones, y, pred)[0] == pytest.approx(r2_score(y, pred))
    w = sf.bootstrap_weights(data.counties.to_numpy(), 50, seed=1)
    assert w.shape == (50, len(y))
    # whole counties: every tract of a county has its county's draw count
    per_county = pd.DataFrame(w.T).groupby(data.counties.to_numpy()).nunique()
    assert (per_county.to_numpy() == 1).all()
    assert (w.sum(axis=1) > 0).all()
    wt = sf.bootstrap_weights(np.arange(len(y)), 50, seed=1)
    assert (wt.sum(axis=1) == len(y)).all()
    # a resample equals an explicit resampled R²
    idx = np.repeat(np.arange(len(y)), wt[0].astype(int))
    assert sf.weighted_r2(wt[:1], y, pred)[0] == pytest.approx(r2_score(y[idx], pred[idx]))
    lo, hi = sf.bootstrap_interval(w, y, y)
    assert lo == hi == 1.0


def test_baselines_predict_the_training_mean_or_a_clipped_ridge(data) -> None:
    X, y = data.X, data.y
    mean = sf.BaselineRegressor("mean").fit(X, y)
    np.testing.assert_allclose(mean.predict(X.iloc[:5]), np.mean(y))
    geo = sf.BaselineRegressor("mean", "log1p", 1000.0).fit(X, y)
    np.testing.assert_allclose(
        geo.predict(X.iloc[:1]), np.expm1(np.mean(np.log1p(1000 * y))) / 1000
    )
    lin = sf.BaselineRegressor("linear").fit(X, y)
    wild = X.iloc[:3] * 1000.0  # far outside the training features
    p = lin.predict(wild)
    assert (p >= y.min()).all() and (p <= y.max()).all()
    assert lin.predict(X).std() > 0


@pytest.mark.slow  # the evaluation grid: ~20 s on 2 cores
def test_spatial_folds_hold_out_whole_counties(data, cv) -> None:
    _, results = cv
    fold = results[(PH, "none", "one_stage", "spatial")].fold
    per_county = pd.Series(fold).groupby(data.counties.to_numpy()).nunique()
    assert (per_county == 1).all()
    rnd = results[(PH, "none", "one_stage", "random")].fold
    rnd = pd.Series(rnd).groupby(data.counties.to_numpy()).nunique()
    assert (rnd > 1).any()  # random folds do split counties


def test_shuffled_target_has_no_skill(area_data, cfg) -> None:
    """The same pipeline on a permuted target: R² near or below 0 (the metric is not flattered)."""
    rng = np.random.default_rng(0)
    d = area_data
    shuffled = sf.TrainingData(d.X, rng.permutation(d.y), d.fips, d.target, d.features)
    r = sf.cross_validate(shuffled, cfg.model_copy(update={"target": AREA}), "random")
    assert r.metrics["pooled"]["r2"] < 0.05


@pytest.mark.slow  # the evaluation grid: ~20 s on 2 cores
def test_two_stage_classifier_metrics_and_calibration(data, cv) -> None:
    metrics, results = cv
    for scheme in ("random", "spatial"):
        c = metrics["variants"]["two_stage"][scheme]["classifier"]
        assert c["nonzero_fraction"] == pytest.approx(np.mean(data.y > 0))
        assert c["auc"] > 0.65  # ~0.77 measured
        p = results[(PH, "none", "two_stage", scheme)].p_nonzero
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


def test_log1p_transform_acts_per_thousand_households_and_predicts_in_target_units(data) -> None:
    est = sf.SolarForestEstimator(
        target_transform="log1p", target_scale=1000.0, n_estimators=10, n_jobs=1
    )
    est.fit(data.X, data.y)
    pred = est.predict(data.X)
    np.testing.assert_allclose(pred, np.expm1(est.regressor_.predict(data.X)) / 1000.0)
    # fitted on log(1 + systems per 1000 households), not on log(1 + 0.0006) ~ identity
    assert est.regressor_.predict(data.X).max() > 1.0
    assert r2_score(np.log1p(1000 * data.y), np.log1p(1000 * pred)) > 0.5  # in-sample, log scale


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


@pytest.mark.slow  # the evaluation grid: ~20 s on 2 cores
def test_evaluation_outputs(tmp_path, cv) -> None:
    metrics, results = cv
    paths = sf.write_evaluation(tmp_path, metrics, results)
    m = json.loads(Path(paths["metrics_json"]).read_text())
    assert (
        m["n_tracts"]
        == m["targets"][PH]["n_tracts"]
        == len(results[(PH, "none", "mean", "random")].y)
    )
    assert m["versions"]["scikit-learn"]
    oof = pd.read_csv(paths["oof_predictions"], dtype={"fips": str})
    assert len(oof) == sum(len(r.y) for r in results.values())
    sel = oof[
        (oof["target"] == AREA)
        & (oof["transform"] == "log1p")
        & (oof["model"] == "two_stage")
        & (oof["scheme"] == "spatial")
    ]
    assert len(sel) == len(results[(AREA, "log1p", "two_stage", "spatial")].y)
    assert r2_score(sel["observed"], sel["predicted"]) == pytest.approx(
        m["targets"][AREA]["runs"]["log1p"]["two_stage"]["spatial"]["pooled"]["r2"]
    )
    table = Path(paths["r2_table"]).read_text()
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and "|---" not in ln]
    # header + 2 targets x 2 transforms x 4 models, then the zero/non-zero table: header + 2 x 2
    assert len(rows) == 1 + 16 + 1 + 4
    assert "R² county CV [95% CI]" in rows[0] and "baseline: ridge regression" in table
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
    t = db.table.assign(**{PH: np.nan})
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
    from deepsolar.solarforest.tractdb import join_target

    t = db.table.dropna(subset=[AREA]).head(400)
    ours = pd.DataFrame({"GEOID": t["fips"], AREA: np.arange(400.0)})
    joined = join_target(db, ours, AREA)
    area_cfg = cfg.model_copy(update={"target": AREA})
    d = sf.prepare_data(db, area_cfg, joined)
    np.testing.assert_array_equal(d.y, np.arange(400.0))
    assert d.features == sf.prepare_data(db, area_cfg).features


def test_min_households_leaves_out_tracts_with_few_households(db, cfg, data) -> None:
    d = sf.prepare_data(db, cfg.model_copy(update={"min_households": 100}))
    hh = db.table.set_index("fips").loc[d.fips, "household_count"]
    assert (hh >= 100).all()
    few = int((db.table["household_count"] < 100).sum())
    assert few > 0 and d.n_dropped_min_households == few - 34  # the 34 without households
    assert len(d.y) == len(data.y) - d.n_dropped_min_households
