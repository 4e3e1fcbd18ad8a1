"""Checks the ``deepsolar`` CLI runs before it imports a flow module (Prefect, often torch).

They run long before any Prefect server starts: a bad input answers in one line within a second
or two.

Each check imports only what it validates with. Every ``--config`` must exist and parse as YAML;
the commands whose models import no torch (download-tiles, train-classifier,
evaluate-classifier, map-region, segment-tiles, train-segmenter, train-mask-head, evaluate-segmenter, solarforest) are validated in full here, and the files they name must exist. The flows'
own ``main`` validates again (the same models, before their flow starts), so ``python -m
flows.<flow>`` refuses the same inputs.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from deepsolar.core.config import apply_override, load_yaml
from deepsolar.core.errors import ConfigError


def _arg(args: argparse.Namespace, name: str) -> Any:
    return getattr(args, name, None)


def config_with_sets(config: Any, sets: Iterable[str] | None) -> Any:
    """A ``--config`` file's mapping with the command line's ``--set key=value`` applied.

    Args:
        config: the YAML file.
        sets: the ``--set`` items (dotted keys, YAML values), in order.

    Returns:
        The mapping (as read, then overridden).
    """
    data = load_yaml(config)
    for item in sets or []:
        apply_override(data, item)
    return data


def check_chip_sources(sources: Iterable[Any], where: str) -> None:
    """Every chip source's ``path`` (a folder or a manifest CSV) exists."""
    for src in sources:
        if not os.path.exists(src.path):
            raise ConfigError(
                f"data source not found ({str(src.path)[:200]!r})",
                where=where,
                fix=f"check the source's path (relative paths start in {os.getcwd()})",
            )


def _json_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if _arg(args, "override"):
        try:
            overrides = json.loads(args.override)
        except json.JSONDecodeError as err:
            raise ConfigError(
                f"--override is not valid JSON ({err.msg})",
                where=f"--override {args.override[:200]!r}",
                fix='give a JSON object, e.g. \'{"optim": {"lr": 0.0005}}\'',
            ) from None
        if not isinstance(overrides, dict):
            raise ConfigError("--override must be a JSON object", fix="wrap it in {...}")
    for item in _arg(args, "set") or []:
        apply_override(overrides, item)
    if _arg(args, "epochs") is not None:
        overrides.setdefault("train", {})["epochs"] = args.epochs
    return overrides


def download_tiles(args: argparse.Namespace) -> None:
    """Check that the job validates, its region resolves and its source covers it.

    Also that its tile count is under ``max_tiles``.

    Args:
        args: the parsed ``download-tiles`` command line.
    """
    from deepsolar.core.config import validate_config
    from deepsolar.jobs.download_tiles import DownloadTilesJob, preflight

    data = config_with_sets(args.config, _arg(args, "set"))
    job = validate_config(DownloadTilesJob, data, where=str(args.config))
    preflight(job)


def train_classifier(args: argparse.Namespace) -> None:
    """The config (with --epochs / --override merged) validates and its chip sources exist."""
    from deepsolar.classifier.config import load_train_config

    overrides = _json_overrides(args)
    cfg = load_train_config(args.config, overrides=overrides)
    data = cfg.data
    check_chip_sources([*data.train, *data.val, *data.test], str(args.config))


def evaluate_classifier(args: argparse.Namespace) -> None:
    """A --config validates as a classifier config and its held-out sets exist."""
    if _arg(args, "config"):
        from deepsolar.classifier.config import load_train_config

        cfg = load_train_config(args.config)
        check_chip_sources(cfg.data.test, str(args.config))


def map_region_job(job: Any, where: str) -> None:
    """A MapRegionJob's input paths exist; a download part passes download-tiles' checks."""
    from deepsolar.core.runtime import check_input_paths
    from deepsolar.jobs.download_tiles import preflight

    check_input_paths(
        {
            "store_dir": job.store_dir,
            "classifier_checkpoint": job.classifier_checkpoint,
            "segmenter_checkpoint": job.segmenter_checkpoint,
        },
        where,
    )
    if job.tiles is not None:
        preflight(job.tiles)


def map_region(args: argparse.Namespace) -> None:
    """The job (plain, or the deployment's {job, scale} layout) validates; its inputs exist."""
    from deepsolar.core.config import validate_config
    from deepsolar.jobs.map_region import MapRegionJob

    data, scale = _job_and_scale(args.config, _arg(args, "set"))
    job = validate_config(MapRegionJob, data, where=str(args.config))
    _check_scale(scale, str(args.config))
    map_region_job(job, str(args.config))


def _job_and_scale(config: Any, sets: Any = None) -> tuple[Any, dict[str, Any] | None]:
    """A flow config's job mapping and its ``scale`` part (the deployment's {job, scale} layout).

    Args:
        config: the YAML file.
        sets: ``--set`` items applied to the file's mapping first (keys as in the file).

    Returns:
        The job's mapping and the scale mapping (None without the {job, scale} layout).
    """
    data = config_with_sets(config, sets)
    if isinstance(data, dict) and "job" in data:
        return data["job"], dict(data.get("scale") or {})
    return data, None


def _check_scale(scale: dict[str, Any] | None, where: str) -> None:
    if scale is not None:
        from deepsolar.core.config import validate_config
        from deepsolar.segmentation.config import ScaleOutConfig

        validate_config(ScaleOutConfig, scale, where=f"{where}: scale")


def trainer_inputs(cfg: Any, where: str) -> None:
    """Check that the classifier checkpoint and the chip sources of a trainer config exist.

    For configs that train on a frozen classifier (TrainSegmenterConfig, TrainMaskHeadConfig).

    Args:
        cfg: the validated config.
        where: where the config came from, for the error message.
    """
    from deepsolar.core.runtime import check_input_paths

    check_input_paths({"classifier_checkpoint": cfg.classifier_checkpoint}, where)
    check_chip_sources(cfg.data.train, where)


def _trainer(model_name: str) -> Callable[[argparse.Namespace], None]:
    """The check of a command training on a frozen classifier.

    Its config (the model ``model_name`` of segmentation.config) validates; checkpoint and chips
    exist.
    """

    def check(args: argparse.Namespace) -> None:
        from deepsolar.core.config import validate_config
        from deepsolar.segmentation import config as seg_config

        model = getattr(seg_config, model_name)
        data = config_with_sets(args.config, _arg(args, "set"))
        cfg = validate_config(model, data, where=str(args.config))
        trainer_inputs(cfg, str(args.config))

    return check


def segment_tiles_job(job: Any, where: str) -> None:
    """A SegmentTilesJob's store manifest and checkpoints exist."""
    from deepsolar.core.runtime import check_input_paths

    check_input_paths(
        {
            "manifest": job.manifest,
            "classifier_checkpoint": job.classifier_checkpoint,
            "segmenter_checkpoint": job.segmenter_checkpoint,
        },
        where,
    )


def segment_tiles(args: argparse.Namespace) -> None:
    """A --config validates as a SegmentTilesJob (plain or {job, scale}); its inputs exist."""
    if not _arg(args, "config"):
        return
    from deepsolar.core.config import validate_config
    from deepsolar.segmentation.config import SegmentTilesJob

    data, scale = _job_and_scale(args.config, _arg(args, "set"))
    job = validate_config(SegmentTilesJob, data, where=str(args.config))
    _check_scale(scale, str(args.config))
    segment_tiles_job(job, str(args.config))


def solarforest(args: argparse.Namespace) -> None:
    """The parameters (config + --set / --mode / --out / --quick) validate; files exist."""
    from deepsolar.solarforest.job import check_inputs, params_from_args

    check_inputs(params_from_args(args))


def evaluate_segmenter(args: argparse.Namespace) -> None:
    """With --config, check that the config validates and its checkpoints exist.

    Command-line values apply over the config; --source paths are checked by the CLI itself.

    Args:
        args: the parsed ``evaluate-segmenter`` command line.
    """
    if not _arg(args, "config") or _arg(args, "source"):
        return
    from deepsolar.core.runtime import check_input_paths
    from deepsolar.segmentation.config import evaluation_config_from_args

    cfg = evaluation_config_from_args(args)
    check_input_paths(
        {
            "classifier_checkpoint": cfg.classifier_checkpoint,
            "segmenter_checkpoint": cfg.segmenter_checkpoint,
            "mask_head_checkpoint": cfg.mask_head_checkpoint,
        },
        str(args.config),
    )


CHECKS: dict[str, Callable[[argparse.Namespace], None]] = {
    "download-tiles": download_tiles,
    "train-classifier": train_classifier,
    "evaluate-classifier": evaluate_classifier,
    "map-region": map_region,
    "train-segmenter": _trainer("TrainSegmenterConfig"),
    "train-mask-head": _trainer("TrainMaskHeadConfig"),
    "segment-tiles": segment_tiles,
    "solarforest": solarforest,
    "evaluate-segmenter": evaluate_segmenter,
}


def check_command(name: str, args: argparse.Namespace) -> None:
    """Every ``--config`` parses as a YAML mapping, then the command's own check, if any."""
    if isinstance(_arg(args, "config"), str):
        load_yaml(args.config)
    check = CHECKS.get(name)
    if check is not None:
        check(args)
