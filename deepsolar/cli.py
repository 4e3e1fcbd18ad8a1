"""``deepsolar``: every flow from the command line, for people without a Prefect server.

Each subcommand runs the same flow as the deployment of that name (Prefect starts a temporary
local API for the run), validating its YAML config first::

    deepsolar demo                                   # the whole pipeline offline (SYNTHETIC scenes)
    deepsolar download-tiles --config configs/download-tiles.example.yaml
    deepsolar train-classifier --config configs/classifier-demo.yaml --out out/classifier
    deepsolar map-region --config my-region.yaml --runner dask --workers 4

Exit codes: 0 success; 1 the job was refused or failed (one line on stderr says why and what to
do); 2 bad command line; 3 an unexpected error (one line; ``--debug`` shows the traceback);
130 interrupted by Ctrl-C (SIGINT), 143 by SIGTERM: one signal stops the run within seconds,
keeps what finished (a re-run resumes) and ends every process the command started.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from deepsolar.core.errors import ConfigError, DeepSolarError
from deepsolar.core.runtime import StopOnSignals, stop_exit_code, stop_requested
from deepsolar.preflight import SET_HELP, check_command

EXIT_FAILED, EXIT_USAGE, EXIT_UNEXPECTED, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 3, 130, 143


@dataclass
class Opt:
    """One option of a subcommand, passed on verbatim to the flow's own ``main``."""

    flag: str
    help: str
    kw: dict[str, Any] = field(default_factory=dict)


@dataclass
class Command:
    name: str
    module: str
    summary: str
    opts: list[Opt]
    example: str


MASK_OPTS = [  # issue 11: masks that measure area (docs/segmentation.md); off = DeepSolar
    Opt(
        "--cam-floor",
        "absolute floor on the raw CAM map: a tile may mark nothing (default "
        "none; 0 on the margin map = the pixel votes solar)",
        {"metavar": "F"},
    ),
    Opt(
        "--cam-floor-on",
        "map the floor applies to: margin (default) or positive (raw CAM)",
        {"choices": ["margin", "positive"]},
    ),
    Opt(
        "--cam-floor-scope",
        "pixel (default): pixels above the floor; tile: the tile's whole mask or nothing",
        {"choices": ["pixel", "tile"]},
    ),
    Opt("--open-m", "mask opening disc diameter in metres (default 0: off)", {"metavar": "M"}),
    Opt("--close-m", "mask closing disc diameter in metres (default 0: off)", {"metavar": "M"}),
    Opt(
        "--fill-holes-m2",
        "fill mask holes up to this area in m² (default 0: off)",
        {"metavar": "A"},
    ),
]

RUNNER_OPTS = [
    Opt("--shard-size", "tiles per shard task, cut in bands of tile rows (default 1024)",
        {"metavar": "N"}),
    Opt("--runner", "where the shards run: threads or processes on this machine, or a Dask "
        "cluster (needs prefect-dask; default: one thread)",
        {"choices": ["threads", "processes", "dask"]}),
    Opt("--workers", "threads / processes / Dask workers started for the run", {"metavar": "N"}),
    Opt("--dask-address", "an existing Dask scheduler to run the shards on, e.g. "
        "tcp://10.0.0.5:8786 (implies --runner dask)", {"metavar": "URL"}),
    Opt("--results-dir", "where finished shards' results are kept, so a re-run skips them "
        "(default <store>/.prefect-results; shared storage for a multi-machine cluster)",
        {"metavar": "DIR"}),
]  # fmt: skip

COMMANDS = [
    Command(
        "demo", "flows.demo",
        "the whole pipeline offline on built-in SYNTHETIC scenes: scenes, tiles, classifier, "
        "segmenter, map, accuracy report",
        [
            Opt("--out", "output folder (default out/demo)", {"metavar": "DIR"}),
            Opt(
                "--map-method",
                "segment the map's tiles with the mask head (default) or DeepSolar's greedy CAM",
                {"choices": ["mask_head", "greedy"]},
            ),
        ],
        "deepsolar demo --out out/demo",
    ),
    Command(
        "download-tiles", "flows.download_tiles",
        "download the tiles of a region (state / county / tract / bbox / boundary file) from an "
        "imagery source into a tile store with a manifest; resumable",
        [Opt("--config", "YAML with a DownloadTilesJob (region, source, grid, out_dir)",
             {"required": True, "metavar": "YAML"}),
         Opt("--set", SET_HELP, {"action": "append", "metavar": "KEY=VALUE"})],
        "deepsolar download-tiles --config configs/download-tiles.example.yaml",
    ),
    Command(
        "train-classifier", "flows.train_classifier",
        "train the Inception-v3 tile classifier (DeepSolar's cost-sensitive recipe), then test it "
        "on the held-out sources",
        [
            Opt("--config", "classifier YAML (see configs/classifier-*.yaml)",
                {"required": True, "metavar": "YAML"}),
            Opt("--out", "output folder for checkpoints and metrics (default out/classifier)",
                {"metavar": "DIR"}),
            Opt("--resume", "continue training from this last.pt", {"metavar": "CKPT"}),
            Opt("--epochs", "override train.epochs (may be fractional)", {"metavar": "N"}),
            Opt("--set", SET_HELP, {"action": "append", "metavar": "KEY=VALUE"}),
            Opt("--override", "deprecated, use --set: JSON merged over the config, e.g. "
                "'{\"optim\": {\"lr\": 0.0005}}'", {"metavar": "JSON"}),
            Opt("--no-test", "skip the held-out evaluation", {"action": "store_true"}),
        ],
        "deepsolar train-classifier --config configs/classifier-demo.yaml --out out/clf",
    ),
    Command(
        "evaluate-classifier", "flows.evaluate_classifier",
        "precision / recall / F1 / ROC of a classifier checkpoint on held-out sets",
        [
            Opt("--checkpoint", "the classifier checkpoint (best.pt)",
                {"required": True, "metavar": "CKPT"}),
            Opt("--source", "labelled chips: a folder with images/ (+ masks/, same names; "
                "positive = any mask pixel), a folder with pos/ + neg/, or a manifest.csv; "
                "repeatable; no config needed", {"action": "append", "metavar": "PATH"}),
            Opt("--split", "with a manifest source: keep the rows of this split (e.g. valid)",
                {"metavar": "NAME"}),
            Opt("--config", "YAML whose data.test lists the sets (default: the checkpoint's own "
                "test sets)", {"metavar": "YAML"}),
            Opt("--out", "output folder (default out/classifier-eval)", {"metavar": "DIR"}),
            Opt("--threshold", "decision threshold on p(positive) (default: the checkpoint's)",
                {"metavar": "P"}),
            Opt("--device", "auto, cpu, cuda, cuda:1 or mps (default auto)", {"metavar": "DEV"}),
            Opt("--bootstrap-reps", "bootstrap resamples for the 95%% intervals (default 1000)",
                {"metavar": "N"}),
            Opt("--ground-m-per-px", "metres per pixel of chips whose metadata does not say "
                "(chips wider than a tile are cut into tile-sized sub-tiles)", {"metavar": "M"}),
            Opt("--whole-chips", "resize whole chips into the network (DeepSolar's way) instead "
                "of cutting them into tile-sized sub-tiles", {"action": "store_true"}),
        ],
        "deepsolar evaluate-classifier --checkpoint builtin --source my-chips/",
    ),
    Command(
        "train-segmenter", "flows.train_segmenter",
        "train the greedy layer-wise CAM branch on a frozen classifier (image-level labels only)",
        [
            Opt("--config", "segmenter YAML (see configs/segmenter-*.yaml)",
                {"required": True, "metavar": "YAML"}),
            Opt("--set", SET_HELP, {"action": "append", "metavar": "KEY=VALUE"}),
            Opt("--out", "output folder (default out/segmenter)", {"metavar": "DIR"}),
        ],
        "deepsolar train-segmenter --config configs/segmenter-real-chips.yaml",
    ),
    Command(
        "train-mask-head", "flows.train_mask_head",
        "train a supervised mask head (a light decoder on the frozen classifier) on the chips' "
        "masks; an option beside DeepSolar's CAM",
        [
            Opt("--config", "mask-head YAML (see configs/mask-head-reference.yaml)",
                {"required": True, "metavar": "YAML"}),
            Opt("--set", SET_HELP, {"action": "append", "metavar": "KEY=VALUE"}),
            Opt("--out", "output folder (default out/mask-head)", {"metavar": "DIR"}),
        ],
        "deepsolar train-mask-head --config configs/mask-head-reference.yaml",
    ),
    Command(
        "evaluate-segmenter", "flows.evaluate_segmenter",
        "CAM mask IoU and area errors on chips with truth masks, per set and overall, beside the "
        "whole-tile and mean-panel-fraction baselines, with bootstrap intervals",
        [
            Opt("--classifier", "the classifier checkpoint (best.pt)", {"metavar": "CKPT"}),
            Opt("--segmenter", "the segmenter checkpoint (segmenter.pt); without it, plain CAM "
                "only", {"metavar": "CKPT"}),
            Opt("--mask-head", "a train-mask-head checkpoint: its masks are reported beside the "
                "CAM methods", {"metavar": "CKPT"}),
            Opt("--mask-threshold", "mask head probability threshold (default 0.5)",
                {"metavar": "P"}),
            Opt("--source", "chips with masks: a folder with images/ + masks/ (same file names) "
                "or a manifest.csv with a mask column; repeatable; no config needed",
                {"action": "append", "metavar": "PATH"}),
            Opt("--split", "with a manifest source: keep the rows of this split (e.g. valid)",
                {"metavar": "NAME"}),
            Opt("--ground-m-per-px", "metres per pixel of the --source chips (chips wider than "
                "a tile are cut into tile-sized sub-tiles)", {"metavar": "M"}),
            Opt("--whole-chips", "resize whole chips instead of cutting them into sub-tiles",
                {"action": "store_true"}),
            Opt("--config", "YAML with an EvaluateSegmentationConfig (see "
                "configs/segmenter-eval-real-chips.yaml); the options above override it",
                {"metavar": "YAML"}),
            Opt("--out", "output folder (default out/segmenter-eval)", {"metavar": "DIR"}),
            Opt("--cam-threshold", "threshold on the min-max normalised CAM (default 0.37)",
                {"metavar": "T"}),
            Opt("--device", "auto, cpu, cuda, cuda:1 or mps (default auto)", {"metavar": "DEV"}),
            Opt("--bootstrap-reps", "bootstrap resamples for the 95%% intervals (default 1000)",
                {"metavar": "N"}),
            Opt("--overlays", "comparison PNGs per set (default 6)", {"metavar": "N"}),
            *MASK_OPTS,
        ],
        "deepsolar evaluate-segmenter --classifier out/clf/best.pt --segmenter "
        "out/seg/segmenter.pt --source my-chips/",
    ),
    Command(
        "segment-tiles", "flows.segment_tiles",
        "classify + segment a tile store in cached shards: masks, areas, segmentation.parquet",
        [
            Opt("--config", "YAML with a SegmentTilesJob, or {job: ..., scale: ...} (or use the "
                "flags below)", {"metavar": "YAML"}),
            Opt("--set", SET_HELP, {"action": "append", "metavar": "KEY=VALUE"}),
            Opt("--manifest", "the tile store's manifest.gpkg or folder", {"metavar": "PATH"}),
            Opt("--classifier", "classifier checkpoint (best.pt)", {"metavar": "CKPT"}),
            Opt("--segmenter", "segmenter checkpoint (segmenter.pt), for --method greedy; a "
                "train-mask-head checkpoint for --method mask_head", {"metavar": "CKPT"}),
            Opt("--method", "greedy (DeepSolar's CAM), plain (classifier's last layer) or "
                "mask_head (supervised decoder)", {"choices": ["greedy", "plain", "mask_head"]}),
            Opt("--mask-threshold", "mask_head probability threshold (default 0.5)",
                {"metavar": "P"}),
            Opt("--stage", "greedy stage to use (default: the last trained)", {"metavar": "K"}),
            Opt("--cam-threshold", "threshold on the min-max normalised CAM (default 0.37)",
                {"metavar": "T"}),
            Opt("--batch-size", "tiles per forward pass (default 16)", {"metavar": "N"}),
            Opt("--device", "auto, cpu, cuda, cuda:1 or mps (default auto)", {"metavar": "DEV"}),
            Opt("--num-threads", "torch CPU threads per shard worker", {"metavar": "N"}),
            Opt("--overlays", "PNG overlays of CAM + mask for N positive tiles (default 0)",
                {"metavar": "N"}),
            *MASK_OPTS,
            *RUNNER_OPTS,
        ],
        "deepsolar segment-tiles --manifest out/demo/store --classifier out/demo/classifier/"
        "best.pt --segmenter out/demo/segmenter/segmenter.pt",
    ),
    Command(
        "map-region", "flows.map_region",
        "tiles -> classify -> segment -> polygons -> systems -> tract/county/state aggregates -> "
        "styled GeoPackage, PNG maps and tables",
        [
            Opt("--config", "YAML with a MapRegionJob, or {job: <MapRegionJob>, scale: "
                "<ScaleOutConfig>} (the deployment's parameters)",
                {"required": True, "metavar": "YAML"}),
            Opt("--set", SET_HELP, {"action": "append", "metavar": "KEY=VALUE"}),
            *RUNNER_OPTS,
        ],
        "deepsolar map-region --config my-region.yaml --runner processes --workers 2",
    ),
    Command(
        "solarforest", "flows.solarforest",
        "SolarForest: train, evaluate (cross-validated R²) or apply the tract-level "
        "deployment-density random forest",
        [
            Opt("--config", "YAML with SolarForestFlowParams (see configs/solarforest.yaml)",
                {"required": True, "metavar": "YAML"}),
            Opt("--mode", "overrides the config's mode", {"choices": ["train", "evaluate",
                                                                      "predict"]}),
            Opt("--output-dir", "overrides output_dir", {"metavar": "DIR"}),
            Opt("--set", "override one parameter, dotted for nesting, value in YAML (e.g. "
                "model.two_stage=true); repeatable", {"action": "append", "metavar": "KEY=VALUE"}),
            Opt("--quick", "the same table with 30 trees, 200 bootstrap resamples and no "
                "permutation importances (about a minute)", {"action": "store_true"}),
        ],
        "deepsolar solarforest --config configs/solarforest.yaml --mode evaluate",
    ),
    Command(
        "serve", "deepsolar.serve",
        "a local Prefect server (UI), the deepsolar work pool, every deployment of prefect.yaml "
        "and a worker, in one terminal (make serve); one Ctrl-C stops them all",
        [
            Opt("--port", "the server's port (default 4200)", {"metavar": "PORT"}),
            Opt("--host", "the server's address (default 127.0.0.1)", {"metavar": "HOST"}),
        ],
        "deepsolar serve --port 4200",
    ),
]  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="deepsolar",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--debug", action="store_true", help="show the full traceback of an unexpected error"
    )
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS:
        p = sub.add_parser(
            cmd.name,
            help=cmd.summary,
            description=textwrap.fill(f"{cmd.summary[0].upper()}{cmd.summary[1:]}.", 88),
            epilog=f"example:\n  {cmd.example}\n\nThe same flow runs as the Prefect deployment "
            f"'{cmd.name}/...': see docs/orchestration.md.",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        for opt in cmd.opts:
            p.add_argument(opt.flag, help=opt.help, **opt.kw)
        p.set_defaults(_command=cmd)
    return ap


def flow_argv(cmd: Command, args: argparse.Namespace) -> list[str]:
    """The parsed options back as the flow's own command line (its main parses and validates)."""
    argv: list[str] = []
    for opt in cmd.opts:
        value = getattr(args, opt.flag.lstrip("-").replace("-", "_"))
        if value is None or value is False:
            continue
        if value is True:
            argv.append(opt.flag)
        elif isinstance(value, list):
            for v in value:
                argv += [opt.flag, str(v)]
        else:
            argv += [opt.flag, str(value)]
    return argv


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if isinstance(err, DeepSolarError) else f"{type(err).__name__}: {text}"


# Options naming an input that must exist: checked before the flow module (Prefect, torch) is
# imported and before any Prefect server starts, so a typo answers in well under a second.
INPUT_FLAGS = ("--config", "--checkpoint", "--classifier", "--segmenter", "--resume", "--manifest",
               "--mask-head", "--source")  # fmt: skip


def _looks_like_path(value: str) -> bool:
    """A file path, not a keyword a flow understands (e.g. ``--checkpoint builtin``)."""
    return os.sep in value or "/" in value or bool(os.path.splitext(value)[1])


def check_inputs(cmd: Command, args: argparse.Namespace) -> None:
    for opt in cmd.opts:
        if opt.flag not in INPUT_FLAGS:
            continue
        value = getattr(args, opt.flag.lstrip("-").replace("-", "_"), None)
        for v in value if isinstance(value, list) else [value]:  # --source is repeatable
            if isinstance(v, str) and _looks_like_path(v) and not os.path.exists(v):
                raise ConfigError(
                    f"{opt.flag.lstrip('-')} file not found ({opt.flag} {v[:200]!r})",
                    where=os.getcwd(),
                    fix=f"check the path given to {opt.flag} (relative paths start in this folder)",
                )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cmd: Command = args._command
    # One Ctrl-C / SIGTERM stops the run within seconds; no child process outlives it.
    with StopOnSignals():
        return run_command(cmd, args)


def _interrupted(cmd: Command) -> int:
    code = stop_exit_code() or EXIT_INTERRUPTED
    how = {EXIT_INTERRUPTED: "Ctrl-C (SIGINT)", EXIT_TERMINATED: "SIGTERM"}.get(code, "a signal")
    print(
        f"deepsolar {cmd.name}: interrupted by {how}; what finished is kept (a re-run resumes)",
        file=sys.stderr,
        flush=True,
    )
    return code


def run_command(cmd: Command, args: argparse.Namespace) -> int:
    try:
        check_inputs(cmd, args)
        check_command(cmd.name, args)  # configs validated, before Prefect (and torch) import
        flow_main = importlib.import_module(cmd.module).main
        rc = int(flow_main(flow_argv(cmd, args)) or 0)
        return _interrupted(cmd) if stop_requested() else rc
    except KeyboardInterrupt:
        return _interrupted(cmd)
    except DeepSolarError as err:
        if stop_requested():  # an error caused by the stop itself
            return _interrupted(cmd)
        print(f"deepsolar {cmd.name} failed: {_one_line(err)}", file=sys.stderr)
        return EXIT_FAILED
    except SystemExit as exc:  # the flow's own parser refused a value (already printed)
        if stop_requested():
            return _interrupted(cmd)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except Exception as err:  # noqa: BLE001 - the CLI's last line of defence: one line, no trace
        if stop_requested():
            return _interrupted(cmd)
        if args.debug or os.environ.get("DEEPSOLAR_DEBUG"):
            raise
        print(
            f"deepsolar {cmd.name} failed unexpectedly: {_one_line(err)} "
            "(re-run with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
