"""Totals with error bars (deepsolar.maps.uncertainty): coverage on simulated units, the limiting
cases, bias correction, config validation, and the columns aggregate_systems writes."""

from __future__ import annotations

import json
import re

import geopandas as gpd
import numpy as np
import pytest
import shapely

from deepsolar.core.config import validate_config
from deepsolar.core.errors import ConfigError
from deepsolar.geo.tiling import TileGrid
from deepsolar.maps.aggregate import AggregateConfig, ScanCoverage, aggregate_systems
from deepsolar.maps.uncertainty import (
    AREA_CORRECTED,
    AREA_HI,
    AREA_LO,
    COUNT_CORRECTED,
    COUNT_HI,
    COUNT_LO,
    DetectorCounts,
    ScannedTotals,
    UncertaintyConfig,
    detector_counts_from_checkpoint,
    detector_counts_from_report,
    expansion_estimate,
    resolve_detector_counts,
    unit_intervals,
)

PERFECT = DetectorCounts(tp=10**7, fp=0, fn=0)  # P = R = 1, known almost exactly


# ----------------------------------------------------------------------- simulated units


def _systems(rng: np.random.Generator, has: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per tile: systems (1 + Poisson(0.5) where ``has``) and their summed area (lognormal m²)."""
    k = np.where(has, 1 + rng.poisson(0.5, len(has)), 0)
    return k, np.array([rng.lognormal(3.0, 0.6, m).sum() for m in k])


def simulate_unit(rng, precision, recall, *, tiles=400, prevalence=0.1, fraction=1.0):
    """One unit of ``tiles`` grid tiles, a random ``fraction`` of them scanned, seen through a
    tile detector with the given precision and recall (false positive tiles hold systems drawn
    like true ones). Returns (area, count) ScannedTotals, detected tiles, true area, true count."""
    pv = rng.random(tiles) < prevalence
    true_k, true_a = _systems(rng, pv)
    fp_rate = prevalence * recall * (1 - precision) / (precision * (1 - prevalence))
    flagged = np.where(pv, rng.random(tiles) < recall, rng.random(tiles) < fp_rate)
    fake_k, fake_a = _systems(rng, ~pv)
    det_k = np.where(pv, true_k, fake_k) * flagged
    det_a = np.where(pv, true_a, fake_a) * flagged
    n = int(round(fraction * tiles))
    s = rng.permutation(tiles)[:n]
    f = np.array([n / tiles])

    def totals(v: np.ndarray) -> ScannedTotals:
        v = v[s].astype(float)
        return ScannedTotals(np.array([v.sum()]), np.array([(v**2).sum()]), np.array([n]), f)

    return totals(det_a), totals(det_k), np.array([flagged[s].sum()]), true_a.sum(), true_k.sum()


def validation_counts(rng, precision, recall, pos=150, neg=300) -> DetectorCounts:
    """TP / FP / FN of the same detector on a validation set of ``pos`` + ``neg`` tiles."""
    tp = int(rng.binomial(pos, recall))
    fp_rate = pos * recall * (1 - precision) / (precision * neg)
    return DetectorCounts(tp=tp, fp=int(rng.binomial(neg, fp_rate)), fn=pos - tp)


def coverage(seed, precision, recall, fractions, *, perfect=False, units=200):
    rng = np.random.default_rng(seed)
    hit_a = hit_c = 0
    for i in range(units):
        area, count, d, true_a, true_k = simulate_unit(
            rng, precision, recall, fraction=fractions(rng)
        )
        counts = PERFECT if perfect else validation_counts(rng, precision, recall)
        out = unit_intervals(area, count, d, counts, draws=1000, seed=i)
        hit_a += out[AREA_LO][0] <= true_a <= out[AREA_HI][0]
        hit_c += out[COUNT_LO][0] <= true_k <= out[COUNT_HI][0]
    return hit_a / units, hit_c / units


def test_interval_covers_the_truth_at_about_the_nominal_rate():
    # a biased detector (P 0.8, R 0.85) known from 450 validation tiles; half the units complete,
    # half scanned at 50-100%. Without the per-unit detector noise coverage falls to ~0.75, with
    # the found totals as they are (no P / R) to ~0.4.
    def fractions(rng):
        return 1.0 if rng.random() < 0.5 else rng.uniform(0.5, 1.0)

    cov_area, cov_count = coverage(1, 0.8, 0.85, fractions)
    assert 0.9 <= cov_area <= 0.99
    assert 0.9 <= cov_count <= 0.99


def test_sampling_interval_covers_the_truth_of_partly_scanned_units():
    # a perfect detector: all the width is sampling (30-70% of each unit scanned at random)
    cov_area, cov_count = coverage(2, 1.0, 1.0, lambda rng: rng.uniform(0.3, 0.7), perfect=True)
    assert 0.9 <= cov_area <= 0.99
    assert 0.9 <= cov_count <= 0.99


# ----------------------------------------------------------------------- limiting cases


def test_fully_scanned_unit_has_no_sampling_error():
    y = np.array([120.0, 120.0])
    s = ScannedTotals(y, np.array([5000.0, 5000.0]), np.array([400.0, 200.0]), np.array([1, 0.5]))
    est, var = expansion_estimate(s)
    assert est[0] == 120.0 and var[0] == 0.0
    assert est[1] == 240.0 and var[1] > 0  # half scanned: expanded, with a sampling variance
    # s² from first principles: 200 tiles, sum 120, sum of squares 5000
    s2 = (5000 - 120**2 / 200) / 199
    assert var[1] == pytest.approx(400**2 * 0.5 * s2 / 200)


def test_perfect_detector_with_huge_counts_gives_a_near_zero_width_interval():
    area = ScannedTotals(np.array([5000.0]), np.array([4e5]), np.array([400.0]), np.array([1.0]))
    count = ScannedTotals(np.array([80.0]), np.array([120.0]), np.array([400.0]), np.array([1.0]))
    out = unit_intervals(area, count, np.array([60]), PERFECT, draws=500)
    assert out[AREA_LO][0] == pytest.approx(5000.0, rel=1e-4)
    assert out[AREA_HI][0] == pytest.approx(5000.0, rel=1e-4)
    assert (out[COUNT_LO][0], out[COUNT_HI][0]) == (80.0, 80.0)
    # the same unit through a detector known from 30 validation tiles: a real width
    loose = unit_intervals(area, count, np.array([60]), DetectorCounts(tp=20, fp=5, fn=5))
    assert loose[AREA_HI][0] - loose[AREA_LO][0] > 0.2 * 5000


def test_seeded_intervals_are_reproducible():
    area = ScannedTotals(np.array([900.0]), np.array([9e4]), np.array([50.0]), np.array([0.95]))
    count = ScannedTotals(np.array([12.0]), np.array([14.0]), np.array([50.0]), np.array([0.95]))
    c = DetectorCounts(tp=90, fp=10, fn=15)
    a = unit_intervals(area, count, np.array([10]), c, seed=3)
    b = unit_intervals(area, count, np.array([10]), c, seed=3)
    other = unit_intervals(area, count, np.array([10]), c, seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert a[AREA_LO][0] != other[AREA_LO][0]


def test_bias_correction_moves_totals_the_right_way():
    area = ScannedTotals(np.array([1000.0]), np.array([6e4]), np.array([100.0]), np.array([1.0]))
    count = ScannedTotals(np.array([20.0]), np.array([24.0]), np.array([100.0]), np.array([1.0]))
    d = np.array([16])
    # many false positives (precision 0.5): the truth is below what was found
    over = unit_intervals(
        area, count, d, DetectorCounts(tp=500, fp=500, fn=25), bias_correction=True
    )
    assert over[AREA_CORRECTED][0] == pytest.approx(1000 * 0.5 / (500 / 525))
    assert over[AREA_CORRECTED][0] < 1000 and over[COUNT_CORRECTED][0] < 20
    assert over[AREA_HI][0] < 1000  # the interval is for the truth: found total lies above it
    # many misses (recall 0.5): the truth is above what was found
    under = unit_intervals(
        area, count, d, DetectorCounts(tp=500, fp=25, fn=500), bias_correction=True
    )
    assert under[AREA_CORRECTED][0] > 1000 and under[COUNT_CORRECTED][0] > 20
    assert under[AREA_LO][0] < under[AREA_CORRECTED][0] < under[AREA_HI][0]
    # off by default
    assert AREA_CORRECTED not in unit_intervals(area, count, d, PERFECT)


# ----------------------------------------------------------------------- config and sources


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"draws": 10}, "draws: Input should be greater than or equal to 200"),
        ({"detector": {"tp": 0, "fp": 1, "fn": 1}}, "detector.tp: Input should be greater"),
        ({"detector": {"tp": 5, "fp": -1, "fn": 1}}, "detector.fp: Input should be greater"),
        ({"detector": {"tp": 5, "fp": 1, "fn": 1}, "report_path": "x.json"}, "not both"),
        ({"report_path": "no/such/report.json"}, "is not an existing .json file"),
        ({"report_source": "overall"}, "report_source needs report_path"),
        ({"level": 0.9}, "level: Extra inputs are not permitted"),
    ],
)
def test_config_rejects_bad_values_with_a_clear_message(data, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(UncertaintyConfig, data, where="uncertainty")
    with pytest.raises(ConfigError, match="uncertainty.*" + re.escape(message)):
        validate_config(AggregateConfig, {"uncertainty": data}, where="aggregate")


def test_counts_from_evaluate_classifier_reports(tmp_path):
    summary = {
        "threshold": 0.85,
        "sources": {
            "a": {"confusion_matrix": [[207, 12], [7, 12]]},
            "b": {"confusion_matrix": [[0, 0], [1, 84]]},
        },
        "all": {"confusion_matrix": [[207, 12], [8, 96]]},
    }
    report = {"threshold": 0.85, "rows": [
        {"source": "overall", "predictor": "all-positive", "tp": 104, "fp": 219, "fn": 0},
        {"source": "overall", "predictor": "model", "tp": 96, "fp": 12, "fn": 8},
    ]}  # fmt: skip
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "report.json").write_text(json.dumps(report))
    (tmp_path / "bad.json").write_text(json.dumps({"precision": 0.9}))
    c = detector_counts_from_report(tmp_path / "summary.json")
    assert (c.tp, c.fp, c.fn, c.threshold) == (96, 12, 8, 0.85)
    c = detector_counts_from_report(tmp_path / "summary.json", "a")
    assert (c.tp, c.fp, c.fn) == (12, 12, 7)
    c = detector_counts_from_report(tmp_path / "report.json")
    assert (c.tp, c.fp, c.fn) == (96, 12, 8)  # the model's row, not the baseline's
    cfg = UncertaintyConfig(report_path=tmp_path / "summary.json", report_source="b")
    assert resolve_detector_counts(cfg, "builtin").tp == 84  # the report wins over a checkpoint
    with pytest.raises(ConfigError, match="no tp / fp / fn or confusion_matrix"):
        validate_config(UncertaintyConfig, {"report_path": str(tmp_path / "bad.json")})
    assert resolve_detector_counts(UncertaintyConfig(enabled=False), "builtin") is None


def test_builtin_model_ships_its_held_out_counts():
    c = resolve_detector_counts(UncertaintyConfig(), "builtin")
    # the model card's overall row on the valid splits: P 0.889, R 0.923 at threshold 0.85
    assert (c.tp, c.fp, c.fn, c.threshold) == (96, 12, 8, 0.85)


def test_checkpoint_metrics_are_used_only_at_its_decision_threshold(tmp_path):
    from deepsolar.core.checkpoints import save_checkpoint

    metrics = {
        "threshold": 0.5,
        "tp": 40,
        "fp": 10,
        "fn": 5,
        "confusion_matrix": [[9, 10], [5, 40]],
    }
    save_checkpoint(tmp_path / "a.pt", {"format": "deepsolar-classifier", "threshold": 0.5,
                                        "metrics": metrics})  # fmt: skip
    c = detector_counts_from_checkpoint(tmp_path / "a.pt")
    assert (c.tp, c.fp, c.fn, c.threshold) == (40, 10, 5, 0.5)
    # threshold moved after validation (as the builtin's was): its metrics do not apply
    save_checkpoint(tmp_path / "b.pt", {"format": "deepsolar-classifier", "threshold": 0.85,
                                        "metrics": metrics})  # fmt: skip
    assert detector_counts_from_checkpoint(tmp_path / "b.pt") is None
    # a model that found no positive tile in validation: no counts (the run goes on without)
    zero = {**metrics, "tp": 0, "confusion_matrix": [[9, 10], [45, 0]]}
    save_checkpoint(tmp_path / "c.pt", {"format": "deepsolar-classifier", "threshold": 0.5,
                                        "metrics": zero})  # fmt: skip
    assert detector_counts_from_checkpoint(tmp_path / "c.pt") is None


# ----------------------------------------------------------------------- in the unit layers


def _block(grid: TileGrid, x0: int, y0: int, size: int = 10) -> shapely.Polygon:
    a, b = grid.tile(x0, y0), grid.tile(x0 + size - 1, y0 + size - 1)
    w, _, _, n = a.bounds_lonlat
    _, s, e, _ = b.bounds_lonlat
    return shapely.box(w, s, e, n)


def test_unit_layers_get_intervals_where_densities_are_reported():
    """Three 10x10-tile units near Albuquerque: A scanned completely, B at 95% (five tiles
    failed), C at 30%; a system of 20 m² at the centre of every 4th scanned tile."""
    grid = TileGrid(21, 320)
    base = grid.tile_at(-106.5175, 35.1105)
    x0, y0 = base.x, base.y
    units = gpd.GeoDataFrame(
        {"GEOID": ["A", "B", "C"]},
        geometry=[_block(grid, x0 + 10 * i, y0) for i in range(3)],
        crs=4326,
    )
    scanned = [grid.tile(x0 + dx, y0 + dy) for dx in range(20) for dy in range(10)]
    scanned = [t for t in scanned if not (t.x - x0 >= 10 and t.y - y0 == 0 and t.x - x0 < 15)]
    scanned += [grid.tile(x0 + 20 + dx, y0 + dy) for dx in range(10) for dy in range(3)]
    cov = ScanCoverage()
    cov.add_tiles(scanned)
    pts = [shapely.Point(*t.center_lonlat) for t in scanned[::4]]
    systems = gpd.GeoDataFrame({"area_m2": np.full(len(pts), 20.0)}, geometry=pts, crs=4326)
    out = aggregate_systems(systems, units, scanned=cov, detector=PERFECT).set_index("GEOID")
    a, b, c = out.loc["A"], out.loc["B"], out.loc["C"]
    assert b["scanned_fraction"] == pytest.approx(0.95, abs=0.002)
    # A: complete scan, perfect detector: the interval is the found total
    assert a[AREA_LO] == pytest.approx(a["total_panel_area"], rel=1e-4)
    assert a[AREA_HI] == pytest.approx(a["total_panel_area"], rel=1e-4)
    assert a[COUNT_LO] == a[COUNT_HI] == a["solar_system_count"]
    # B: 95% scanned: an interval around the expansion estimate, wider than zero
    expanded = b["total_panel_area"] / b["scanned_fraction"]
    assert b[AREA_LO] < expanded < b[AREA_HI]
    assert b[COUNT_LO] <= b["solar_system_count"] / b["scanned_fraction"] <= b[COUNT_HI]
    assert b[AREA_HI] - b[AREA_LO] > 0.05 * expanded
    # C: below min_scanned_fraction: no density, no interval (NULL)
    assert np.isnan(c["panel_area_m2_per_mi2_scanned"]) and np.isnan(c[AREA_LO])
    assert AREA_CORRECTED not in out.columns and "detector_counts" in out.attrs
    # intervals also for C when every scanned unit reports densities; corrected totals on request
    cfg = {"min_scanned_fraction": 0.0, "uncertainty": {"bias_correction": True}}
    loose = aggregate_systems(systems, units, scanned=cov, detector=PERFECT, config=cfg)
    c = loose.set_index("GEOID").loc["C"]
    assert c[AREA_LO] < c[AREA_CORRECTED] < c[AREA_HI]
    assert c[AREA_CORRECTED] == pytest.approx(c["total_panel_area"] / c["scanned_fraction"])
    assert c[COUNT_CORRECTED] == pytest.approx(c["solar_system_count"] / c["scanned_fraction"])
    # no detector counts, or disabled: no interval columns
    assert AREA_LO not in aggregate_systems(systems, units, scanned=cov).columns
    off = {"uncertainty": {"enabled": False}}
    assert (
        AREA_LO
        not in aggregate_systems(systems, units, scanned=cov, detector=PERFECT, config=off).columns
    )


def test_synthetic_run_intervals_follow_the_density_rule(run_layers):
    from tests.maps.maps_helpers import HALF_SCANNED_TRACT

    tracts = run_layers["tracts"]
    dens = tracts["panel_area_m2_per_mi2_scanned"].notna()
    assert dens.sum() >= 12 and (tracts[AREA_LO].notna() == dens).all()
    assert (tracts[COUNT_LO].notna() == dens).all()
    half = tracts[tracts["GEOID"] == run_layers["tracts"].attrs[HALF_SCANNED_TRACT]]
    assert half[AREA_LO].isna().all()
    rep = tracts[dens]
    assert (rep[AREA_LO] <= rep[AREA_HI]).all() and (rep[COUNT_LO] <= rep[COUNT_HI]).all()
    # complete scans: precision 0.89 / recall 0.92 put the truth near the found totals
    with_pv = rep[rep["solar_system_count"] > 0]
    assert ((with_pv[AREA_LO] < with_pv["total_panel_area"]) & (
        with_pv["total_panel_area"] < with_pv[AREA_HI])).all()  # fmt: skip
