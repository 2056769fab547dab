"""Warm ClientApp processes: a site-local fork server that keeps Python, torch and Flower imported.

Flower 1.42 runs every message to a site in a fresh ``flwr-clientapp`` process (its
SuperExec ``Popen``s one per task, in every isolation mode). On 2 cores such a process
spends ~3 s importing Flower, torch and fastMRI before it reads the message. Here the
SuperNode's SuperExec hands each ClientApp task to a **template** process that imported
those libraries once, and the template ``fork()``s the task's process, which then runs
Flower's own ``flwr-clientapp`` entry point with the very arguments Flower would have
given it. So each message still gets its own process (a crash stays in that process),
the app code is still the FAB's (fedforget modules are never imported in the template
and are dropped in each child before Flower loads the app), and the data is read in
that process on the site's machine, as before. Only the imports are shared.

Robustness:

- The template is started, watched and restarted by the SuperExec (which the SuperNode
  starts), so it lives and dies with the SuperNode started by ``deploy/start-supernode.sh``.
- The two speak over an anonymous socket pair inherited at start: no port, no file
  name, nothing another process can connect to.
- When the template is not ready (starting, crashed, restarting), a task is launched as
  Flower does it (a plain ``flwr-clientapp`` process), so no task waits for it. A request
  whose answer is lost is reported as an unknown launch (Flower's task expiry applies)
  instead of being launched twice.
- The template refuses to fork while it runs a second Python thread, and reseeds the
  RNGs of each child that Python does not reseed itself (NumPy).

Everything is checked against Flower 1.42's SuperExec (``run_superexec.get_executor``,
``SubprocessExecutor``); on another Flower version the SuperNode refuses to start with
warm processes instead of misbehaving (run it without ``SUPERNODE_WARM_CLIENTAPP``).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

# What a fedforget ClientApp process imports from outside fedforget: loaded once, in the template.
# Two are lazy imports that a fresh process pays inside its first message (measured, 2 cores):
# torch.optim.Adam's constructor imports torch._dynamo (~3 s), and skimage's lazily loaded metrics
# import scipy.stats (~2 s) on the first PSNR/SSIM.
PRELOAD = ("numpy", "torch", "torch.optim", "torch._dynamo", "h5py", "fastmri", "fastmri.data", "fastmri.models",
           "scipy.stats", "skimage.metrics.simple_metrics", "skimage.metrics._structural_similarity",
           "flwr.app", "flwr.clientapp", "flwr.cli.install", "flwr.supernode.cli",
           "flwr.supernode.runtime.run_clientapp")
READY_TIMEOUT_S = 120.0
ANSWER_TIMEOUT_S = 10.0
MAX_QUICK_FAILURES = 5  # template deaths within QUICK_FAILURE_S of their start before giving up on it
QUICK_FAILURE_S = 30.0


class WarmStartError(RuntimeError):
    """The installed Flower is not the one whose SuperExec this module extends."""


def _log(text: str) -> None:
    print(f"fedforget warm ClientApp: {text}", file=sys.stderr, flush=True)


# --- the template (its own process) -------------------------------------------------------------------------

def serve(channel: socket.socket, preload: Sequence[str] = PRELOAD) -> None:
    """The template's life: import ``preload``, say ready, fork one child per request until the channel closes."""
    import importlib

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps finished children
    for name in preload:
        importlib.import_module(name)
    parent = os.getppid()
    lines = _Lines(channel)
    try:
        _send(channel, {"ready": True, "pid": os.getpid(), "native_threads": _native_threads()})
        while True:
            request = lines.read(timeout=1.0)
            if os.getppid() != parent or lines.closed:
                return  # the SuperExec closed the channel or is gone
            if request is not None:
                _send(channel, _fork_task(channel, request["argv"], bool(request.get("quiet"))))
    except (BrokenPipeError, ConnectionResetError):
        return  # the SuperExec went away mid-answer


def _fork_task(channel: socket.socket, argv: list[str], quiet: bool) -> dict[str, Any]:
    if threading.active_count() != 1:
        return {"error": f"template runs {threading.active_count()} Python threads: refusing to fork"}
    pid = os.fork()
    if pid:
        return {"pid": pid}
    code = 1
    try:  # the child: Flower's flwr-clientapp, as if exec'd with argv
        channel.close()
        _become_task_process(quiet)
        from flwr.supernode.cli import flwr_clientapp

        sys.argv = list(argv)
        flwr_clientapp()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:  # noqa: BLE001 - a child must never return into the template's loop
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    return {}  # unreachable


def _become_task_process(quiet: bool) -> None:
    """Reset what a fresh process would not share with its siblings."""
    for number in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL if number != signal.SIGINT else signal.default_int_handler)
    # The app is the FAB's: any fedforget module here came from the template's own start (its -m module).
    for name in [m for m in sys.modules if m == "fedforget" or m.startswith("fedforget.")]:
        del sys.modules[name]
    import numpy as np

    np.random.seed()  # Python's random reseeds itself after fork; NumPy's global generator does not
    if quiet:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)


def _native_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return -1


def _send(channel: socket.socket, payload: dict[str, Any]) -> None:
    channel.sendall((json.dumps(payload) + "\n").encode())


class _Lines:
    """JSON lines from a socket, each read with a timeout."""

    def __init__(self, channel: socket.socket) -> None:
        self.channel = channel
        self.buffer = b""
        self.closed = False

    def read(self, timeout: float) -> dict[str, Any] | None:
        """The next line, or None on timeout or end of stream (then ``closed`` is set)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            readable, _, _ = select.select([self.channel], [], [], max(0.0, deadline - time.monotonic()))
            if not readable:
                return None
            chunk = self.channel.recv(65536)
            if not chunk:
                self.closed = True
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)


# --- the SuperExec's side ----------------------------------------------------------------------------------

class Template:
    """One template process as the SuperExec sees it: started, asked to fork, restarted when it dies."""

    def __init__(self, command: Sequence[str] | None = None) -> None:
        self._command = list(command or [sys.executable, "-m", "fedforget.launch.warm_clientapp", "template"])
        self._process: subprocess.Popen | None = None
        self._channel: socket.socket | None = None
        self._lines: _Lines | None = None
        self._ready = False
        self._started_at = 0.0
        self.quick_failures = 0
        self.forks = 0

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def given_up(self) -> bool:
        return self.quick_failures >= MAX_QUICK_FAILURES

    def start(self) -> None:
        """Start a template, replacing a running one (not waiting for it: :meth:`check` sees it become ready)."""
        self.stop()
        ours, theirs = socket.socketpair()
        self._process = subprocess.Popen([*self._command, "--fd", str(theirs.fileno())], pass_fds=[theirs.fileno()],
                                         stdin=subprocess.DEVNULL)
        theirs.close()
        self._channel, self._lines, self._ready, self._started_at = ours, _Lines(ours), False, time.monotonic()

    def check(self) -> None:
        """Supervise: notice readiness, restart a dead or stuck template."""
        if self.given_up():
            return
        if self._process is None:
            self.start()
            return
        if self._process.poll() is not None:
            self._restart(f"template {self._process.pid} exited with code {self._process.returncode}")
            return
        if not self._ready:
            answer = self._read(timeout=0)
            if answer is not None and answer.get("ready"):
                self._ready = True
                _log(f"template {self._process.pid} ready ({answer.get('native_threads')} native threads)")
            elif time.monotonic() - self._started_at > READY_TIMEOUT_S:
                self._restart(f"template {self._process.pid} not ready after {READY_TIMEOUT_S:.0f} s")

    def fork(self, argv: Sequence[str], quiet: bool) -> int | None:
        """A child running ``argv`` (its PID), or None when the template is not ready (nothing was started).

        Raises:
            TimeoutError: the request went out but no answer came: a child may or may not exist.
        """
        self.check()
        if not self._ready or self._channel is None:
            return None
        try:
            _send(self._channel, {"argv": list(argv), "quiet": quiet})
        except OSError as err:
            self._restart(f"cannot reach template: {err}")
            return None
        answer = self._read(timeout=ANSWER_TIMEOUT_S)
        if answer is None:
            self._restart("template did not answer a fork request")
            raise TimeoutError("the warm ClientApp template did not answer")
        if "error" in answer:
            _log(str(answer["error"]))
            return None
        self.forks += 1
        _log(f"forked ClientApp process {answer['pid']} ({self.forks} so far)")
        return int(answer["pid"])

    def stop(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=5)
            if self._process.poll() is None:
                self._process.kill()
                self._process.wait()
        self._ready = False

    def _restart(self, reason: str) -> None:
        quick = time.monotonic() - self._started_at < QUICK_FAILURE_S
        self.quick_failures = self.quick_failures + 1 if quick else 0
        self.stop()
        if self.given_up():
            _log(f"{reason}; it failed {self.quick_failures} times in a row, so every ClientApp now starts "
                 f"cold (as plain Flower)")
            return
        _log(f"{reason}; restarting it (tasks start cold until it is ready)")
        self.start()

    def _read(self, timeout: float) -> dict[str, Any] | None:
        return self._lines.read(timeout) if self._lines is not None else None


def _flower_superexec_module() -> Any:
    """Flower 1.42's SuperExec module, checked to have what :func:`forking_executor_class` relies on.

    Raises:
        WarmStartError: another Flower version.
    """
    import importlib

    from flwr.supercore.version import package_version

    module = importlib.import_module("flwr.supercore.superexec.run_superexec")
    executors = importlib.import_module("flwr.supercore.superexec.executor.subprocess_executor")
    if not package_version.startswith("1.42.") or not hasattr(module, "get_executor") \
            or not hasattr(executors, "SubprocessExecutor"):
        raise WarmStartError(f"warm ClientApp processes extend Flower 1.42's SuperExec, but flwr is "
                             f"{package_version}: unset SUPERNODE_WARM_CLIENTAPP to run plain Flower")
    return module


def clientapp_argv(spec: Any) -> list[str]:
    """The ``flwr-clientapp`` command line Flower 1.42's ``SubprocessExecutor.launch`` builds for ``spec``."""
    argv = ["flwr-clientapp", "--runtime-api-address", spec.runtime_api_address, "--token", spec.token]
    if spec.insecure:
        argv.append("--insecure")
    elif spec.root_certificates_path is not None:
        argv += ["--root-certificates", spec.root_certificates_path]
    if spec.parent_pid is not None:
        argv += ["--parent-pid", str(spec.parent_pid)]
    if spec.runtime_dependency_install:
        argv.append("--allow-runtime-dependency-installation")
    return argv


def forking_executor_class() -> type:
    """Flower's ``SubprocessExecutor`` whose ClientApp tasks are forked from a :class:`Template`."""
    from flwr.supercore.constant import TaskType
    from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor
    from flwr.supercore.superexec.executor.types import LaunchResult

    from fedforget.strategies.trace import trace

    class ForkingExecutor(SubprocessExecutor):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.template = Template()
            self.template.start()

        def launch(self, spec: Any) -> Any:
            if spec.task_type != TaskType.CLIENT_APP:
                return super().launch(spec)
            trace("superexec_launch", task=spec.task_id)
            try:
                pid = self.template.fork(clientapp_argv(spec), spec.suppress_output)
            except TimeoutError as err:
                return LaunchResult.unknown(str(err))
            if pid is None:
                return super().launch(spec)  # cold, as Flower does it
            return LaunchResult.accepted()

        def reconcile(self) -> None:
            super().reconcile()
            self.template.check()

        def close(self) -> None:
            self.template.stop()
            super().close()

    return ForkingExecutor


def run_superexec(arguments: Sequence[str]) -> None:
    """``flower-superexec ARGUMENTS`` whose ClientApp processes are forked from a warm template.

    Raises:
        WarmStartError: the installed Flower is not 1.42.
    """
    module = _flower_superexec_module()
    executor_class = forking_executor_class()
    original = module.get_executor

    def get_executor(executor_type: Any, *args: Any, **kwargs: Any) -> Any:
        from flwr.supercore.constant import ExecutorType

        if executor_type == ExecutorType.SUBPROCESS:
            return executor_class()
        return original(executor_type, *args, **kwargs)

    module.get_executor = get_executor
    from flwr.supercore.cli.flower_superexec import flower_superexec

    sys.argv = ["flower-superexec", *arguments]
    flower_superexec()


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["superexec"]:
        run_superexec(args[1:])
        return
    if args[:1] == ["template"]:
        import argparse

        parser = argparse.ArgumentParser(prog="python -m fedforget.launch.warm_clientapp template")
        parser.add_argument("--fd", type=int, required=True, help="the socket inherited from the SuperExec")
        parser.add_argument("--preload", default=",".join(PRELOAD), help="comma-separated modules to import")
        options = parser.parse_args(args[1:])
        serve(socket.socket(fileno=options.fd), [name for name in options.preload.split(",") if name])
        return
    sys.exit("usage: python -m fedforget.launch.warm_clientapp template --fd N [--preload M,...] | "
             "superexec FLOWER_SUPEREXEC_ARGS")


if __name__ == "__main__":
    main()
