"""SolarForest fit / predict time on the real DeepSolar Virginia subset (1,906 tracts).

Prints, for the one-stage and the two-stage model at ``--trees`` trees:
- fit time, and predict throughput (tracts/s) on every tract;
- the same for a bare ``RandomForestRegressor`` on pre-imputed arrays (the baseline: what the
  imputation pipeline, two-stage logic and DataFrame handling cost on top of scikit-learn);
- save (skops + sidecar) and checked load time, and the model file size.

The national table has ~72k tracts: fit time grows about as n log n per tree.

Usage: ``python benchmarks/bench_solarforest.py [--trees 300] [--jobs -1] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.ensemble import RandomForestRegressor
from sklearn.impute import SimpleImputer

from deepsolar import solarforest as sf
from deepsolar.core.paths import shared_data_dir
from deepsolar.solarforest.tractdb import read_tract_db


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trees", type=int, default=300)
    ap.add_argument("--jobs", type=int, default=-1)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    csv = shared_data_dir() / "tables/deepsolar_tract_va/deepsolar_tract_VA.csv"
    t0 = time.perf_counter()
    db = read_tract_db(csv)
    t_read = time.perf_counter() - t0
    cfg = sf.SolarForestConfig(n_estimators=args.trees, n_jobs=args.jobs)
    data = sf.prepare_data(db, cfg)
    n = len(data.y)
    print(f"read_tract_db: {t_read:.2f} s for {len(db.table)} tracts x {db.table.shape[1]} columns")
    print(
        f"training set: {n} tracts x {len(data.features)} features, {args.trees} trees, n_jobs={args.jobs}"
    )

    # Baseline: plain scikit-learn forest on an already imputed array, same hyper-parameters.
    Xa = SimpleImputer(strategy="median").fit_transform(data.X)
    base = RandomForestRegressor(
        n_estimators=args.trees, max_features=cfg.max_features, n_jobs=args.jobs, random_state=0
    )
    t_fit_base = best_of(lambda: base.fit(Xa, data.y), args.repeat)
    t_pred_base = best_of(lambda: base.predict(Xa), args.repeat)
    print(f"{'model':<28}{'fit s':>8}{'predict s':>11}{'tracts/s':>11}{'fit/base':>10}")
    print(
        f"{'bare RandomForestRegressor':<28}{t_fit_base:8.2f}{t_pred_base:11.3f}{n / t_pred_base:11,.0f}{1.0:10.2f}"
    )

    for two_stage in (False, True):
        c = cfg.model_copy(update={"two_stage": two_stage})
        holder: dict = {}
        t_fit = best_of(lambda c=c, h=holder: h.update(m=sf.fit_solarforest(data, c)), args.repeat)
        model = holder["m"]
        t_pred = best_of(lambda m=model: m.estimator.predict(data.X), args.repeat)
        name = "SolarForest two-stage" if two_stage else "SolarForest one-stage"
        print(f"{name:<28}{t_fit:8.2f}{t_pred:11.3f}{n / t_pred:11,.0f}{t_fit / t_fit_base:10.2f}")
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "m.skops"
            t_save = best_of(lambda m=model, p=path: sf.save_model(m, p), 1)
            t_load = best_of(lambda p=path: sf.load_model(p), 1)
            size_mb = path.stat().st_size / 1e6
        print(f"{'':<28}save {t_save:.2f} s, checked load {t_load:.2f} s, file {size_mb:.1f} MB")
        assert np.isfinite(model.estimator.predict(data.X.iloc[:10])).all()


if __name__ == "__main__":
    main()
