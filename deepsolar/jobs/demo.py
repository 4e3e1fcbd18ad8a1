"""The ``demo`` job's parameters: the offline demo on built-in SYNTHETIC scenes.

:class:`DemoJob` holds every setting of ``make demo`` (all defaulted). The demo itself composes
the other flows (``flows.demo``), so it has no Prefect-free ``run`` here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field

from deepsolar.core.config import StrictModel, config_with_sets
from deepsolar.core.errors import StaleCheckpointError
from deepsolar.geo.tiling import TileGridConfig
from deepsolar.jobs.cli_options import bind_flags
from deepsolar.maps.merge import MergeConfig
from deepsolar.segmentation.config import CamConfig
from deepsolar.synthetic import SyntheticSceneConfig

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def _train_scenes_default() -> list[SyntheticSceneConfig]:
    # other seeds, 800 m and 1.6 km east of the evaluation scene (the generator's default centre)
    base = SyntheticSceneConfig()
    return [
        SyntheticSceneConfig(
            seed=k, center_lon=base.center_lon + 0.0088 * k, width_px=8000, height_px=8000
        )
        for k in (1, 2)
    ]


def _demo_cam() -> CamConfig:
    # DeepSolar's greedy CAM; threshold replaced by the calibrated one; a pixel must also vote
    # solar (logit margin > 0), so a weak tile may mark nothing
    return CamConfig(method="greedy", floor=0.0, floor_on="margin")


def _demo_merge() -> MergeConfig:
    # chosen on the demo's *training* scene (benchmarks/measure_mask_options.py, docs/maps.md):
    # rows of one ground-mounted array lie 1-4 m apart; CAM specks under 10 m² are not a system
    return MergeConfig(gap_m=4.0, tile_edge_gap_m=3.0, min_system_area_m2=10.0)


class DemoJob(StrictModel):
    """Parameters of the demo flow (all defaults are the documented offline demo)."""

    out_dir: Path = Path("out/demo")
    eval_scene: SyntheticSceneConfig = Field(default_factory=SyntheticSceneConfig)
    train_scenes: list[SyntheticSceneConfig] = Field(
        default_factory=_train_scenes_default, min_length=1
    )
    grid: TileGridConfig = Field(default_factory=TileGridConfig)
    classifier_config: Path = REPO / "configs" / "classifier-demo.yaml"
    train_segmenter: bool = Field(
        True,
        description="train the greedy CAM branch on the training tiles (DeepSolar's recipe); "
        "false: reuse the builtin branch, ~2.5 min faster (needs a classifier whose blocks up to "
        "the tap, blocks.2, stay frozen, as configs/classifier-demo.yaml)",
    )
    segmenter_epochs_per_stage: float = Field(
        3.0,
        gt=0,
        description="per greedy stage (the map uses the mask head; the greedy branch is trained "
        "for the side-by-side comparison); more epochs raise its IoU but cost ~40 s each",
    )
    map_method: Literal["mask_head", "greedy"] = Field(
        "mask_head",
        description="how the map's tiles are segmented: 'mask_head' (a decoder trained on the "
        "training scenes' masks; beyond DeepSolar) or 'greedy' (DeepSolar's greedy CAM, with the "
        "calibrated threshold); the held-out comparison table reports both",
    )
    mask_head_epochs: int = Field(8, ge=1, description="train-mask-head epochs (best on 10%)")
    cam: CamConfig = Field(default_factory=_demo_cam)
    calibrate_cam_threshold: bool = Field(
        True, description="fit cam.threshold on the training scenes' masks (area objective)"
    )
    merge: MergeConfig = Field(default_factory=_demo_merge)
    min_pv_area_m2: float = Field(
        1.0, gt=0, description="truth: a tile is positive from this PV area"
    )
    overlays: int = Field(8, ge=0, description="PNG overlays of CAM + mask for this many tiles")


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _outputs(res: dict[str, Any]) -> list[str]:
    """The files the demo wrote, one per line."""
    lines: list[str] = []
    lines.append(
        f"\nDemo finished in {res['elapsed_s']:.0f} s (SYNTHETIC scenes - not real imagery):"
    )
    lines.append(f"  scene orthophoto : {res['scene_image']}")
    lines.append(f"  ground truth     : {res['scene_truth']}")
    lines.append(f"  tiles ({res['n_tiles']:>4})     : {res['tiles_dir']}")
    lines.append(f"  tile manifest    : {res['tile_manifest']}")
    lines.append(f"  classifier       : {res['classifier_checkpoint']}")
    lines.append(f"  segmenter        : {res['segmenter_checkpoint']}  (greedy CAM branch)")
    lines.append(f"  mask head        : {res['mask_head_checkpoint']}")
    cal = res.get("cam_threshold_calibration")
    if cal:
        lines.append(
            f"  CAM threshold    : {cal['threshold']:g} (fit on the training scenes' masks)"
        )
    gpkg = Path(res["geopackage"])
    out = gpkg.parent.parent
    lines.append(f"  GeoPackage       : {gpkg}  (open in QGIS; labelled SYNTHETIC in its metadata)")
    maps = res.get("maps") or {}
    for i, (layer, png) in enumerate(maps.items()):
        lines.append(f"  {'maps (PNG)' if i == 0 else '':<17}: {png}  ({layer})")
    tables = gpkg.parent / "tables"
    if tables.is_dir():
        names = sorted({p.stem for p in tables.iterdir() if p.suffix in (".csv", ".parquet")})
        lines.append(f"  tables (csv/pq)  : {tables}  ({', '.join(names)})")
    if res.get("overlays"):
        lines.append(f"  CAM overlays     : {Path(res['overlays'][0]).parent}")
    lines.append(f"  all figures      : {out / 'demo-summary.json'}")
    return lines


def _accuracy(res: dict[str, Any]) -> list[str]:
    """Where the figures come from, then the accuracy against the truth."""
    lines: list[str] = []
    acc = res["accuracy"]
    t = acc["tiles"]
    lines.append(
        "\nWhere the figures come from: tile precision/recall compare the 'tiles' layer of the"
        " GeoPackage\nwith the ground truth above; systems and areas compare its 'systems' layer,"
        " per tract of its\n'tracts' layer, with the truth clipped to the scanned tiles; the CAM"
        f" comparison is in {res['cam_report']}."
    )
    how = {"mask_head": "the mask head", "greedy": "DeepSolar's greedy CAM"}[res["map_method"]]
    lines.append(
        "\nAccuracy on the held-out SYNTHETIC scene (DeepSolar reports P 93% / R 89-91%);"
        f" map masks by {how}:"
    )
    lines.append(
        f"  tiles   : precision {_pct(t['precision'])} {_ci(t, 'precision')}, recall"
        f" {_pct(t['recall'])} {_ci(t, 'recall')}, F1 {_pct(t['f1'])} {_ci(t, 'f1')}"
        f"  ({t['n_true_positive_tiles']} positive of {t['n_tiles']} tiles; 95% bootstrap)"
    )
    lines.append(
        f"  systems : {acc['systems_detected']} detected vs {acc['systems_true']} true"
        f" ({_pct(acc['system_count_rel_error'])})"
    )
    lines.append(
        f"  area    : {acc['area_detected_m2']:.0f} m² detected vs {acc['area_true_m2']:.0f} m² true"
        f" (total error {_pct(acc['area_total_rel_error'])})"
    )
    for row in acc["per_tract"]:
        lines.append(
            f"    tract {row['GEOID']}: {row['detected_area_m2']:.0f} vs {row['true_area_m2']:.0f} m²"
            f" ({_pct(row['area_rel_error'])})"
        )
    lines.append(
        f"\nMasks on the {_n_pos(res)} truth-positive tiles (mask whatever the classifier says;"
        f" CAM threshold {res['cam']['threshold']:g}, floor {res['cam']['floor']}; mask head"
        f" threshold {res['cam']['mask_threshold']:g});"
    )
    lines.append(
        "DeepSolar: per-image area error 27.3% / 18.8%, regional 3.0% / 2.1%; full report:"
        f" {res['cam_report']}"
    )
    for r in res["cam_table"]:
        iou = "n/a" if r["mean_iou"] is None else f"{_pct(r['mean_iou'])}"
        ci = (
            ""
            if r["mean_iou"] is None
            else f" [{_pct(r['mean_iou_lo'])}, {_pct(r['mean_iou_hi'])}]"
        )
        lines.append(
            f"  {r['predictor']:>13}: IoU {iou}{ci}, median area error"
            f" {_pct(r['median_area_error'])}, regional {_pct(r['regional_area_error_pos'])}"
        )
    lines.append(f"\nWall time: {res['elapsed_s']:.0f} s (see README for what is bit-identical).")
    return lines


def _ci(scores: dict[str, Any], name: str) -> str:
    lo, hi = scores.get(f"{name}_lo"), scores.get(f"{name}_hi")
    return "" if lo is None or hi is None else f"[{_pct(lo)}, {_pct(hi)}]"


def _n_pos(res: dict[str, Any]) -> int:
    return res["cam_table"][0]["n_positive"] if res["cam_table"] else 0


def fresh_if_stale(
    step: Callable[[], T],
    folder: Path,
    warn: Callable[[str], Any],
    stale: Callable[[], str | None] = lambda: None,
) -> T:
    """Run a demo training step; if its folder holds another config's checkpoints, start afresh.

    The demo resumes from its own folder. Checkpoints written by an older version or another
    demo config cannot be resumed: when ``stale`` says so before the step, or the step raises
    :class:`StaleCheckpointError` (e.g. another classifier backbone), the folder is moved aside
    (``<folder>.stale-<UTC time>``, nothing is deleted) and the step runs from scratch.

    Args:
        step: the training step (it trains into ``folder``).
        folder: the step's output folder.
        warn: says what was moved where (e.g. the flow logger's ``warning``).
        stale: why the folder's checkpoints cannot be resumed, checked before the step (quiet:
            no failed run in the log); None when they can.

    Returns:
        What ``step`` returns.
    """
    reason = stale()
    if reason is not None:
        _move_aside(folder, reason, warn)
        return step()
    try:
        return step()
    except StaleCheckpointError as err:
        _move_aside(folder, err.what, warn)
        return step()


def _move_aside(folder: Path, reason: str, warn: Callable[[str], Any]) -> None:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = folder.with_name(f"{folder.name}.stale-{stamp}")
    folder.rename(aside)
    warn(f"{folder} holds checkpoints of another config or model ({reason}); moved to {aside}, "
         "training afresh")  # fmt: skip


#: The flow's parameters (:mod:`deepsolar.jobs.command_line`).
PARAMETERS = {"job": DemoJob}


def parameters_from_args(args: Any) -> dict[str, Any]:
    """The flow's parameters from ``demo [--config FILE] [--set k=v ...] [--out DIR] [...]``.

    Args:
        args: the parsed command line.

    Returns:
        ``{"job": mapping}`` (the model's defaults for what is not given).
    """
    parameters = {"job": config_with_sets(args.config, args.set)}
    bind_flags(parameters, args, "demo")
    return parameters


def format_result(res: dict[str, Any], params: dict[str, Any]) -> str:
    """What ``demo`` prints: every file written, then the accuracy against the truth.

    Args:
        res: the flow's result (``demo-summary.json``).
        params: the parameters it ran with.

    Returns:
        The report.
    """
    return "\n".join([*_outputs(res), *_accuracy(res)])
