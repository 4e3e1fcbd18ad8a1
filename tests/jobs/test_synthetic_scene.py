"""``deepsolar synthetic-scene``: the command line renders what generate_scene renders."""

from __future__ import annotations

from deepsolar.synthetic import SyntheticSceneConfig, generate_scene
from tests.fixtures.commands import run_command_line


def test_the_command_renders_the_configs_scene_byte_for_byte(tmp_path):
    argv = ["--out", str(tmp_path / "cli"), "--set", "width_px=256", "--set", "height_px=256",
            "--seed", "5"]  # fmt: skip
    printed = run_command_line("synthetic-scene", argv)
    assert printed.startswith(f"SYNTHETIC scene: {tmp_path / 'cli' / 'synthetic_scene.tif'}")
    assert "(256x256 px" in printed
    ref = generate_scene(
        SyntheticSceneConfig(seed=5, width_px=256, height_px=256), tmp_path / "ref"
    )
    cli = tmp_path / "cli" / ref.image_path.name
    assert cli.read_bytes() == ref.image_path.read_bytes()
