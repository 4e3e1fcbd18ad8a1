"""Run a job from its command line: the one path behind ``deepsolar <command>`` and each flow's main.

:func:`run_command` parses the options declared in :data:`~deepsolar.jobs.cli_options.OPTIONS`,
checks that the files they name exist, builds the flow's parameters with the job module's
``parameters_from_args`` (config file, ``--set``, then every option bound to a field), validates
them with the job's models (``PARAMETERS``), runs the job's ``check`` (inputs exist, region
resolves, ...) and only then imports the flow (Prefect, often torch), runs it and prints the job's
``format_result``. A bad input therefore answers in one line before any Prefect server starts,
whichever way the job was started.

Each job module (``deepsolar.jobs.<module>``) provides:

- ``PARAMETERS``: the flow's parameters, name -> pydantic model (a deployment's parameters);
- ``parameters_from_args(args) -> dict``: the parameters as a mapping, before validation;
- ``INPUT_PATHS`` (optional): dotted parameters naming files or folders that must exist
  (``job.classifier_checkpoint``; unset and ``builtin`` skipped), checked before the flow;
- ``check(params, where)`` (optional): further input checks run before the flow (it runs them
  again);
- ``format_result(result, params) -> str`` (optional): what the command prints when the flow
  returns; without it, the result as indented JSON.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from deepsolar.core.config import validate_config
from deepsolar.core.errors import ConfigError, DeepSolarError
from deepsolar.core.runtime import check_input_paths
from deepsolar.jobs.cli_options import OPTIONS, Opt, build_parser
from deepsolar.jobs.registry import JOBS, load_attr

#: Options naming an input that must exist: checked before anything is read or imported.
INPUT_FLAGS = ("--config", "--checkpoint", "--classifier", "--segmenter", "--resume", "--manifest",
               "--mask-head", "--source")  # fmt: skip


def _looks_like_path(value: str) -> bool:
    """A file path, not a keyword a flow understands (e.g. ``--checkpoint builtin``)."""
    return os.sep in value or "/" in value or bool(os.path.splitext(value)[1])


def check_input_flags(opts: Sequence[Opt], args: argparse.Namespace) -> None:
    """Every input file named on the command line exists.

    Args:
        opts: the command's options.
        args: the parsed command line (values as written or converted).

    Raises:
        ConfigError: a file is missing (naming the option and the folder relative paths start in).
    """
    for opt in opts:
        if opt.flag not in INPUT_FLAGS:
            continue
        value = getattr(args, opt.dest, None)
        for v in value if isinstance(value, list) else [value]:  # --source is repeatable
            v = None if v is None else str(v)
            if v is not None and _looks_like_path(v) and not os.path.exists(v):
                raise ConfigError(
                    f"{opt.flag.lstrip('-')} file not found ({opt.flag} {v[:200]!r})",
                    where=os.getcwd(),
                    fix=f"check the path given to {opt.flag} (relative paths start in this folder)",
                )


def input_paths(params: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The values of dotted parameters (``job.evaluation.classifier_checkpoint``), by field name.

    Args:
        params: the validated parameters (models).
        names: dotted parameter names.

    Returns:
        Field name (the last part) -> value, for :func:`check_input_paths`.
    """
    values = {}
    for name in names:
        first, *rest = name.split(".")
        value = params[first]
        for part in rest:
            value = getattr(value, part)
        values[rest[-1] if rest else first] = value
    return values


def job_module(command: str) -> ModuleType:
    """The job module of a command (``deepsolar.jobs.<module>``), imported.

    Args:
        command: the command, a key of :data:`~deepsolar.jobs.registry.JOBS`.

    Returns:
        The module.
    """
    return importlib.import_module(JOBS[command].module)


def where_of(args: argparse.Namespace) -> str:
    """Where the parameters came from, for error messages: the config file or the command line.

    Args:
        args: the parsed command line.

    Returns:
        The ``--config`` path, else ``"command line"``.
    """
    config = getattr(args, "config", None)
    return str(config) if config else "command line"


def flow_parameters(command: str, args: argparse.Namespace) -> dict[str, Any]:
    """The flow's validated parameters from a parsed command line.

    Args:
        command: the command.
        args: the parsed command line.

    Returns:
        Parameter name -> validated model, ready for ``flow(**params)``.

    Raises:
        ConfigError: a missing input file, a bad config or a bad value (naming it).
    """
    check_input_flags(OPTIONS[command], args)
    module = job_module(command)
    data = module.parameters_from_args(args)
    where = where_of(args)
    first = next(iter(module.PARAMETERS))
    return {
        name: validate_config(model, data.get(name) or {}, where=where if name == first
                              else f"{where}: {name}")
        for name, model in module.PARAMETERS.items()
    }  # fmt: skip


def run_command(
    command: str,
    argv: Sequence[str] | None = None,
    *,
    description: str | None = None,
    prog: str | None = None,
) -> int:
    """Parse, build, check, run the flow and print its result.

    Args:
        command: the command (a job of the registry).
        argv: its arguments (default: ``sys.argv[1:]``).
        description: the text of ``--help`` above the options (the flow module's docstring).
        prog: the program name in usage lines (default: argparse's, from ``sys.argv[0]``).

    Returns:
        0 (errors raise).

    Raises:
        DeepSolarError: a bad input or a failed job (one line says what and where).
        SystemExit: argparse refused the command line (already printed).
    """
    args = build_parser(command, prog, description).parse_args(argv)
    params = checked_parameters(command, args)  # before the flow module (Prefect, torch) imports
    spec = JOBS[command]
    flow = load_attr(f"{spec.flow}:{spec.flow_function}")
    print(format_result(command, flow(**params), params))
    return 0


def checked_parameters(command: str, args: argparse.Namespace) -> dict[str, Any]:
    """The flow's validated parameters, with the job's inputs checked (``INPUT_PATHS``, ``check``).

    Args:
        command: the command.
        args: the parsed command line.

    Returns:
        Parameter name -> validated model, ready for ``flow(**params)`` or ``run(**params)``.

    Raises:
        DeepSolarError: a bad value or a missing input (one line says what and where).
    """
    params = flow_parameters(command, args)
    module = job_module(command)
    check_input_paths(input_paths(params, getattr(module, "INPUT_PATHS", ())), where_of(args))
    if hasattr(module, "check"):
        module.check(params, where_of(args))
    return params


def format_result(command: str, result: Any, params: dict[str, Any]) -> str:
    """What the command prints: the job's ``format_result``, else the result as indented JSON.

    Args:
        command: the command.
        result: what the flow (or the job's ``run``) returned.
        params: the parameters it ran with.

    Returns:
        The text to print.
    """
    module = job_module(command)
    if hasattr(module, "format_result"):
        return module.format_result(result, params)
    return json.dumps(result, indent=2, default=str)


def run_main(
    command: str, argv: Sequence[str] | None = None, *, description: str | None = None
) -> int:
    """A flow module's ``main``: :func:`run_command`, each refusal or failure as one line.

    Args:
        command: the command.
        argv: its arguments (default: ``sys.argv[1:]``).
        description: the flow module's docstring (``--help``).

    Returns:
        0 on success, 1 when the job was refused or failed (the reason on stderr).
    """
    try:
        return run_command(command, argv, description=description)
    except DeepSolarError as err:
        print(f"{command} failed: {err}", file=sys.stderr)
        return 1
