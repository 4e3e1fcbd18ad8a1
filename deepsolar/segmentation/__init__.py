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

from __future__ import annotations

from deepsolar import lazy_exports

# name -> submodule; imported on first use, so that ``deepsolar.segmentation.config`` (pydantic
# models) can be imported without torch (the CLI validates a config before it imports a flow).
_EXPORTS = {
    "mask_area_m2_tile": "area",
    "mask_area_m2_transform": "area",
    "GreedyCamBranch": "branch",
    "mixed5d_features": "branch",
    "cam_to_mask": "cam",
    "class_activation_map": "cam",
    "greedy_cam": "cam",
    "minmax_per_tile": "cam",
    "plain_cam": "cam",
    "threshold_mask": "cam",
    "upsample": "cam",
    "BranchConfig": "config",
    "CamConfig": "config",
    "SegDataConfig": "config",
    "SegOptimConfig": "config",
    "TrainMaskHeadConfig": "config",
    "TrainSegmenterConfig": "config",
    "MaskDecoder": "maskhead",
    "fit_mask_head": "maskhead",
    "load_mask_head": "maskhead",
    "Segmenter": "pipeline",
    "SegmentTilesJob": "config",
    "save_overlay": "pipeline",
    "segment_tile_store": "pipeline",
    "fit_segmenter": "train",
    "load_segmenter": "train",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = sorted(_EXPORTS)
