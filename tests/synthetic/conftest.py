"""Fixtures for the SYNTHETIC scene tests: the small scene (see synthetic_helpers.SMALL), generated
once per session, and its rasters."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from deepsolar.synthetic import SceneResult, generate_scene
from tests.synthetic.synthetic_helpers import SMALL


@pytest.fixture(scope="session")
def small(tmp_path_factory: pytest.TempPathFactory) -> SceneResult:
    return generate_scene(SMALL, tmp_path_factory.mktemp("small"))


@pytest.fixture(scope="session")
def small_arrays(small: SceneResult) -> dict[str, np.ndarray]:
    with rasterio.open(small.image_path) as src:
        img = np.moveaxis(src.read(), 0, 2)
    with rasterio.open(small.truth_mask_path) as src:
        mask = src.read(1)
    with rasterio.open(small.labels_path) as src:
        labels = src.read(1)
    return {"img": img, "mask": mask, "labels": labels}
