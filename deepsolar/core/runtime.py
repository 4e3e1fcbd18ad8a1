"""Process-wide settings for running flows as an operator's tool (no Prefect import here).

Prefect's environment defaults, and stopping on a signal.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable
from typing import Any

# Seconds Prefect's temporary ("ephemeral") API server may take to start: its default, 20 s, is
# missed on a loaded 2-core machine (34 s measured), which killed flows before any work.
EPHEMERAL_STARTUP_TIMEOUT_S = "120"

PREFECT_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": EPHEMERAL_STARTUP_TIMEOUT_S,
    # offline by design: no telemetry, no "Failed to send telemetry" lines
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}


def prefect_env_defaults() -> None:
    """Set PREFECT_DEFAULTS in the environment unless already set.

    Must run before Prefect is imported (its settings are read then); child processes (the
    temporary server, workers) inherit them.
    """
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)


# --------------------------------------------------------------------------------------------
# Stopping: one Ctrl-C or SIGTERM ends a command within seconds, keeps what finished, exits
# 128 + the signal's number and leaves no process behind.

# Seconds from the first stop signal to a forced exit (children killed, exit 128 + signal) if
# the orderly stop (the manifest of what finished, the temporary server's shutdown) has not
# finished by then. DEEPSOLAR_STOP_GRACE_S overrides it.
STOP_GRACE_S = 4.0
# Seconds a child (the temporary server, pool workers) gets to end after SIGTERM before SIGKILL.
CHILD_GRACE_S = 1.5

# A signal this soon after the first is the same stop delivered twice (make forwards SIGTERM to
# its child, which the group's SIGTERM reached already), not an operator's second Ctrl-C.
DUPLICATE_SIGNAL_S = 1.0
# Seconds Prefect's log / event workers get to send what they hold before the server stops.
DRAIN_S, DRAIN_INTERRUPTED_S = 30.0, 1.0

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived (Ctrl-C: SIGINT, or SIGTERM).

    A KeyboardInterrupt, so every layer (Prefect's engine, the downloader's cleanup) treats it as
    an interrupt; ``exit_code`` is the shell's convention, 128 + the signal's number (130, 143).

    Args:
        signum: The signal's number (``signal.SIGINT``: 2, ``signal.SIGTERM``: 15).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


_stop_event = threading.Event()
_stop_signum: list[int] = []


def stop_requested() -> bool:
    """Whether a stop signal has arrived in this process (for loops that check between items).

    Returns:
        True once SIGINT or SIGTERM has been received under :class:`StopOnSignals`.
    """
    return _stop_event.is_set()


def stop_exit_code() -> int | None:
    """The exit code a stopped command should end with.

    Returns:
        128 + the first stop signal's number (130, 143), or None when no stop signal arrived.
    """
    return 128 + _stop_signum[0] if _stop_signum else None


def _stop_grace_s() -> float:
    try:
        return max(0.5, float(os.environ.get("DEEPSOLAR_STOP_GRACE_S", STOP_GRACE_S)))
    except ValueError:
        return STOP_GRACE_S


def _new_children(known: set[int]) -> list[Any]:
    import psutil

    try:
        kids = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    return [k for k in kids if k.pid not in known]


def end_processes(procs: list[Any], grace_s: float = CHILD_GRACE_S) -> None:
    """SIGTERM ``procs`` (psutil.Process), wait up to ``grace_s``, SIGKILL the rest, reap.

    Args:
        procs: The processes to end (``psutil.Process`` objects).
        grace_s: Seconds to wait after SIGTERM before SIGKILL.
    """
    import psutil

    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=1.0)


def _drain_prefect_services(timeout_s: float) -> None:
    services = sys.modules.get("prefect._internal.concurrency.services")
    if services is None:
        return
    with contextlib.suppress(Exception):
        services.QueueService.drain_all(timeout=timeout_s, at_exit=False)


class StopOnSignals:
    """Context of a command run from a terminal or a process manager.

    Used by the ``deepsolar`` CLI and ``python -m flows.<flow>``.

    - The first SIGINT or SIGTERM raises :class:`Interrupted` in the main thread (the downloader
      then cancels what is in flight and writes the manifest of what finished) and arms a
      watchdog: if the process has not ended ``DEEPSOLAR_STOP_GRACE_S`` (4 s) later, the
      children are killed and the process exits 128 + signal anyway. A second signal (more than
      1 s after the first: closer ones are the same stop delivered twice) does that at once.
    - Prefect's temporary API server is started in a session of its own (a terminal's Ctrl-C
      reaches only this process, which then stops the server in order, instead of killing the
      server under a running flow), and it ends itself when this process dies, kill -9 included.
    - On the way out, Prefect's log and event workers send what they hold, then the processes
      this command started and that are still running (the temporary server, pool workers) get
      SIGTERM, then SIGKILL; after a stop signal the process then exits 128 + signal at once
      (``exit_on_stop``), without the interpreter's slow teardown.

    Outside the main thread (no signal handlers can be installed) it only does the last two.

    Args:
        exit_on_stop: After a stop signal, exit 128 + signal at once on leaving the context
            (False: leave it normally and let the caller decide).
    """

    def __init__(self, *, exit_on_stop: bool = True) -> None:
        self.exit_on_stop = exit_on_stop
        self._previous: dict[int, Any] = {}
        self._known: set[int] = set()
        self._watchdog: threading.Thread | None = None
        self._first_at = 0.0

    def __enter__(self) -> StopOnSignals:
        _stop_event.clear()  # a new command (tests run several in one process)
        _stop_signum.clear()
        guard_ephemeral_server()
        self._known = {p.pid for p in _new_children(set())}
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        # Prefect's log and event workers send what they hold to the temporary server at exit:
        # let them do it now, while that server still runs (else each retries a dead server).
        _drain_prefect_services(DRAIN_INTERRUPTED_S if stop_requested() else DRAIN_S)
        end_processes(_new_children(self._known))
        if stop_requested() and self.exit_on_stop:
            # Everything worth doing is done; the interpreter's own teardown (joining request
            # threads still in flight, freeing every module) took another 1-2 s on a busy
            # machine. The signal ends the process: now.
            self._hard_exit(stop_exit_code() or 130)

    def _handle(self, signum: int, frame: Any) -> None:
        if _stop_event.is_set():
            if time.monotonic() - self._first_at < DUPLICATE_SIGNAL_S:
                return  # the same stop delivered twice (to the group and by make to its child)
            self._hard_exit(128 + _stop_signum[0])  # a second signal: stop now
        self._first_at = time.monotonic()
        _stop_signum.append(signum)
        _stop_event.set()
        self._watchdog = threading.Thread(
            target=self._expire, args=(_stop_grace_s(),), name="deepsolar-stop", daemon=True
        )
        self._watchdog.start()
        raise Interrupted(signum)

    def _expire(self, grace_s: float) -> None:
        time.sleep(grace_s)
        print(
            f"deepsolar: still stopping {grace_s:g} s after the signal: forced exit "
            "(a re-run resumes from the journal)",
            file=sys.stderr,
            flush=True,
        )
        if os.environ.get("DEEPSOLAR_DEBUG"):  # what held the stop up
            import faulthandler

            faulthandler.dump_traceback(all_threads=True)
        self._hard_exit(128 + _stop_signum[0])

    def _hard_exit(self, code: int) -> None:
        import psutil

        kids = _new_children(self._known)
        for p in kids:
            with contextlib.suppress(psutil.Error):
                p.kill()
        with contextlib.suppress(Exception):
            logging.shutdown()  # flush every log handler (files, Prefect's console)
        with contextlib.suppress(Exception):
            sys.stderr.flush()
            sys.stdout.flush()
        os._exit(code)


def run_entry(main: Callable[[], int | None], name: str) -> int:
    """Run a flow module's ``main`` as ``python -m flows.<name>`` does.

    Runs under :class:`StopOnSignals`: an interrupt ends in one line and exit 130 / 143.

    Args:
        main: The flow module's entry point; returns an exit code or None (0).
        name: The flow's name, for the interrupt message.

    Returns:
        The process exit code: ``main``'s, or 128 + the stop signal's number when interrupted.
    """
    with StopOnSignals():
        try:
            rc = int(main() or 0)
            if not stop_requested():
                return rc
        except Exception:
            if not stop_requested():
                raise
        except KeyboardInterrupt:
            pass
        print(
            f"{name}: interrupted; what finished is kept (a re-run resumes)",
            file=sys.stderr,
            flush=True,
        )
        return stop_exit_code() or 130


def check_input_paths(paths: dict[str, Any], where: str) -> None:
    """Check that every named input path (None and 'builtin' skipped) exists.

    Checked before a flow (and Prefect's temporary server) starts, so a wrong path fails fast.

    Args:
        paths: Config field name -> path (str, Path or None).
        where: The config the fields belong to, for the error message.

    Raises:
        ConfigError: Naming the first field whose file or folder does not exist.
    """
    from deepsolar.core.errors import ConfigError

    for field, value in paths.items():
        if value is None or str(value) == "builtin":
            continue
        if not os.path.exists(value):
            raise ConfigError(
                f"{field}: file or folder not found ({str(value)[:200]!r})",
                where=where,
                fix=f"check {field} (relative paths start in {os.getcwd()})",
            )


# --------------------------------------------------------------------------------------------
# Prefect's temporary API server: its own session, and it dies with its parent

_SERVER_MODULE = "prefect.server.api.server"


def _guarded_subprocess_module() -> types.ModuleType:
    """A stand-in for the ``subprocess`` module inside Prefect's server module.

    Its Popen runs the temporary server (``python -m uvicorn ...``) through :func:`_guard_main`
    in a session of its own. Everything else is the real module.
    """

    class _Guarded(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            return getattr(subprocess, name)

    mod = _Guarded("subprocess")

    def popen(args: Any, *a: Any, **kw: Any) -> subprocess.Popen[Any]:
        if isinstance(args, list) and args[1:3] == ["-m", "uvicorn"]:
            args = [
                args[0],
                "-m",
                "deepsolar.core.runtime",
                "--guard-parent",
                str(os.getpid()),
                *args[3:],
            ]
            kw["start_new_session"] = True
            # deepsolar importable there however this process found it
            env = dict(kw.get("env") or os.environ)
            root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
            kw["env"] = env
        return subprocess.Popen(args, *a, **kw)

    mod.Popen = popen  # type: ignore[attr-defined]
    return mod


def _patch_server_module(module: types.ModuleType) -> None:
    if getattr(module, "subprocess", None) is subprocess:
        module.subprocess = _guarded_subprocess_module()  # type: ignore[attr-defined]


class _PatchOnImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Patches Prefect's server module when (and only if) it is imported.

    Importing it costs ~1 s, which a refused command or a run against a real server should not
    pay.
    """

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != _SERVER_MODULE:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        self._loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._loader.exec_module(module)
        _patch_server_module(module)


_finder = _PatchOnImport()


def guard_ephemeral_server() -> None:
    """Make Prefect's temporary API server a child that Ctrl-C does not reach and that dies with us.

    A terminal's Ctrl-C then reaches only this process, and the server ends when this process
    ends (see :func:`_guard_main`). Idempotent.
    """
    if _SERVER_MODULE in sys.modules:
        _patch_server_module(sys.modules[_SERVER_MODULE])
    elif _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def _guard_main(argv: list[str]) -> None:
    """``python -m deepsolar.core.runtime --guard-parent PID <uvicorn args>``: run uvicorn.

    Stop it (SIGTERM to itself, then a hard exit) as soon as process PID is no longer its parent.
    """
    parent = int(argv[1])

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.25)
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's own orderly shutdown
        time.sleep(3.0)
        os._exit(1)

    if os.getppid() != parent:
        sys.exit(1)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    sys.argv = ["uvicorn", *argv[2:]]
    import runpy

    runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)


if __name__ == "__main__" and sys.argv[1:2] == ["--guard-parent"]:
    _guard_main(sys.argv[1:])
