"""The command line of every job: options bound to model fields, defaults from the models, the
precedence config < --set < options, and one line per refusal before any flow is imported."""

from __future__ import annotations

import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from deepsolar.core.errors import ConfigError
from deepsolar.jobs.cli_options import OPTIONS, build_parser
from deepsolar.jobs.command_line import flow_parameters, job_module
from deepsolar.jobs.registry import JOBS

REPO = Path(__file__).resolve().parents[2]


def _model_of(annotation: object) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (``Model``, ``Model | None``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        model = _model_of(arg)
        if model is not None:
            return model
    return None


def _field_default(command: str, target: str) -> object:
    """Walk ``job.cam.threshold`` through the job's parameter models to the field's default."""
    name, *path = target.split(".")
    model: type[BaseModel] | None = job_module(command).PARAMETERS[name]
    if path[0] == "overrides":  # train-classifier: keys of the training config, merged later
        return None
    default: object = None
    for i, part in enumerate(path):
        assert model is not None, f"{command}: {target}: {'.'.join(path[:i])} is not a model"
        field = model.model_fields.get(part)
        assert field is not None, f"{command}: {target}: no field {part!r} in {model.__name__}"
        default = field.get_default(call_default_factory=True)
        model = _model_of(field.annotation)
    return default


def _bound(command: str):
    return [o for o in OPTIONS[command] if o.to is not None]


def test_every_bound_option_names_a_field_and_its_help_states_the_models_default():
    """An option is declared once: its target is a model field, its default the model's."""
    checked = 0
    for command in JOBS:
        targets = [o.to for o in _bound(command)]
        assert len(targets) == len(set(targets)), f"{command}: two options set one field"
        for opt in _bound(command):
            default = _field_default(command, opt.to)
            m = re.search(r"\(default ([^\s:;,)<]+)", opt.help)
            if not m:
                continue
            stated = m.group(1)
            if stated == "none":
                assert default is None, (command, opt.flag)
            elif isinstance(default, (int, float)) and not isinstance(default, bool):
                assert float(stated) == float(default), (command, opt.flag, default)
            else:
                assert stated == str(default), (command, opt.flag, default)
            checked += 1
    assert checked >= 20  # the check above is not vacuous


def test_an_option_not_given_leaves_the_models_default():
    args = build_parser("segment-tiles").parse_args(["--manifest", str(REPO)])
    params = flow_parameters("segment-tiles", args)
    job, scale = params["job"], params["scale"]
    assert job.cam.method == "greedy" and job.cam.threshold == 0.37 and job.batch_size == 16
    assert job.classifier_checkpoint == Path("builtin")
    assert job.segmenter_checkpoint == Path("builtin")  # the builtin pair
    assert scale.shard_size_tiles == 1024 and scale.task_runner.kind == "threads"
    assert scale.task_runner.max_workers == 1


def test_config_then_set_then_options(tmp_path):
    config = tmp_path / "seg.yaml"
    config.write_text(yaml.safe_dump({
        "job": {"manifest": "a.gpkg", "batch_size": 4, "cam": {"threshold": 0.2, "stage": 1}},
        "scale": {"shard_size_tiles": 64, "task_runner": {"kind": "processes",
                                                          "max_workers": 2}},
    }))  # fmt: skip
    args = build_parser("segment-tiles").parse_args([
        "--config", str(config), "--set", "job.cam.threshold=0.3", "--set", "job.batch_size=8",
        "--batch-size", "32", "--workers", "3", "--open-m", "0.5",
    ])  # fmt: skip
    params = flow_parameters("segment-tiles", args)
    job, scale = params["job"], params["scale"]
    assert job.manifest == Path("a.gpkg")  # the file
    assert job.cam.threshold == 0.3 and job.cam.stage == 1  # --set over the file
    assert job.batch_size == 32  # the option over --set
    assert job.cam.clean.open_m == 0.5
    assert scale.shard_size_tiles == 64
    assert scale.task_runner.kind == "processes" and scale.task_runner.max_workers == 3


def test_evaluate_commands_take_set(tmp_path):
    args = build_parser("evaluate-classifier").parse_args(
        ["--checkpoint", "builtin", "--set", "batch_size=8", "--set", "seed=3", "--whole-chips"]
    )
    p = flow_parameters("evaluate-classifier", args)["params"]
    assert (p.batch_size, p.seed, p.subtiles) == (8, 3, False)
    assert p.bootstrap_reps == 1000 and p.out_dir == Path("out/classifier-eval")  # defaults

    cfg = tmp_path / "eval.yaml"
    cfg.write_text(yaml.safe_dump({
        "classifier_checkpoint": "builtin",
        "sets": [{"kind": "chips", "manifest": str(tmp_path / "m.csv")}],
    }))  # fmt: skip
    args = build_parser("evaluate-segmenter").parse_args(
        ["--config", str(cfg), "--set", "overlays=0", "--cam-threshold", "0.5"]
    )
    ev = flow_parameters("evaluate-segmenter", args)["job"].evaluation
    assert ev.overlays == 0 and ev.cam_threshold == 0.5 and ev.subtiles is True


def test_a_bad_set_or_value_is_one_config_error_naming_the_field():
    args = build_parser("evaluate-classifier").parse_args(
        ["--checkpoint", "builtin", "--set", "batch_size=0"]
    )
    with pytest.raises(ConfigError, match="batch_size"):
        flow_parameters("evaluate-classifier", args)
    args = build_parser("segment-tiles").parse_args(["--manifest", str(REPO), "--set", "x"])
    with pytest.raises(ConfigError, match="bad --set"):
        flow_parameters("segment-tiles", args)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train-classifier", "--config", "missing.yaml"], "config file not found"),
        (["evaluate-classifier", "--checkpoint", "builtin", "--set", "device=7", "--set",
          "batch_size=-1"], "batch_size"),
        (["segment-tiles", "--manifest", str(REPO), "--method", "greedy", "--classifier",
          "nope/best.pt"], "classifier file not found"),
    ],
)  # fmt: skip
def test_the_flow_main_refuses_in_one_line_without_importing_the_flow(argv, message):
    """``python -m flows.<x>`` and ``deepsolar <x>`` share the path: refusal before Prefect."""
    code = (
        "import sys\n"
        "from deepsolar.jobs.command_line import run_main\n"
        f"rc = run_main({argv[0]!r}, {argv[1:]!r})\n"
        "print('prefect' in sys.modules, 'torch' in sys.modules, rc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.split() == ["False", "False", "1"], out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{argv[0]} failed:") and message in lines[0]


def test_demo_takes_a_config_and_set(tmp_path):
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(yaml.safe_dump({"grid": {"zoom": 20}, "map_method": "greedy"}))
    args = build_parser("demo").parse_args(
        ["--config", str(cfg), "--set", "train_segmenter=false", "--out", str(tmp_path / "o")]
    )
    job = flow_parameters("demo", args)["job"]
    assert (job.grid.zoom, job.map_method, job.train_segmenter) == (20, "greedy", False)
    assert job.out_dir == tmp_path / "o"
    assert flow_parameters("demo", build_parser("demo").parse_args([]))["job"].out_dir == Path(
        "out/demo"
    )


def test_input_paths_named_in_a_config_are_checked_before_the_flow(tmp_path):
    """A job's INPUT_PATHS (here a config's checkpoint) must exist: one line, no Prefect."""
    config = tmp_path / "map.yaml"
    config.write_text(yaml.safe_dump({
        "store_dir": str(tmp_path), "classifier_checkpoint": str(tmp_path / "gone" / "best.pt"),
    }))  # fmt: skip
    code = (
        "import sys\n"
        "from deepsolar.jobs.command_line import run_main\n"
        f"rc = run_main('map-region', ['--config', {str(config)!r}])\n"
        "print('prefect' in sys.modules, rc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.split() == ["False", "1"], out.stderr[-2000:]
    assert "classifier_checkpoint: file or folder not found" in out.stderr
    assert str(config) in out.stderr and len(out.stderr.strip().splitlines()) == 1
