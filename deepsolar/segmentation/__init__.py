"""Segmentation with image-level labels: DeepSolar's greedy layer-wise CAM.

- :mod:`.config` - ``TrainSegmenterConfig``, ``CamConfig``, ``BranchConfig``
- :mod:`.branch` - the CAM branch on Inception-v3's ``Mixed_5d``, taps, freezing
- :mod:`.cam` - CAM, upsampling, per-tile min-max, thresholding; plain CAM for comparison
- :mod:`.train` - greedy stage-wise training, checkpoints per stage
- :mod:`.area` - mask -> m² (tiles: per-row latitude; rasters: transform)
- :mod:`.pipeline` - classify + segment images and tile stores, overlays
- :mod:`.maskhead` - an option where masks exist: a supervised decoder on the frozen classifier
- :mod:`.evaluate` - IoU / Dice / area errors vs ground-truth masks, side by side
"""

from deepsolar.segmentation.area import mask_area_m2_tile, mask_area_m2_transform
from deepsolar.segmentation.branch import GreedyCamBranch, mixed5d_features
from deepsolar.segmentation.cam import (
    cam_to_mask,
    class_activation_map,
    greedy_cam,
    minmax_per_tile,
    plain_cam,
    threshold_mask,
    upsample,
)
from deepsolar.segmentation.config import (
    BranchConfig,
    CamConfig,
    SegDataConfig,
    SegOptimConfig,
    TrainMaskHeadConfig,
    TrainSegmenterConfig,
)
from deepsolar.segmentation.maskhead import MaskDecoder, fit_mask_head, load_mask_head
from deepsolar.segmentation.pipeline import (
    Segmenter,
    SegmentTilesJob,
    save_overlay,
    segment_tile_store,
)
from deepsolar.segmentation.train import fit_segmenter, load_segmenter

__all__ = [
    "BranchConfig",
    "CamConfig",
    "GreedyCamBranch",
    "MaskDecoder",
    "SegDataConfig",
    "SegOptimConfig",
    "SegmentTilesJob",
    "Segmenter",
    "TrainMaskHeadConfig",
    "TrainSegmenterConfig",
    "cam_to_mask",
    "class_activation_map",
    "fit_mask_head",
    "fit_segmenter",
    "greedy_cam",
    "load_mask_head",
    "load_segmenter",
    "mask_area_m2_tile",
    "mask_area_m2_transform",
    "minmax_per_tile",
    "mixed5d_features",
    "plain_cam",
    "save_overlay",
    "segment_tile_store",
    "threshold_mask",
    "upsample",
]
