"""Every job by command name: its parameter model, its Prefect-free run, its flow, its summary.

Each entry also holds an example command line; the job's options are declared once, in
:mod:`deepsolar.jobs.cli_options`.

The entries name modules and functions as ``"module:attribute"`` strings, so reading the registry
imports nothing heavy; :meth:`JobSpec.model_class` and :meth:`JobSpec.run_function` import them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def load_attr(path: str) -> Any:
    """Import ``"package.module:attribute"`` and return the attribute.

    Args:
        path: the module and attribute, separated by a colon.

    Returns:
        The attribute.
    """
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class JobSpec:
    """One job of the registry.

    Attributes:
        name: the command (and Prefect flow / deployment) name.
        model: the parameter model, ``"module:Class"``.
        run: the function doing the job, ``"module:function"``; Prefect-free except for the
            demo, whose run is its flow (it composes the other flows).
        flow: the module of the Prefect flow (with its command line ``main``).
        flow_function: the flow in that module, called with the job's parameters.
        module: the job module (``PARAMETERS``, ``parameters_from_args``, ``check``,
            ``format_result``: see :mod:`deepsolar.jobs.command_line`).
        summary: one line saying what the job does.
        example: a ``deepsolar`` command line running it (shown by ``--help``).
    """

    name: str
    model: str
    run: str
    flow: str
    summary: str
    example: str
    flow_function: str
    module: str

    def model_class(self) -> type:
        """The parameter model class (imported on first use).

        Returns:
            The pydantic model.
        """
        return load_attr(self.model)

    def run_function(self) -> Callable[..., dict[str, Any]]:
        """The function doing the job (imported on first use).

        Returns:
            ``run(job) -> dict``.
        """
        return load_attr(self.run)


def _spec(
    name: str,
    module: str,
    model: str,
    summary: str,
    example: str,
    run: str | None = None,
    flow_function: str | None = None,
) -> JobSpec:
    return JobSpec(
        name=name,
        model=f"deepsolar.jobs.{module}:{model}",
        run=run or f"deepsolar.jobs.{module}:run",
        flow=f"flows.{module}",
        summary=summary,
        example=example,
        flow_function=flow_function or f"{module}_flow",
        module=f"deepsolar.jobs.{module}",
    )


JOBS: dict[str, JobSpec] = {
    s.name: s
    for s in (
        _spec(
            "demo", "demo", "DemoJob",
            "the whole pipeline offline on built-in SYNTHETIC scenes: scenes, tiles, classifier, "
            "segmenter, map, accuracy report",
            "deepsolar demo --out out/demo",
            run="flows.demo:demo_flow",
        ),
        _spec(
            "synthetic-scene", "synthetic_scene", "SyntheticSceneJob",
            "render a seeded SYNTHETIC orthophoto (GeoTIFF) with its PV ground truth "
            "(GeoPackage, mask) over real census tracts",
            "deepsolar synthetic-scene --out out/synthetic --seed 7",
        ),
        _spec(
            "download-tiles", "download_tiles", "DownloadTilesJob",
            "download the tiles of a region (state / county / tract / bbox / boundary file) from "
            "an imagery source into a tile store with a manifest; resumable",
            "deepsolar download-tiles --config configs/download-tiles.example.yaml",
        ),
        _spec(
            "train-classifier", "train_classifier", "TrainClassifierParams",
            "train the Inception-v3 tile classifier (DeepSolar's cost-sensitive recipe), then test "
            "it on the held-out sources",
            "deepsolar train-classifier --config configs/classifier-demo.yaml --out out/clf",
        ),
        _spec(
            "evaluate-classifier", "evaluate_classifier", "EvaluateClassifierParams",
            "precision / recall / F1 / ROC of a classifier checkpoint on held-out sets",
            "deepsolar evaluate-classifier --checkpoint builtin --source my-chips/",
        ),
        _spec(
            "train-segmenter", "train_segmenter", "TrainSegmenterJob",
            "train the greedy layer-wise CAM branch on a frozen classifier (image-level labels "
            "only)",
            "deepsolar train-segmenter --config configs/segmenter-real-chips.yaml",
        ),
        _spec(
            "train-mask-head", "train_mask_head", "TrainMaskHeadJob",
            "train a supervised mask head (a light decoder on the frozen classifier) on the chips' "
            "masks; an option beside DeepSolar's CAM",
            "deepsolar train-mask-head --config configs/mask-head-reference.yaml",
        ),
        _spec(
            "evaluate-segmenter", "evaluate_segmenter", "EvaluateSegmenterJob",
            "CAM mask IoU and area errors on chips with truth masks, per set and overall, beside "
            "the whole-tile and mean-panel-fraction baselines, with bootstrap intervals",
            "deepsolar evaluate-segmenter --classifier out/clf/best.pt --segmenter "
            "out/seg/segmenter.pt --source my-chips/",
        ),
        _spec(
            "calibrate-cam", "calibrate_cam", "CalibrateCamJob",
            "fit a CAM floor or threshold on labelled training chips; prints the cam: lines for "
            "a segment-tiles / map-region config",
            "deepsolar calibrate-cam --fit threshold --source my-training-chips/",
        ),
        _spec(
            "segment-tiles", "segment_tiles", "SegmentTilesJob",
            "classify + segment a tile store in cached shards: masks, areas, segmentation.parquet",
            "deepsolar segment-tiles --manifest out/demo/store --classifier out/demo/classifier/"
            "best.pt --segmenter out/demo/segmenter/segmenter.pt",
        ),
        _spec(
            "map-region", "map_region", "MapRegionJob",
            "tiles -> classify -> segment -> polygons -> systems -> tract/county/state aggregates "
            "-> styled GeoPackage, PNG maps and tables",
            "deepsolar map-region --config my-region.yaml --runner processes --workers 2",
        ),
        _spec(
            "solarforest", "solarforest", "SolarForestFlowParams",
            "SolarForest: train, evaluate (cross-validated R²) or apply the tract-level "
            "deployment-density random forest",
            "deepsolar solarforest --config configs/solarforest.yaml --mode evaluate",
            flow_function="solarforest",
        ),
    )
}  # fmt: skip
