"""Driving Flower's own processes: a SuperLink we own (by PID), ``flwr run``, and the run's real status.

``flwr run`` exits 0 even when the run failed, and its managed local SuperLink
outlives it with the environment of whoever started it first. fedforget therefore
starts its own SuperLink on a free port with a private ``FLWR_HOME``, stops it by
PID, and reads the run's status from ``flwr ls``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import tomli_w

from fedforget.configs.compose import RESOLVED_CONFIG

FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    # The SuperLink would otherwise `uv sync` the app's dependencies, which fails offline.
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "PYTHONUNBUFFERED": "1",
}


def flower_bin(name: str) -> str:
    """A Flower executable from this interpreter's environment (never a stray one on PATH)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def flower_env(flwr_home: Path) -> dict[str, str]:
    # RAY_TMPDIR marks every process of this Flower home (Ray's too), so leftovers can be found by PID.
    env = {**os.environ, **FLOWER_ENV, "FLWR_HOME": str(flwr_home), "RAY_TMPDIR": str(flwr_home / "ray")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.args[0]} exited with code {process.returncode} before "
                               f"listening on {host}:{port}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


def stop_process(process: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop a process we started (and its process group) by PID: SIGTERM, then SIGKILL."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(grace)


def write_connection(flwr_home: Path, name: str, address: str, root_certificates: Path | None = None) -> None:
    """Write a SuperLink connection into ``$FLWR_HOME/config.toml`` (never into pyproject.toml)."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    config = {"superlink": {"default": name}}
    if path.is_file():
        import tomli

        config = tomli.loads(path.read_text())
        config.setdefault("superlink", {})["default"] = name
    entry: dict[str, object] = {"address": address}
    if root_certificates is None:
        entry["insecure"] = True
    else:
        entry["root-certificates"] = str(root_certificates)
    config["superlink"][name] = entry
    path.write_text(tomli_w.dumps(config))


def processes_of(flwr_home: Path) -> list[int]:
    """PIDs of live processes started with this Flower home (their environment names it)."""
    marker = f"FLWR_HOME={flwr_home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def stop_leftovers(flwr_home: Path, grace: float = 5.0) -> list[int]:
    """Stop, by PID, every process still running with this Flower home (Ray workers of a killed run)."""
    return stop_pids(processes_of(flwr_home), grace)


def descendants(pid: int) -> list[int]:
    """PIDs of every live process below ``pid`` in the process tree (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def stop_pids(pids: Sequence[int], grace: float = 5.0) -> list[int]:
    """SIGTERM the given processes, SIGKILL those still alive after ``grace`` s; returns any that survived."""
    pids = list(pids)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while (pids := [p for p in pids if Path(f"/proc/{p}").exists() and not _is_zombie(p)]) and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        if not pids:
            break
    return pids


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


@dataclass
class SuperLink:
    """A running ``flower-superlink`` process we own."""

    process: subprocess.Popen
    port: int
    flwr_home: Path
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextmanager
def simulation_superlink(flwr_home: Path, log_path: Path, connection: str = "fedforget-sim") -> Iterator[SuperLink]:
    """A private simulation SuperLink for the duration of the block, stopped by PID afterwards."""
    port = free_port()
    env = flower_env(flwr_home)
    command = [flower_bin("flower-superlink"), "--insecure", "--simulation", "--host", "127.0.0.1",
               "--port", str(port), "--disable-runtime-dependency-installation"]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    link = SuperLink(process, port, flwr_home, log_path)
    try:
        wait_for_port("127.0.0.1", port, 30.0, process)
        write_connection(flwr_home, connection, link.address)
        yield link
    finally:
        stop_process(process)
        stop_leftovers(flwr_home)


APP_TOP_FILES = ("pyproject.toml", ".gitignore", "README.md", "LICENSE")


def stage_app(project_dir: Path, staging: Path, packages: Sequence[str] = ("fedforget",)) -> Path:
    """A copy of the Flower app's own files, for ``flwr run`` to package.

    ``flwr run DIR`` first walks and resolves every file under DIR, then filters
    (Flower 1.42's ``collect_files``): with the ``.venv`` inside the checkout that is
    ~47,000 files and 6-9 s per run on 2 cores. The copy holds pyproject.toml and the
    package sources only, a superset of what the FAB contains (Flower filters again).

    Args:
        project_dir: the checkout with pyproject.toml.
        staging: an empty or scratch folder; ``staging/app`` is replaced.
        packages: the package folders the app's components import.

    Returns:
        The folder to pass to ``flwr run``.
    """
    app = staging / "app"
    if app.exists():
        shutil.rmtree(app)
    app.mkdir(parents=True)
    for name in APP_TOP_FILES:
        if (project_dir / name).is_file():
            shutil.copy2(project_dir / name, app / name)
    for package in packages:
        shutil.copytree(project_dir / package, app / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    return app


def write_run_config(path: Path, experiment: str, overrides: Sequence[str], output_dir: Path,
                     resolved: str = "") -> Path:
    """The run config as a TOML file (robust against quotes and brackets in overrides).

    ``resolved`` is the composed experiment's frozen form (``configs.compose.resolved_form``): the
    run's processes rebuild the experiment from it instead of composing ``overrides`` again.
    """
    payload = {"experiment": experiment, "overrides": " ".join(overrides), "output-dir": str(output_dir),
               RESOLVED_CONFIG: resolved}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(payload))
    return path


def flwr_run(app_dir: Path, connection: str, run_config: Path, flwr_home: Path, stream_to: Sequence[IO[str]],
             federation_config: str | None = None) -> tuple[int, str | None]:
    """Submit the app with ``flwr run --stream``; returns (exit code, run id) — not the run's outcome."""
    command = [flower_bin("flwr"), "run", str(app_dir), connection, "--stream", "--run-config", str(run_config)]
    if federation_config:
        command += ["--federation-config", federation_config]
    # Its own session: a signal to fedforget reaches it through stop_process, never half-way through a line.
    process = subprocess.Popen(command, env=flower_env(flwr_home), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
    run_id = None
    assert process.stdout is not None
    try:
        for line in process.stdout:
            if run_id is None and "Successfully started run" in line:
                run_id = line.rsplit(" ", 1)[-1].strip()
            for sink in stream_to:
                sink.write(line)
                sink.flush()
        return process.wait(), run_id
    finally:
        stop_process(process)  # a no-op after a normal exit; stops it when the caller is interrupted


def run_status(connection: str, flwr_home: Path, run_id: str | None) -> dict[str, str]:
    """Flower's record of a run: ``status`` (e.g. finished:completed / finished:failed) and details."""
    command = [flower_bin("flwr"), "ls", connection, "--format", "json"]
    if run_id:
        command += ["--run-id", run_id]
    done = subprocess.run(command, env=flower_env(flwr_home), capture_output=True, text=True, timeout=60)
    try:
        runs = json.loads(done.stdout).get("runs", [])
    except ValueError:
        return {"status": "unknown", "status-details": (done.stdout + done.stderr).strip()[-500:]}
    if run_id:
        runs = [r for r in runs if str(r.get("run-id")) == str(run_id)]
    if not runs:
        return {"status": "unknown", "status-details": "flwr ls lists no such run"}
    return {k: str(runs[-1].get(k, "")) for k in ("run-id", "status", "status-details")}


