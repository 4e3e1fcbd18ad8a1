"""SYNTHETIC scene config: one clear error for a bad config or output folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepsolar.core.errors import ConfigError
from deepsolar.synthetic import (
    generate_scene,
)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"crs": "EPSG:4326"}, "crs"),
        ({"crs": "EPSG:999999"}, "crs"),
        ({"width_px": 10}, "width_px"),
        ({"colour": "red"}, "colour"),
        ({"residential_pv_share": 1.5}, "residential_pv_share"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path: Path, bad: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        generate_scene(bad, tmp_path)
    assert not any(tmp_path.iterdir())


def test_out_dir_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="output folder"):
        generate_scene({"width_px": 256, "height_px": 256}, f)
