"""Running across machines: a SuperLink, one SuperNode per site, site registration, and submitting a run.

The shell scripts in ``deploy/`` are what people run; this module holds the logic
they share with the tests:

- :func:`start_superlink` / :func:`start_supernode` start ``deploy/start-*.sh`` (which
  ``exec`` Flower, so the PID we keep is Flower's) in their own session and wait
  until they are usable; stop them with :func:`fedforget.launch.flower.stop_process`.
- :func:`connect` writes a SuperLink connection into ``$FLWR_HOME/config.toml``.
- :func:`register_site` registers a site's public key with a SuperLink that
  authenticates SuperNodes.
- :func:`submit` runs ``flwr run --stream`` and returns the run's *real* outcome:
  ``flwr run`` exits 0 even when the run failed, so Flower's own record
  (``flwr ls``) and the run folder's ``status.json`` must both say completed.
- ``python -m fedforget.launch.deploy supernode [--poll-seconds S] [--warm-clientapp] -- ARGS``
  is ``flower-supernode ARGS`` polling the SuperLink every S seconds instead of
  Flower 1.42's fixed 3 s (not configurable there), and with ``--warm-clientapp``
  forking each message's ClientApp process from a template that imported torch and
  Flower once (:mod:`fedforget.launch.warm_clientapp`).
- ``python -m fedforget.launch.deploy supervise -- COMMAND`` runs a Flower process
  so that a SIGTERM / SIGINT to *this* PID stops it and everything it started
  (Flower's SuperNode leaves its ``flower-superexec`` running when signalled alone).

Run ``python -m fedforget.launch.deploy --help`` for the command line the scripts use.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from fedforget.launch.flower import (
    descendants,
    flower_bin,
    flower_env,
    flwr_run,
    run_status,
    stage_app,
    stop_pids,
    stop_process,
    wait_for_port,
    write_connection,
    write_run_config,
)
from fedforget.launch.outcome import RunOutcome, read_outcome
from fedforget.launch.signals import Interrupted, stop_on_signals
from fedforget.launch.watch import watched_run
from fedforget.strategies.trace import trace, tracing

PROJECT_DIR = Path(__file__).resolve().parents[2]
DEPLOY_DIR = PROJECT_DIR / "deploy"
DEFAULT_SUPERLINK_PORT = 9092
# Printed by flower-supernode once the SuperLink accepted it (after registration / activation).
_NODE_ID = re.compile(r"SuperNode ID: (\d+)")
# flwr supernode register, when the key is registered already (Flower's ApiError 23).
_KEY_IN_USE = "Public key already in use"


class DeployError(RuntimeError):
    """A deployment step that failed; the message names the file, site or host and what was expected."""


def default_flwr_home() -> Path:
    """Where the ``flwr`` CLI keeps its connections: ``$FLWR_HOME``, else ``~/.flwr`` (as Flower does)."""
    return Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr").expanduser()


def deploy_script(name: str) -> Path:
    """A script of ``deploy/`` in the source checkout.

    Raises:
        DeployError: the checkout has no such script (fedforget installed without its sources).
    """
    path = DEPLOY_DIR / name
    if not path.is_file():
        raise DeployError(f"{path} does not exist: the deploy scripts live in the source checkout "
                          f"(install fedforget with `pip install -e .` from the repository)")
    return path


@dataclass
class Process:
    """A Flower process we started (by PID, in its own session) and the file it logs to."""

    name: str
    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        """Everything the process printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM to its process group (Flower's own children included), then SIGKILL."""
        stop_process(self.process)


def _spawn(name: str, command: Sequence[str], env: dict[str, str], log_path: Path) -> Process:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        # A new session: the process and every child it starts form one group we can stop by PID.
        process = subprocess.Popen(list(command), env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    return Process(name, process, log_path)


def start_superlink(cert_dir: Path | None, port: int, flwr_home: Path, log_path: Path, host: str = "127.0.0.1",
                    database: Path | None = None, timeout: float = 60.0) -> Process:
    """``deploy/start-superlink.sh`` (TLS + SuperNode authentication, or insecure when ``cert_dir`` is None).

    Args:
        cert_dir: folder with ``ca.crt``, ``server.pem``, ``server.key`` (deploy/make-certs.sh), or None.
        port: the one port of the Fleet, Control and Runtime APIs.
        flwr_home: the SuperLink's ``FLWR_HOME`` (installed apps).
        log_path: where its output goes.
        host: address to listen on.
        database: state file (keeps registrations across restarts); None keeps state in memory.
        timeout: seconds to wait for the port to open.

    Returns:
        The running SuperLink; stop it with ``.stop()``.

    Raises:
        DeployError: it exited or did not listen within ``timeout`` (the message holds its log's end).
    """
    env = {**flower_env(flwr_home), "SUPERLINK_HOST": host}
    if database is not None:
        env["SUPERLINK_DATABASE"] = str(database)
    first = str(cert_dir) if cert_dir is not None else "--insecure"
    link = _spawn("superlink", ["bash", str(deploy_script("start-superlink.sh")), first, str(port)], env, log_path)
    try:
        wait_for_port(host, port, timeout, link.process)
    except (RuntimeError, TimeoutError) as err:
        link.stop()
        raise DeployError(f"the SuperLink on {host}:{port} did not start: {err}\n{_tail(link.log())}") from err
    return link


def start_supernode(superlink: str, site: str, data_path: Path, flwr_home: Path, log_path: Path,
                    runtime_port: int, ca_cert: Path | None = None, key: Path | None = None,
                    poll_seconds: float | None = None, max_wait: float | None = None,
                    warm_clientapp: bool = False) -> Process:
    """``deploy/start-supernode.sh`` for one site (returns at once; see :func:`wait_for_node_id`).

    Args:
        superlink: the SuperLink's ``host:port``.
        site: the site's name in the experiment (goes into ``--node-config site=...``).
        data_path: absolute folder with the site's ``train/`` and ``test/``.
        flwr_home: the SuperNode's ``FLWR_HOME`` (where it installs the apps it runs).
        log_path: where its output goes.
        runtime_port: the node's local Runtime API port (one per SuperNode on a machine).
        ca_cert: the CA certificate that signed the SuperLink's (TLS); None connects insecurely.
        key: the site's private key (node authentication); required with ``ca_cert``.
        poll_seconds: poll the SuperLink every this many seconds instead of Flower's 3 s.
        max_wait: give up after this many seconds without reaching the SuperLink.
        warm_clientapp: fork each message's ClientApp process from a warm template
            (``SUPERNODE_WARM_CLIENTAPP=1``; see :mod:`fedforget.launch.warm_clientapp`).

    Returns:
        The SuperNode process; stop it with ``.stop()``.
    """
    if (ca_cert is None) != (key is None):
        raise DeployError(f"site {site}: give both the CA certificate and the private key (TLS + node "
                          f"authentication) or neither (insecure), not only {ca_cert or key}")
    env = {**flower_env(flwr_home), "SUPERNODE_PORT": str(runtime_port)}
    if poll_seconds is not None:
        env["SUPERNODE_POLL_SECONDS"] = f"{poll_seconds:g}"
    if max_wait is not None:
        env["SUPERNODE_MAX_WAIT"] = f"{max_wait:g}"
    if warm_clientapp:
        env["SUPERNODE_WARM_CLIENTAPP"] = "1"
    command = ["bash", str(deploy_script("start-supernode.sh")), superlink, site, str(data_path)]
    if ca_cert is not None and key is not None:
        command += [str(ca_cert), str(key)]
    return _spawn(f"supernode {site}", command, env, log_path)


def wait_for_node_id(node: Process, timeout: float = 60.0) -> int:
    """The node id the SuperLink gave a SuperNode, once it connected.

    Raises:
        DeployError: the SuperNode exited (e.g. its key is not registered) or did not
            connect within ``timeout``; the message holds its log's end.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if match := _NODE_ID.search(node.log()):
            return int(match.group(1))
        if not node.running():
            raise DeployError(f"{node.name} exited with code {node.process.returncode} before connecting:\n"
                              f"{_tail(node.log())}")
        time.sleep(0.2)
    raise DeployError(f"{node.name} did not connect within {timeout:.0f} s:\n{_tail(node.log())}")


def wait_for_warm_template(node: Process, timeout: float = 120.0) -> None:
    """Until a SuperNode started with ``warm_clientapp`` has its template ready (torch and Flower imported).

    Until then its ClientApp processes start cold, which is correct but slow; benchmarks and
    tests wait so that every message they time is a warm one.

    Raises:
        DeployError: the SuperNode exited, or its template was not ready within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(r"warm ClientApp: template \d+ ready", node.log()):
            return
        if not node.running():
            raise DeployError(f"{node.name} exited with code {node.process.returncode}:\n{_tail(node.log())}")
        time.sleep(0.2)
    raise DeployError(f"{node.name}: warm ClientApp template not ready within {timeout:.0f} s:\n{_tail(node.log())}")


def connect(flwr_home: Path, name: str, address: str, ca_cert: Path | None = None) -> Path:
    """Write (or replace) the SuperLink connection ``name`` in ``$FLWR_HOME/config.toml`` and make it the default.

    Never into pyproject.toml: ``flwr run`` migrates ``[tool.flwr.federations]`` out of it.

    Raises:
        DeployError: the address is not ``host:port`` or the CA certificate does not exist.
    """
    if not re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}", address):
        raise DeployError(f"SuperLink address {address!r} must be host:port (e.g. superlink.example.org:9092)")
    if ca_cert is not None:
        ca_cert = ca_cert.expanduser().resolve()
        if not ca_cert.is_file():
            raise DeployError(f"CA certificate {ca_cert} does not exist (expected ca.crt from deploy/make-certs.sh)")
    write_connection(flwr_home, name, address, ca_cert)
    return flwr_home / "config.toml"


def register_site(connection: str, site: str, key_dir: Path, flwr_home: Path) -> int | None:
    """Register ``key_dir/site.pub`` with the SuperLink of ``connection`` under the name ``site``.

    Returns:
        The node id the SuperLink reserved for the key, or None when the key was registered already.

    Raises:
        DeployError: the public key is missing, or the SuperLink refused it (the reason is Flower's).
    """
    public_key = key_dir.expanduser().resolve() / f"{site}.pub"
    if not public_key.is_file():
        raise DeployError(f"{public_key} does not exist (make it with deploy/make-site-key.sh {key_dir} {site})")
    command = [flower_bin("flwr"), "supernode", "register", str(public_key), connection, "--name", site,
               "--format", "json"]
    done = subprocess.run(command, env=flower_env(flwr_home), capture_output=True, text=True, timeout=120)
    output = (done.stdout + done.stderr).strip()
    if _KEY_IN_USE in output:
        return None
    if done.returncode == 0:
        try:
            return int(json.loads(done.stdout[done.stdout.index("{"):])["node-id"])
        except (ValueError, KeyError):
            pass
    raise DeployError(f"registering {public_key} for site {site} on connection {connection!r} failed "
                      f"(exit {done.returncode}): {_tail(output, 1500)}")


def submit(connection: str, output_dir: Path, experiment: str, overrides: Sequence[str], flwr_home: Path,
           stream_to: Sequence[IO[str]] = (), app_dir: Path = PROJECT_DIR, watch: bool = False,
           verbose: bool = False) -> RunOutcome:
    """Submit the fedforget app to a running SuperLink and wait for the run's real outcome.

    Args:
        connection: a connection name in ``$FLWR_HOME/config.toml`` (see :func:`connect`).
        output_dir: the run folder; written by the ServerApp on the SuperLink machine.
        experiment: the Hydra experiment name.
        overrides: Hydra overrides (paths in them are read on the machine that uses them).
        flwr_home: the ``FLWR_HOME`` holding the connection.
        stream_to: where the run's log goes while it runs (besides ``output_dir/flwr.log``).
        app_dir: the checkout whose app ``flwr run`` packages (its pyproject.toml and package).
        watch: show the run's progress on the console (as ``fedforget run`` does) and Flower's errors.
        verbose: with ``watch``, also show every line of Flower's log.

    Returns:
        The outcome; ``.completed`` only if Flower and the run folder both say completed.
    """
    output_dir = output_dir.expanduser().resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    run_config = write_run_config(output_dir / "run-config.toml", experiment, overrides, output_dir)
    with tempfile.TemporaryDirectory(prefix="fedforget-app-") as staging, \
            open(output_dir / "flwr.log", "a") as log:
        app = stage_app(app_dir, Path(staging))  # flwr run would walk the checkout's .venv too
        with watched_run(output_dir, verbose) if watch else nullcontext() as console:
            sinks = [log, *stream_to, *([console] if console else [])]
            code, run_id = flwr_run(app, connection, run_config, flwr_home, sinks)
    flower = run_status(connection, flwr_home, run_id) if run_id else {"status": "not-started"}
    return read_outcome(output_dir, code, run_id, flower)


def _tail(text: str, limit: int = 3000) -> str:
    return text[-limit:].strip()


# --- the patched SuperNode launcher -------------------------------------------------------------------------

class _CappedSleep:
    """Stands in for the ``time`` module inside Flower's SuperNode loop, capping every sleep.

    Flower 1.42's SuperNode waits a fixed ``time.sleep(3)`` between polls for work and
    ``time.sleep(0.5)`` while waiting for the ClientApp's reply; both are plain polling
    waits, so shortening them changes latency and request rate only.
    """

    def __init__(self, seconds: float) -> None:
        import time as real_time

        self._time = real_time
        self._seconds = seconds

    def sleep(self, seconds: float) -> None:
        self._time.sleep(min(seconds, self._seconds))

    def __getattr__(self, name: str) -> object:
        return getattr(self._time, name)


class _TraceHandler(logging.Handler):
    """Turns the SuperNode's own log lines about a message into trace events (``$FEDFORGET_TRACE``)."""

    EVENTS = {"Receiving:": "node_receiving", "Received successfully": "node_received",
              "Sending:": "node_sending", "Sent successfully": "node_sent"}

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        for prefix, event in self.EVENTS.items():
            if text.startswith(prefix):
                trace(event, when=record.created, text=text)


class _SuperExecLauncher:
    """Stands in for the ``subprocess`` module inside Flower's SuperNode loop: its one ``Popen`` starts
    ``flower-superexec``, which becomes the SuperExec of :mod:`fedforget.launch.warm_clientapp` (same arguments)."""

    def __getattr__(self, name: str) -> object:
        return getattr(subprocess, name)

    def Popen(self, command: Sequence[str], *args: object, **kwargs: object) -> subprocess.Popen:  # noqa: N802
        if list(command[:1]) != ["flower-superexec"]:
            raise DeployError(f"the SuperNode started {list(command)}, not flower-superexec: "
                              f"unset SUPERNODE_WARM_CLIENTAPP on this Flower version")
        warm = [sys.executable, "-m", "fedforget.launch.warm_clientapp", "superexec", *command[1:]]
        return subprocess.Popen(warm, *args, **kwargs)  # type: ignore[call-overload]


def run_supernode(poll_seconds: float | None, arguments: Sequence[str], warm_clientapp: bool = False) -> None:
    """``flower-supernode ARGUMENTS`` in this process, polling every ``poll_seconds`` and/or with warm ClientApps.

    Raises:
        DeployError: the installed Flower does not have the loop this patches (a version other than 1.42).
    """
    if poll_seconds is not None and not 0.01 <= poll_seconds <= 60:
        raise DeployError(f"--poll-seconds {poll_seconds} must be between 0.01 and 60")
    import flwr.supernode.start_client_internal as loop
    from flwr.supercore.version import package_version
    from flwr.supernode.cli import flower_supernode

    # The patches rely on that module's `import time` / `import subprocess`, plain polling sleeps and one
    # Popen of flower-superexec, read in 1.42's source.
    if not package_version.startswith("1.42.") or getattr(loop, "time", None) is not time \
            or getattr(loop, "subprocess", None) is not subprocess:
        raise DeployError(f"SUPERNODE_POLL_SECONDS and SUPERNODE_WARM_CLIENTAPP patch Flower 1.42's SuperNode "
                          f"loop, but flwr is {package_version}: unset them to run the plain flower-supernode")
    if poll_seconds is not None:
        loop.time = _CappedSleep(poll_seconds)  # type: ignore[assignment]
        # The SuperNode's SuperExec (a separate process) polls for ClientApp tasks; Flower reads this variable.
        os.environ.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", f"{poll_seconds:g}")
    if warm_clientapp:
        loop.subprocess = _SuperExecLauncher()  # type: ignore[assignment]
    if tracing():
        logging.getLogger("flwr").addHandler(_TraceHandler())
    sys.argv = ["flower-supernode", *arguments]
    flower_supernode()


def supervise(command: Sequence[str], grace: float = 10.0) -> int:
    """Run ``command`` and, on SIGTERM / SIGINT, stop it and every process it started, by PID.

    ``deploy/start-*.sh`` exec this, so whoever stops the script's PID (systemd, Slurm, a
    person) stops the whole Flower process tree: the SuperNode's ``flower-superexec`` and the
    SuperLink's (which Flower starts in a session of its own), and their ClientApps / ServerApps.

    Returns:
        The command's exit code, or 128 + the signal number when it was stopped.
    """
    process: subprocess.Popen | None = None
    with stop_on_signals():
        try:
            process = subprocess.Popen(list(command), start_new_session=True)
            return process.wait()
        except Interrupted as stop:
            if process is not None:
                tree = descendants(process.pid)  # before the parent goes: orphans leave its tree
                stop_process(process, grace)
                stop_pids(tree, grace)
            return stop.exit_code


# --- command line (used by deploy/*.sh) ---------------------------------------------------------------------

def _cmd_submit(args: argparse.Namespace) -> int:
    from fedforget.launch.runner import split_experiment

    experiment, overrides = split_experiment(args.overrides)
    if not any(argument.startswith("experiment=") for argument in args.overrides):
        print("error: name the experiment: experiment=NAME (e.g. experiment=smoke)", file=sys.stderr)
        return 2
    from fedforget.configs.compose import ConfigError, load_experiment

    try:
        load_experiment(experiment, overrides)  # a bad config fails here, before anything is submitted
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    outcome = submit(args.connection, Path(args.output_dir), experiment, overrides, default_flwr_home(),
                     watch=True, verbose=args.verbose)
    print(f"fedforget: {outcome.describe()}", file=sys.stdout if outcome.completed else sys.stderr, flush=True)
    return 0 if outcome.completed else 1


def _cmd_connect(args: argparse.Namespace) -> int:
    home = default_flwr_home()
    path = connect(home, args.name, args.address, Path(args.ca_cert) if args.ca_cert else None)
    security = f"TLS, CA {Path(args.ca_cert).resolve()}" if args.ca_cert else "INSECURE (no TLS)"
    print(f"wrote connection {args.name!r} -> {args.address} ({security}) to {path}")
    return 0


def _cmd_register(args: argparse.Namespace) -> int:
    node_id = register_site(args.connection, args.site, Path(args.key_dir), default_flwr_home())
    if node_id is None:
        print(f"site {args.site}: {Path(args.key_dir) / (args.site + '.pub')} is registered already")
    else:
        print(f"site {args.site}: registered as node {node_id}")
    return 0


def _cmd_supernode(args: argparse.Namespace) -> int:
    arguments = list(args.arguments)
    if arguments[:1] == ["--"]:
        arguments = arguments[1:]
    run_supernode(args.poll_seconds, arguments, args.warm_clientapp)
    return 0


def _cmd_supervise(args: argparse.Namespace) -> int:
    arguments = list(args.arguments)
    if arguments[:1] == ["--"]:
        arguments = arguments[1:]
    if not arguments:
        raise DeployError("supervise needs a command after --")
    return supervise(arguments)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fedforget.launch.deploy",
                                     description="fedforget across machines (used by the deploy/ scripts)")
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("submit", help="run an experiment on a SuperLink and check its real outcome")
    sub.add_argument("connection")
    sub.add_argument("output_dir", help="run folder (absolute; written on the SuperLink machine)")
    sub.add_argument("overrides", nargs="+", help="experiment=NAME and Hydra overrides")
    sub.add_argument("--verbose", action="store_true", help="also print Flower's own log (always in flwr.log)")
    sub.set_defaults(func=_cmd_submit)
    sub = commands.add_parser("connect", help="write a SuperLink connection into $FLWR_HOME/config.toml")
    sub.add_argument("name")
    sub.add_argument("address", help="host:port")
    sub.add_argument("ca_cert", nargs="?", help="CA certificate (omit for an insecure connection)")
    sub.set_defaults(func=_cmd_connect)
    sub = commands.add_parser("register", help="register KEY_DIR/SITE.pub with the SuperLink")
    sub.add_argument("connection")
    sub.add_argument("site")
    sub.add_argument("key_dir")
    sub.set_defaults(func=_cmd_register)
    sub = commands.add_parser("supernode", help="flower-supernode with a shorter polling interval / warm ClientApps")
    sub.add_argument("--poll-seconds", type=float, help="poll the SuperLink every S seconds (Flower: 3)")
    sub.add_argument("--warm-clientapp", action="store_true",
                     help="fork each ClientApp process from a template with torch and Flower imported")
    sub.add_argument("arguments", nargs=argparse.REMAINDER, help="-- then flower-supernode's arguments")
    sub.set_defaults(func=_cmd_supernode)
    sub = commands.add_parser("supervise", help="run a Flower process; a signal to this PID stops its whole tree")
    sub.add_argument("arguments", nargs=argparse.REMAINDER, help="-- then the command")
    sub.set_defaults(func=_cmd_supervise)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except DeployError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
