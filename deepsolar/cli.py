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
from dataclasses import dataclass

from deepsolar.core.errors import DeepSolarError
from deepsolar.core.runtime import StopOnSignals, stop_exit_code, stop_requested
from deepsolar.jobs.cli_options import OPTIONS, SERVE_OPTIONS, Opt, add_options
from deepsolar.jobs.command_line import run_command as run_job_command
from deepsolar.jobs.registry import JOBS

EXIT_FAILED, EXIT_USAGE, EXIT_UNEXPECTED, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 3, 130, 143


@dataclass(frozen=True)
class Command:
    """A subcommand: a job of :data:`deepsolar.jobs.registry.JOBS`, or ``serve``.

    Attributes:
        name: the subcommand.
        module: the module whose ``main(argv)`` runs it (a flow, or deepsolar.serve).
        summary: one line saying what it does.
        opts: its options, as declared once (:data:`deepsolar.jobs.cli_options.OPTIONS`).
        example: a command line running it.
    """

    name: str
    module: str
    summary: str
    opts: list[Opt]
    example: str


SERVE = Command(
    "serve", "deepsolar.serve",
    "a local Prefect server (UI), the deepsolar work pool, every deployment of prefect.yaml "
    "and a worker, in one terminal (make serve); one Ctrl-C stops them all",
    SERVE_OPTIONS,
    "deepsolar serve --port 4200",
)  # fmt: skip

COMMANDS = [
    *(Command(j.name, j.flow, j.summary, OPTIONS[j.name], j.example) for j in JOBS.values()),
    SERVE,
]


def build_parser() -> argparse.ArgumentParser:
    """The ``deepsolar`` parser: ``--debug`` and one subcommand per entry of :data:`COMMANDS`.

    The subcommands' options are added raw (every value as written, unset ones None): the job's
    own command line parses them again, typed, in :func:`run_command`. Each subparser records its
    :class:`Command` as ``_command``.

    Returns:
        The parser; its ``--help`` shows this module's docstring.
    """
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
            epilog=f"example:\n  {cmd.example}"
            + (
                ""
                if cmd is SERVE
                else f"\n\nThe same flow runs as the Prefect deployment '{cmd.name}/...': see "
                "docs/orchestration.md."
            ),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_options(p, cmd.opts, raw=True)  # as written: run_command parses them typed
        p.set_defaults(_command=cmd)
    return ap


def command_argv(argv: Sequence[str], name: str) -> list[str]:
    """The arguments given to a subcommand: what follows its name on the command line.

    Args:
        argv: the ``deepsolar`` command line, without the program name.
        name: the subcommand (its first occurrence: the top-level options take no values).

    Returns:
        The arguments after ``name``, parsed again (typed) by the job's command line.
    """
    argv = list(argv)
    return argv[argv.index(name) + 1 :]


def _one_line(err: BaseException) -> str:
    """An error as one line: its message, prefixed by its type unless it is a DeepSolarError."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if isinstance(err, DeepSolarError) else f"{type(err).__name__}: {text}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``deepsolar`` console script: parse, then run the subcommand.

    The run is wrapped in :class:`~deepsolar.core.runtime.StopOnSignals`, so one Ctrl-C or
    SIGTERM stops it within seconds and no process it started outlives it.

    Args:
        argv: the command line without the program name (default: ``sys.argv[1:]``).

    Returns:
        The process exit code: 0 success, 1 refused or failed, 2 bad command line, 3 unexpected
        error, 130 / 143 interrupted by SIGINT / SIGTERM.

    Raises:
        SystemExit: argparse refused the top-level command line or printed ``--help``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    cmd: Command = args._command
    # One Ctrl-C / SIGTERM stops the run within seconds; no child process outlives it.
    with StopOnSignals():
        return run_command(cmd, args, command_argv(argv, cmd.name))


def _interrupted(cmd: Command) -> int:
    """Print the one-line interrupt message; return 128 + the stop signal (130 when unknown)."""
    code = stop_exit_code() or EXIT_INTERRUPTED
    how = {EXIT_INTERRUPTED: "Ctrl-C (SIGINT)", EXIT_TERMINATED: "SIGTERM"}.get(code, "a signal")
    print(
        f"deepsolar {cmd.name}: interrupted by {how}; what finished is kept (a re-run resumes)",
        file=sys.stderr,
        flush=True,
    )
    return code


def run_command(cmd: Command, args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run one subcommand and turn its outcome into an exit code, with at most one line on stderr.

    ``serve`` calls ``deepsolar.serve.main``; every job goes through
    :func:`deepsolar.jobs.command_line.run_command`, which validates the parameters and checks the
    inputs before Prefect (and torch) are imported, then runs the flow and prints its result.

    Args:
        cmd: the subcommand.
        args: the parsed ``deepsolar`` command line (for ``--debug``).
        argv: the subcommand's own arguments (:func:`command_argv`).

    Returns:
        0 on success, ``EXIT_FAILED`` (1) when the job was refused or failed, the parser's code
        (``EXIT_USAGE``, 2) for a bad value, ``EXIT_UNEXPECTED`` (3) for any other error, and
        128 + the signal (130 / 143) when a stop signal arrived.

    Raises:
        Exception: an unexpected error, re-raised with its traceback under ``--debug`` or when
            ``DEEPSOLAR_DEBUG`` is set.
    """
    try:
        if cmd is SERVE:
            rc = int(importlib.import_module(cmd.module).main(list(argv)) or 0)
        else:  # parameters validated and inputs checked before Prefect (and torch) import
            rc = run_job_command(cmd.name, argv, prog=f"deepsolar {cmd.name}")
        return _interrupted(cmd) if stop_requested() else rc
    except KeyboardInterrupt:
        return _interrupted(cmd)
    except DeepSolarError as err:
        if stop_requested():  # an error caused by the stop itself
            return _interrupted(cmd)
        print(f"deepsolar {cmd.name} failed: {_one_line(err)}", file=sys.stderr)
        return EXIT_FAILED
    except SystemExit as exc:  # the typed parser refused a value (already printed)
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
