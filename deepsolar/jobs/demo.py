"""The ``demo`` job's parameters: the offline demo on built-in SYNTHETIC scenes.

:class:`DemoJob` holds every setting of ``make demo`` (all defaulted). The demo itself composes
the other flows (``flows.demo``), so it has no Prefect-free ``run`` here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from deepsolar.core.config import StrictModel
from deepsolar.geo.tiling import TileGridConfig
from deepsolar.maps.merge import MergeConfig
from deepsolar.segmentation.config import CamConfig
from deepsolar.synthetic import SyntheticSceneConfig

REPO = Path(__file__).resolve().parents[2]


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
