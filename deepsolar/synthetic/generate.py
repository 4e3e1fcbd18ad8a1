"""Generate a SYNTHETIC scene: lay it out, paint it, write it (``generate_scene``).

Layout happens first (consuming the seeded random generator in a fixed order) and records drawing
commands by stage; the stages then paint in painter's order, the camera look is applied, and the
writer turns the canvas and the truth records into files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deepsolar.core.config import validate_config
from deepsolar.core.errors import ConfigError
from deepsolar.synthetic.canvas import Label, _Canvas, _draw_ground, _post, _Sun
from deepsolar.synthetic.config import SyntheticSceneConfig
from deepsolar.synthetic.layout import _layout
from deepsolar.synthetic.scene import _Scene
from deepsolar.synthetic.writer import SceneResult, scene_georeference, write_scene


def generate_scene(
    config: SyntheticSceneConfig | dict[str, Any] | None, out_dir: str | Path
) -> SceneResult:
    """Render the SYNTHETIC scene of ``config`` into ``out_dir`` (created; files replaced atomically).

    Args:
        config: the scene config, or a dict of its fields (``None``: all defaults).
        out_dir: the output folder; created if missing.

    Returns:
        The paths, georeference and truth counts of the scene.

    Raises:
        ConfigError: the config is invalid or ``out_dir`` cannot be created.
    """
    cfg = validate_config(
        SyntheticSceneConfig, config if config is not None else {}, where="synthetic scene config"
    )
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"cannot create the output folder ({err.strerror})",
            where=str(out),
            fix="pass a writable folder path as out_dir",
        ) from None
    transform, m_per_px = scene_georeference(cfg)
    sc = _render(cfg, 1.0 / m_per_px)
    return write_scene(sc, out, transform, m_per_px)


def _render(cfg: SyntheticSceneConfig, s: float) -> _Scene:
    """Lay the scene out and paint it (``s``: pixels per ground metre); returns the scene."""
    rng = np.random.default_rng(cfg.seed)
    sun = _Sun(
        cfg.sun_azimuth_deg if cfg.sun_azimuth_deg is not None else float(rng.uniform(120, 240)),
        cfg.sun_elevation_deg if cfg.sun_elevation_deg is not None else float(rng.uniform(38, 65)),
    )
    canvas = _Canvas(cfg.height_px, cfg.width_px, s, sun, cfg.seed)
    sc = _Scene(canvas, rng, cfg, s, sun)
    _layout(sc)
    _draw_ground(canvas, np.random.default_rng([cfg.seed, 1]))
    for _, _, fn in sorted(sc.commands, key=lambda c: (c[0], c[1])):
        fn(canvas)
    # visible PV per array (trees were painted after the panels)
    for i, arr in enumerate(sc.arrays):
        arr.array_id = i + 1
        if arr.roi is not None:
            arr.visible_px = int((canvas.label[arr.roi.sl][arr.roi.m] == Label.PV).sum())
    _post(canvas, cfg.seed)
    return sc
