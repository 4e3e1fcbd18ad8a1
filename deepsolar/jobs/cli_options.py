"""Every job's command-line options, declared once: the ``deepsolar`` CLI and each flow's ``main``.

``OPTIONS[command]`` lists a command's options. An option bound to a flow parameter
(``Opt.to``, e.g. ``job.cam.threshold``) has no default of its own: when it is not given, the
config file's value, else the model's default, applies (a test checks that every "(default X)"
in a help text is the model's). :func:`build_parser` turns the options into the command's
parser (``python -m flows.<flow>`` and, via :mod:`deepsolar.jobs.command_line`, ``deepsolar
<command>``); :func:`add_options` with ``raw=True`` adds them to the CLI's subparsers for
``--help`` and usage errors; :func:`bind_flags` sets the given bound options in the flow's
parameters. This module imports nothing heavy.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SET_HELP = (
    "override one parameter of --config, dotted for nesting, value in YAML (e.g. "
    "grid.zoom=20); repeatable"
)


@dataclass(frozen=True)
class Opt:
    """One command-line option.

    Attributes:
        flag: the option, e.g. ``--config``.
        help: one line saying what it does (shown by ``--help``).
        kw: further ``add_argument`` keywords kept as written by the CLI too (``metavar``,
            ``choices``, ``action``, ``required``).
        type: converts the value (the flow's parser only).
        default: the value when the option is not given (the flow's parser only).
        aliases: other spellings of the flag (old names kept working).
        to: the flow parameter the value sets, dotted (``job.cam.threshold``: the flow's
            ``job`` parameter, field ``cam.threshold``); the model's default applies when the
            option is not given. None: the job module reads the option itself.
    """

    flag: str
    help: str
    kw: dict[str, Any] = field(default_factory=dict)
    type: Callable[[str], Any] | None = None
    default: Any = None
    aliases: tuple[str, ...] = ()
    to: str | None = None

    @property
    def dest(self) -> str:
        """The attribute of the parsed namespace (``--dask-address`` -> ``dask_address``)."""
        return self.kw.get("dest") or self.flag.lstrip("-").replace("-", "_")


def _config(help: str, *, required: bool = True, to: str | None = None) -> Opt:
    kw: dict[str, Any] = {"metavar": "YAML"}
    if required:
        kw["required"] = True
    return Opt("--config", help, kw, type=Path, to=to)


def _out(help: str, parameter: str) -> Opt:
    return Opt("--out", help, {"metavar": "DIR"}, type=Path, to=f"{parameter}.out_dir")


def _set(example: str, what: str = "parameter") -> Opt:
    """``--set`` for a command whose keys are not (only) those of its ``--config`` file."""
    return Opt("--set", f"override one {what}, dotted for nesting, value in YAML (e.g. "
               f"{example}); repeatable", {"action": "append", "metavar": "KEY=VALUE"},
               default=[])  # fmt: skip


def chip_sources(args: argparse.Namespace, ground_m_per_px: float | None = None) -> list[Any]:
    """The ``--source`` paths as chip sources (``--split`` keeps one split of a manifest).

    Args:
        args: the parsed command line (``source``, ``split``).
        ground_m_per_px: metres per pixel set on every source (None: as read).

    Returns:
        One ``ChipSource`` per ``--source`` (imports torch: call only when there are some).
    """
    from deepsolar.classifier.data import source_from_path

    extra = {"ground_m_per_px": ground_m_per_px} if ground_m_per_px else {}
    return [source_from_path(s, split=args.split).model_copy(update=extra) for s in args.source]


SET = Opt("--set", SET_HELP, {"action": "append", "metavar": "KEY=VALUE"}, default=[])
DEVICE = "auto, cpu, cuda, cuda:1 or mps (default auto)"
BOOTSTRAP = "bootstrap resamples for the 95%% intervals (default 1000)"
SPLIT = Opt("--split", "with a manifest source: keep the rows of this split (e.g. valid)",
            {"metavar": "NAME"})  # fmt: skip
WHOLE = {"action": "store_const", "const": False}  # given: subtiles = False; absent: None


def _mask_opts(floor: str, clean: str) -> list[Opt]:
    """The mask options (issue 11; docs/segmentation.md); ``floor``/``clean``: their targets."""
    return [
        Opt(
            "--cam-floor",
            "absolute floor on the raw CAM map: a tile may mark nothing (default "
            "none; 0 on the margin map = the pixel votes solar)",
            {"metavar": "F"},
            type=float,
            to=floor,
        ),
        Opt(
            "--cam-floor-on",
            "map the floor applies to: margin (default) or positive (raw CAM)",
            {"choices": ["margin", "positive"]},
            to=f"{floor}_on",
        ),
        Opt(
            "--cam-floor-scope",
            "pixel (default): pixels above the floor; tile: the tile's whole mask or nothing",
            {"choices": ["pixel", "tile"]},
            to=f"{floor}_scope",
        ),
        Opt("--open-m", "mask opening disc diameter in metres (default 0: off)", {"metavar": "M"},
            type=float, to=f"{clean}.open_m"),
        Opt("--close-m", "mask closing disc diameter in metres (default 0: off)", {"metavar": "M"},
            type=float, to=f"{clean}.close_m"),
        Opt("--fill-holes-m2", "fill mask holes up to this area in m² (default 0: off)",
            {"metavar": "A"}, type=float, to=f"{clean}.fill_holes_m2"),
    ]  # fmt: skip


RUNNER_OPTS = [
    Opt("--shard-size", "tiles per shard task, cut in bands of tile rows (default 1024)",
        {"metavar": "N"}, type=int, to="scale.shard_size_tiles"),
    Opt("--runner", "where the shards run: threads or processes on this machine, or a Dask "
        "cluster (needs prefect-dask; default: one thread)",
        {"choices": ["threads", "processes", "dask"]}),
    Opt("--workers", "threads / processes / Dask workers started for the run", {"metavar": "N"},
        type=int),
    Opt("--dask-address", "an existing Dask scheduler to run the shards on, e.g. "
        "tcp://10.0.0.5:8786 (implies --runner dask)", {"metavar": "URL"}),
    Opt("--results-dir", "where finished shards' results are kept, so a re-run skips them "
        "(default <store>/.prefect-results; shared storage for a multi-machine cluster)",
        {"metavar": "DIR"}, type=Path, to="scale.results_dir"),
]  # fmt: skip

#: ``deepsolar serve`` (not a job): the local Prefect server's address.
SERVE_OPTIONS = [
    Opt("--port", "the server's port (default 4200)", {"metavar": "PORT"}, type=int, default=4200),
    Opt("--host", "the server's address (default 127.0.0.1)", {"metavar": "HOST"},
        default="127.0.0.1"),
]  # fmt: skip

OPTIONS: dict[str, list[Opt]] = {
    "demo": [
        _config("YAML with DemoJob fields (scenes, grid, epochs, ...; default: the built-in "
                "demo)", required=False),
        _set("train_segmenter=false", "demo parameter"),
        _out("output folder (default out/demo)", "job"),
        Opt("--map-method",
            "segment the map's tiles with the mask head (default) or DeepSolar's greedy CAM",
            {"choices": ["mask_head", "greedy"]}, to="job.map_method"),
    ],
    "synthetic-scene": [
        _config("YAML with SyntheticSceneConfig fields (docs/synthetic-scene.md; default: the "
                "demo's evaluation scene)", required=False),
        _set("width_px=2048", "scene parameter"),
        Opt("--seed", "the scene's random seed (default 0): same config, same bytes",
            {"metavar": "N"}, type=int, to="job.scene.seed"),
        _out("output folder (default out/synthetic)", "job"),
    ],
    "download-tiles": [
        _config("YAML with a DownloadTilesJob (region, source, grid, out_dir)"),
        SET,
    ],
    "train-classifier": [
        _config("classifier YAML (see configs/classifier-*.yaml)", to="params.config_path"),
        _out("output folder for checkpoints and metrics (default out/classifier)", "params"),
        Opt("--resume", "continue training from this last.pt", {"metavar": "CKPT"}, type=Path,
            to="params.resume"),
        Opt("--epochs", "override train.epochs (may be fractional)", {"metavar": "N"},
            type=float, to="params.overrides.train.epochs"),
        SET,
        Opt("--override", "deprecated, use --set: JSON merged over the config, e.g. "
            "'{\"optim\": {\"lr\": 0.0005}}'", {"metavar": "JSON"}),
        Opt("--no-test", "skip the held-out evaluation", {"action": "store_const",
            "const": False}, to="params.evaluate_test"),
    ],
    "evaluate-classifier": [
        Opt("--checkpoint", "the classifier checkpoint (best.pt)",
            {"required": True, "metavar": "CKPT"}, type=Path, to="params.checkpoint"),
        Opt("--source", "labelled chips: a folder with images/ (+ masks/, same names; "
            "positive = any mask pixel), a folder with pos/ + neg/, or a manifest.csv; "
            "repeatable; no config needed", {"action": "append", "metavar": "PATH"}),
        SPLIT,
        _config("YAML whose data.test lists the sets (default: the checkpoint's own test sets)",
                required=False, to="params.config_path"),
        _set("batch_size=32"),
        _out("output folder (default out/classifier-eval)", "params"),
        Opt("--threshold", "decision threshold on p(positive) (default: the checkpoint's)",
            {"metavar": "P"}, type=float, to="params.threshold"),
        Opt("--device", DEVICE, {"metavar": "DEV"}, to="params.device"),
        Opt("--bootstrap-reps", BOOTSTRAP, {"metavar": "N"}, type=int,
            to="params.bootstrap_reps"),
        Opt("--ground-m-per-px", "metres per pixel of chips whose metadata does not say "
            "(chips wider than a tile are cut into tile-sized sub-tiles)", {"metavar": "M"},
            type=float, to="params.ground_m_per_px"),
        Opt("--whole-chips", "resize whole chips into the network (DeepSolar's way) instead "
            "of cutting them into tile-sized sub-tiles", WHOLE, to="params.subtiles"),
    ],
    "train-segmenter": [
        _config("segmenter YAML (see configs/segmenter-*.yaml)"),
        SET,
        _out("output folder (default out/segmenter)", "job"),
    ],
    "train-mask-head": [
        _config("mask-head YAML (see configs/mask-head-reference.yaml)"),
        SET,
        _out("output folder (default out/mask-head)", "job"),
    ],
    "evaluate-segmenter": [
        Opt("--classifier", "the classifier checkpoint (best.pt)", {"metavar": "CKPT"},
            type=Path, to="job.evaluation.classifier_checkpoint"),
        Opt("--segmenter", "the segmenter checkpoint (segmenter.pt); without it, plain CAM "
            "only", {"metavar": "CKPT"}, type=Path, to="job.evaluation.segmenter_checkpoint"),
        Opt("--mask-head", "a train-mask-head checkpoint: its masks are reported beside the "
            "CAM methods", {"metavar": "CKPT"}, type=Path,
            to="job.evaluation.mask_head_checkpoint"),
        Opt("--mask-threshold", "mask head probability threshold (default 0.5)",
            {"metavar": "P"}, type=float, to="job.evaluation.mask_threshold"),
        Opt("--source", "chips with masks: a folder with images/ + masks/ (same file names) "
            "or a manifest.csv with a mask column; repeatable; no config needed",
            {"action": "append", "metavar": "PATH"}),
        SPLIT,
        Opt("--ground-m-per-px", "metres per pixel of the --source chips (chips wider than "
            "a tile are cut into tile-sized sub-tiles)", {"metavar": "M"}, type=float),
        Opt("--whole-chips", "resize whole chips instead of cutting them into sub-tiles",
            WHOLE, to="job.evaluation.subtiles"),
        _config("YAML with an EvaluateSegmentationConfig (see "
                "configs/segmenter-eval-real-chips.yaml); --set, then the options above and "
                "below override it", required=False),
        SET,
        _out("output folder (default out/segmenter-eval)", "job"),
        Opt("--cam-threshold", "threshold on the min-max normalised CAM (default 0.37)",
            {"metavar": "T"}, type=float, to="job.evaluation.cam_threshold"),
        Opt("--device", DEVICE, {"metavar": "DEV"}, to="job.evaluation.device"),
        Opt("--bootstrap-reps", BOOTSTRAP, {"metavar": "N"}, type=int,
            to="job.evaluation.bootstrap_reps"),
        Opt("--overlays", "comparison PNGs per set (default 6)", {"metavar": "N"}, type=int,
            to="job.evaluation.overlays"),
        *_mask_opts("job.evaluation.cam_floor", "job.evaluation.clean"),
    ],
    "calibrate-cam": [
        Opt("--fit", "floor (default: CamConfig.floor, a quantile of the positives' CAM maxima) "
            "or threshold (CamConfig.threshold, by area or IoU)",
            {"choices": ["floor", "threshold"]}, to="job.fit"),
        Opt("--classifier", "classifier checkpoint (best.pt; default builtin)",
            {"metavar": "CKPT"}, type=Path, to="job.classifier_checkpoint"),
        Opt("--segmenter", "greedy segmenter checkpoint (default: builtin with the builtin "
            "classifier)", {"metavar": "CKPT"}, type=Path, to="job.segmenter_checkpoint"),
        Opt("--method", "greedy (default) or plain CAM", {"choices": ["greedy", "plain"]},
            to="job.method"),
        Opt("--stage", "greedy stage (default: the last trained)", {"metavar": "K"}, type=int,
            to="job.stage"),
        Opt("--source", "training chips (a folder or a manifest.csv; with masks for --fit "
            "threshold); repeatable", {"action": "append", "metavar": "PATH"}),
        Opt("--split", "with a manifest: keep this split (use the training one)",
            {"metavar": "NAME"}),
        Opt("--ground-m-per-px", "metres per pixel of the --source chips", {"metavar": "M"},
            type=float),
        Opt("--quantile", "--fit floor: the quantile of the positives' maxima (default 0.1)",
            {"metavar": "Q"}, type=float, to="job.quantile"),
        Opt("--on", "--fit floor: the CAM map, positive (default) or margin",
            {"choices": ["positive", "margin"]}, to="job.on"),
        Opt("--objective", "--fit threshold: match the total area (default) or the best pixel "
            "IoU", {"choices": ["area", "iou"]}, to="job.objective"),
        Opt("--cam-floor", "--fit threshold: fit under this CamConfig.floor", {"metavar": "F"},
            type=float, to="job.cam_floor"),
        Opt("--device", DEVICE, {"metavar": "DEV"}, to="job.device"),
        _config("YAML with CalibrateCamJob fields (the options above override it)",
                required=False),
        _set("quantile=0.05"),
    ],
    "segment-tiles": [
        _config("YAML with a SegmentTilesJob, or {job: ..., scale: ...}; --set, then the "
                "flags below override it (without it, the flags alone make the job)",
                required=False),
        SET,
        Opt("--manifest", "the tile store's manifest.gpkg or folder", {"metavar": "PATH"},
            type=Path, to="job.manifest"),
        Opt("--classifier", "classifier checkpoint (best.pt; default builtin)",
            {"metavar": "CKPT"}, type=Path, to="job.classifier_checkpoint"),
        Opt("--segmenter", "segmenter checkpoint (segmenter.pt), for --method greedy; a "
            "train-mask-head checkpoint for --method mask_head", {"metavar": "CKPT"}, type=Path,
            to="job.segmenter_checkpoint"),
        Opt("--method", "greedy (DeepSolar's CAM; default), plain (classifier's last layer) or "
            "mask_head (supervised decoder)", {"choices": ["greedy", "plain", "mask_head"]},
            to="job.cam.method"),
        Opt("--mask-threshold", "mask_head probability threshold (default 0.5)",
            {"metavar": "P"}, type=float, to="job.cam.mask_threshold"),
        Opt("--stage", "greedy stage to use (default: the last trained)", {"metavar": "K"},
            type=int, to="job.cam.stage"),
        Opt("--cam-threshold", "threshold on the min-max normalised CAM (default 0.37)",
            {"metavar": "T"}, type=float, to="job.cam.threshold"),
        Opt("--batch-size", "tiles per forward pass (default 16)", {"metavar": "N"}, type=int,
            to="job.batch_size"),
        Opt("--device", DEVICE, {"metavar": "DEV"}, to="job.device"),
        Opt("--num-threads", "torch CPU threads per shard worker", {"metavar": "N"}, type=int,
            to="job.num_threads"),
        Opt("--overlays", "PNG overlays of CAM + mask for N positive tiles (default 0)",
            {"metavar": "N"}, type=int, to="job.overlays"),
        *_mask_opts("job.cam.floor", "job.cam.clean"),
        *RUNNER_OPTS,
    ],
    "map-region": [
        _config("YAML with a MapRegionJob, or {job: <MapRegionJob>, scale: <ScaleOutConfig>} "
                "(the deployment's parameters)"),
        SET,
        *RUNNER_OPTS,
    ],
    "solarforest": [
        _config("YAML with SolarForestFlowParams (see configs/solarforest.yaml)"),
        Opt("--mode", "overrides the config's mode",
            {"choices": ["train", "evaluate", "predict"]}, to="params.mode"),
        Opt("--out", "output folder, overrides output_dir (--output-dir: its former name)",
            {"metavar": "DIR", "dest": "output_dir"}, type=Path, aliases=("--output-dir",),
            to="params.output_dir"),
        _set("model.two_stage=true"),
        Opt("--quick", "the same table with 30 trees, 200 bootstrap resamples and no "
            "permutation importances (about a minute)", {"action": "store_true"}),
    ],
}  # fmt: skip


def add_options(parser: argparse.ArgumentParser, opts: Iterable[Opt], *, raw: bool = False) -> None:
    """Add options to a parser.

    Args:
        parser: the parser (a flow's own, or a ``deepsolar <command>`` subparser).
        opts: the options, e.g. ``OPTIONS[command]``.
        raw: keep every value as written (no type conversion, no defaults: unset options are
            None), as the CLI's checks before the flow read them.
    """
    for opt in opts:
        kw = dict(opt.kw)
        if not raw:
            if opt.type is not None:
                kw["type"] = opt.type
            if opt.default is not None:
                kw["default"] = opt.default
        parser.add_argument(opt.flag, *opt.aliases, help=opt.help, **kw)


def build_parser(
    command: str, prog: str | None = None, description: str | None = None
) -> argparse.ArgumentParser:
    """The command line of a job's flow (``python -m flows.<flow>``), typed and with defaults.

    Args:
        command: the command name, a key of :data:`OPTIONS`.
        prog: the program name in usage lines (default: argparse's, from ``sys.argv[0]``).
        description: the text above the options (e.g. the flow module's docstring).

    Returns:
        The parser.

    Raises:
        KeyError: no command of that name.
    """
    ap = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_options(ap, OPTIONS[command])
    return ap


def bind_flags(parameters: dict[str, Any], args: argparse.Namespace, command: str) -> None:
    """Set every given option bound to a flow parameter (``Opt.to``) in ``parameters``, in place.

    Options not given (None) leave the mapping alone, so the config's value, else the model's
    default, applies.

    Args:
        parameters: the flow's parameters as a mapping (``{"job": {...}, "scale": {...}}``).
        args: the parsed command line.
        command: the command, a key of :data:`OPTIONS`.

    Raises:
        ConfigError: a bound option's target crosses a value that is not a section.
    """
    from deepsolar.core.config import set_dotted

    for opt in OPTIONS[command]:
        value = getattr(args, opt.dest, None)
        if opt.to is not None and value is not None:
            set_dotted(parameters, opt.to, value, where=opt.flag)
