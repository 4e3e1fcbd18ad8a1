"""The ``deepsolar`` command line: every flow as a subcommand, help for every option, the same
options as the flow's own command line, one-line failures with non-zero exit codes."""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys

import pandas as pd
import pytest

from deepsolar.cli import COMMANDS, EXIT_FAILED, EXIT_USAGE, build_parser, main
from tests.orchestration.orch_helpers import REPO

FLOWS = {
    "demo", "download-tiles", "train-classifier", "evaluate-classifier", "train-segmenter",
    "evaluate-segmenter", "train-mask-head", "calibrate-cam", "synthetic-scene",
    "segment-tiles", "map-region", "solarforest",
}  # fmt: skip
NOT_FLOWS = {"serve"}  # `deepsolar serve`: a local server + worker, not a flow


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    ap = build_parser()
    (sub,) = [a for a in ap._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_flow_is_a_subcommand_and_every_option_is_explained() -> None:
    subs = _subparsers()
    assert set(subs) == FLOWS | NOT_FLOWS
    for name, p in subs.items():
        for action in p._actions:
            assert action.help and len(action.help) > 10, f"{name} {action.option_strings}"


@pytest.mark.parametrize(
    "cmd", [c for c in COMMANDS if c.name not in NOT_FLOWS], ids=lambda c: c.name
)
def test_cli_options_match_the_flows_own_command_line(cmd, capsys) -> None:
    flow_main = importlib.import_module(cmd.module).main
    with pytest.raises(SystemExit) as exc:
        flow_main(["--help"])
    assert exc.value.code == 0
    usage = capsys.readouterr().out.split("\n\n")[0]  # the usage block
    flow_opts = set(re.findall(r"\[?(--[a-z][a-z0-9-]*)", usage)) - {"--help"}
    assert {o.flag for o in cmd.opts} == flow_opts


def test_help_via_the_console_script() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "deepsolar.cli", "map-region", "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0
    assert "--dask-address URL" in res.stdout and "example:" in res.stdout


def test_bad_config_is_one_line_and_exit_1(tmp_path, capsys) -> None:
    assert main(["download-tiles", "--config", str(tmp_path / "missing.yaml")]) == EXIT_FAILED
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "config file not found" in err and "missing.yaml" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("job:\n  store_dir: x\nscale: {task_runner: {kind: threads, address: a}}\n")
    assert main(["map-region", "--config", str(bad)]) == EXIT_FAILED
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "address only apply to kind: dask" in err


def test_bad_command_line_is_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["map-region", "--config", "x.yaml", "--runner", "spark"])
    assert exc.value.code == EXIT_USAGE
    assert "invalid choice: 'spark'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == EXIT_USAGE


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_segment_tiles_through_the_cli(orch_classifier, store_copy, capsys) -> None:
    store = store_copy("cli")
    argv = [
        "segment-tiles", "--manifest", str(store), "--classifier", str(orch_classifier),
        "--method", "plain", "--batch-size", "2", "--num-threads", "1", "--shard-size", "8",
        "--device", "cpu",
    ]  # fmt: skip
    assert main(argv) == 0
    table = pd.read_parquet(store / "segmentation.parquet")
    assert len(table) == 24 and table["error"].notna().sum() == 1
    assert '"n_shards": 3' in capsys.readouterr().out
    # a second run: every shard from the cache
    assert main(argv) == 0
    assert '"n_shards_cached": 3' in capsys.readouterr().out
