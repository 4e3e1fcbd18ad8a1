"""Jobs: one module per flow, each with its parameter model and a Prefect-free ``run(job)``.

``deepsolar.jobs.<name>`` holds the model (the flow's and the Prefect deployment's parameters) and
``run(job) -> dict``, which does the work with library calls only; ``flows.<name>`` wraps the
same steps as Prefect tasks. :data:`deepsolar.jobs.registry.JOBS` lists them by command name.
No job module imports torch or Prefect when imported (the CLI validates a job before either).

The models are also importable from here (``from deepsolar.jobs import MapRegionJob``), lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CalibrateCamJob": "calibrate_cam",
    "DemoJob": "demo",
    "DownloadTilesJob": "download_tiles",
    "SizedIterable": "download_tiles",
    "check_coverage": "download_tiles",
    "plan_tiles": "download_tiles",
    "run_download_tiles": "download_tiles",
    "summary_dict": "download_tiles",
    "EvaluateClassifierParams": "evaluate_classifier",
    "EvaluateSegmenterJob": "evaluate_segmenter",
    "MapRegionJob": "map_region",
    "ScaleOutConfig": "segment_tiles",
    "SegmentTilesJob": "segment_tiles",
    "SolarForestFlowParams": "solarforest",
    "SyntheticSceneJob": "synthetic_scene",
    "TrainClassifierParams": "train_classifier",
    "TrainMaskHeadJob": "train_mask_head",
    "TrainSegmenterJob": "train_segmenter",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a model (or download helper) from its job module on first use.

    Args:
        name: the attribute asked for.

    Returns:
        The attribute of its job module.

    Raises:
        AttributeError: no job module exports ``name``.
    """
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'deepsolar.jobs' has no attribute {name!r}")
    return getattr(importlib.import_module(f"deepsolar.jobs.{module}"), name)
