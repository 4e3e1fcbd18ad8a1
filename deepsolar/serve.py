"""``deepsolar serve`` (``make serve``): a Prefect server, work pool, deployments and a worker.

A local Prefect server, the ``deepsolar`` process work pool, every deployment of ``prefect.yaml``
and a worker, in one terminal; one Ctrl-C or SIGTERM stops all of it within seconds.

Prefect's own processes do not stop well when a terminal's Ctrl-C reaches all of them at once:
the worker takes a SIGINT and a SIGTERM arriving together as several signals and kept running,
it waits for the flow runs it started (in sessions of their own, which no Ctrl-C reaches), and
it retries a server that stopped first. So the server and the worker run in sessions of their
own, and this process, the only one the terminal's signal reaches, stops them in order: the
worker's flow runs get SIGTERM (Prefect records them as crashed) and the worker one SIGINT, then
the server SIGTERM; whatever is still running after a short grace gets SIGKILL. On Linux the
server and the worker also end when this process dies without stopping them (kill -9): the
kernel sends them a signal then (``prctl(PR_SET_PDEATHSIG)``: SIGTERM to the server, SIGKILL to
the worker).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deepsolar.core.errors import DeepSolarError
from deepsolar.jobs.cli_options import SERVE_OPTIONS, add_options

# Seconds the worker (with its flow runs) and then the server get after their signal.
WORKER_GRACE_S = 2.0
SERVER_GRACE_S = 1.5
POOL = "deepsolar"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """A ``preexec_fn`` after which the child gets ``sig`` when this process ends.

    However this process ends (kill -9 included).

    Args:
        sig: the signal the child receives.

    Returns:
        The ``preexec_fn`` for ``subprocess.Popen``, or None where the kernel has no such call
        (not Linux).
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the forked child
    parent = os.getpid()

    def set_parent_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the call: nobody will signal
            os._exit(1)

    return set_parent_death_signal


def _prefect() -> list[str]:
    exe = Path(sys.executable).with_name("prefect")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "prefect"]


def _wait_healthy(url: str, server: subprocess.Popen[Any], timeout_s: float = 300) -> None:
    t0 = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            pass
        if server.poll() is not None:
            raise DeepSolarError(
                f"the Prefect server exited with code {server.returncode} before answering",
                fix="read its output above (is the port already in use? try PORT=4300)",
            )
        if time.monotonic() - t0 > timeout_s:
            raise DeepSolarError(
                f"the Prefect server did not answer at {url} within {timeout_s:.0f} s",
                fix="read its output above",
            )
        time.sleep(0.5)


def _stop_worker(worker: subprocess.Popen[Any]) -> None:
    import psutil

    try:  # its flow runs, before the worker's exit orphans them
        runs = psutil.Process(worker.pid).children(recursive=True)
    except psutil.Error:
        runs = []
    for p in runs:  # Prefect records a run that gets SIGTERM as crashed
        with contextlib.suppress(psutil.Error):
            p.terminate()
    if worker.poll() is None:
        worker.send_signal(signal.SIGINT)  # exactly one: Prefect's worker stops on it
    procs = list(runs)
    with contextlib.suppress(psutil.Error):
        procs.append(psutil.Process(worker.pid))
    _, alive = psutil.wait_procs(procs, timeout=WORKER_GRACE_S)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=1.0)
    worker.wait()


def _stop_server(server: subprocess.Popen[Any]) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(SERVER_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
    try:  # the server is the leader of its own session and group: end all of it
        os.killpg(server.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    server.wait()


def main(argv: list[str] | None = None) -> int:
    """Run the server, pool, deployments and worker until Ctrl-C or SIGTERM.

    Args:
        argv: the command line (``--host``, ``--port``); None: ``sys.argv``.

    Returns:
        The exit code.
    """
    ap = argparse.ArgumentParser(description=__doc__)
    add_options(ap, SERVE_OPTIONS)
    args = ap.parse_args(argv)
    api_url = f"http://{args.host}:{args.port}/api"
    os.environ["PREFECT_API_URL"] = api_url
    prefect = _prefect()
    print(
        f"Prefect UI: http://{args.host}:{args.port}  - in another terminal, first:\n"
        f"  export PREFECT_API_URL={api_url}",
        flush=True,
    )
    server = subprocess.Popen(
        [*prefect, "server", "start", "--host", args.host, "--port", str(args.port)],
        start_new_session=True,
        preexec_fn=die_with_parent(signal.SIGTERM),  # uvicorn's orderly shutdown
        stdin=subprocess.DEVNULL,
    )
    worker: subprocess.Popen[Any] | None = None
    try:
        _wait_healthy(api_url, server)
        if subprocess.run([*prefect, "work-pool", "inspect", POOL], capture_output=True).returncode:
            subprocess.run([*prefect, "work-pool", "create", POOL, "--type", "process"], check=True)
        if subprocess.run([*prefect, "--no-prompt", "deploy", "--all"]).returncode:
            raise DeepSolarError("prefect deploy --all failed", fix="read its output above")
        worker = subprocess.Popen(
            [*prefect, "worker", "start", "--pool", POOL, "--type", "process"],
            start_new_session=True,
            # serve itself was killed (kill -9): nothing is orderly any more; a SIGINT'd worker
            # took over 5 s to go on a loaded machine, so the kernel kills it outright
            preexec_fn=die_with_parent(signal.SIGKILL),
            stdin=subprocess.DEVNULL,
        )
        return worker.wait()
    finally:
        if worker is not None:
            _stop_worker(worker)
        _stop_server(server)


if __name__ == "__main__":
    sys.exit(main())
