"""Deployed exchanges: where one exchange's time goes, and a shrunk demo deployed vs simulated.

A real deployment on loopback, as ``deploy/README.md`` sets it up: a SuperLink with TLS
and SuperNode authentication, two registered SuperNodes (one per site of the smoke
experiment), ``deploy/submit.sh``-equivalent submission. Every process records
timestamps (``$FEDFORGET_TRACE``, see ``fedforget.strategies.trace``): the ServerApp when
it pushed a message and pulled its reply, the SuperNode when it received and sent it,
the ClientApp process when it was created, imported the app, and ran its handler.
Each message's time is split into those parts.

The same shrunk experiment then runs as a simulation with the same seed, and the
checkpoints of both runs (original, oracle, each method) are compared tensor by tensor.

``python -m bench.deployment [--poll 0.1] [--cold] [overrides...]``
(run it under ``flock /tmp/cpu.lock``: it starts ~6 processes on the machine's cores).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from bench.common import write_result
from fedforget.configs.compose import load_experiment
from fedforget.data.synthetic import prepare_synthetic_data
from fedforget.launch.deploy import (
    DEPLOY_DIR,
    Process,
    connect,
    register_site,
    start_superlink,
    start_supernode,
    submit,
    wait_for_node_id,
    wait_for_warm_template,
)
from fedforget.launch.flower import flower_env, free_port
from fedforget.learning.checkpoints import load_checkpoint
from fedforget.strategies.trace import TRACE_ENV, read_traces

REPO = Path(__file__).resolve().parents[1]
SITES = ("brain-0", "knee-0")
# The deployed tests' workload: every phase runs (train, oracle, unlearn, evaluate), one method.
SHRUNK = ["unlearning.methods=[ft]", "federation.rounds=2", "federation.eval_every=2", "unlearning.steps=2",
          "federation.timeout_s=300", "report.figures=false"]
# The milestones of one message, and what the time until each one (from the one before) is spent on.
# Parts overlap in places (the SuperNode creates the task before it downloads the message, so the
# ClientApp process starts while the arrays still arrive); each message's milestones are taken in
# time order, so its parts add up to its total.
MILESTONES = {
    "server_pushed": "ServerApp pushes the message (and its arrays) to the SuperLink",
    "node_receiving": "SuperNode polls the SuperLink and gets the message",
    "clientapp_process_start": "SuperExec polls for the task and starts (or forks) the ClientApp process",
    "node_received": "SuperNode downloads the message's objects",
    "clientapp_import_start": "Flower's flwr-clientapp: imports, Runtime API, message + FAB pull, FAB install",
    "clientapp_import_end": "importing fedforget.clients.client_app",
    "handler_start": "Flower dispatches to the handler",
    "config_ready": "the experiment config from the run config",
    "runtime_ready": "site runtime: site resolved, model and loss built",
    "handler_end": "the work: data loading and the computation, reply arrays built",
    "node_sending": "ClientApp pushes the reply to the SuperNode, which polls for it",
    "node_sent": "SuperNode uploads the reply to the SuperLink",
    "server_pulled": "ServerApp polls for the reply and pulls it",
}


def run(command: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> str:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{command} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


@contextlib.contextmanager
def federation(root: Path, data_root: Path, poll_seconds: float, warm: bool) -> Iterator[Path]:
    """SuperLink (TLS + node auth) and one registered SuperNode per site; yields the coordinator's FLWR_HOME."""
    certs, keys, coordinator = root / "certs", root / "keys", root / "homes" / "coordinator"
    env = flower_env(coordinator)
    run(["bash", str(DEPLOY_DIR / "make-certs.sh"), str(certs), "127.0.0.1"], env)
    for site in SITES:
        run(["bash", str(DEPLOY_DIR / "make-site-key.sh"), str(keys), site], env)
    processes: list[Process] = []
    try:
        port = free_port()
        processes.append(start_superlink(certs, port, root / "homes" / "superlink", root / "superlink.log"))
        connect(coordinator, "bench", f"127.0.0.1:{port}", certs / "ca.crt")
        for site in SITES:
            register_site("bench", site, keys, coordinator)
        nodes = [start_supernode(f"127.0.0.1:{port}", site, data_root / site, root / "homes" / site,
                                 root / f"{site}.log", free_port(), certs / "ca.crt", keys / site,
                                 poll_seconds=poll_seconds, warm_clientapp=warm)
                 for site in SITES]
        processes.extend(nodes)
        for node in nodes:
            wait_for_node_id(node)
            if warm:
                wait_for_warm_template(node)
        yield coordinator
    finally:
        for process in processes:
            process.stop()


def exchange_parts(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per answered message: its type, total seconds, seconds until each milestone, its timeline."""
    by_pid: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_pid[event["pid"]].append(event)
    handlers = {e["id"]: e for e in events if e["event"] == "handler_start"}
    pulled = {e["reply_to"]: e for e in events if e["event"] == "server_pulled"}
    receiving = {e["text"].rsplit("ID: ", 1)[-1].rstrip(")"): e for e in events if e["event"] == "node_receiving"}
    rows = []
    for push in (e for e in events if e["event"] == "server_pushed"):
        start = _last_before(by_pid[push["pid"]], "server_push_start", push["t"])
        for sent in push["messages"]:
            message_id = sent["id"]
            if start is None or not {message_id} <= handlers.keys() & pulled.keys() & receiving.keys():
                continue  # a failed or unanswered message has no complete timeline
            app = by_pid[handlers[message_id]["pid"]]
            node = receiving[message_id]
            found = {"server_pushed": push["t"], "server_pulled": pulled[message_id]["t"], "node_receiving": node["t"]}
            found.update({e["event"]: e["t"] for e in app if e["event"] in MILESTONES
                          and (e["event"] != "handler_end" or e.get("id") == message_id)})
            later = [e for e in by_pid[node["pid"]] if e["t"] >= node["t"]]
            found["node_received"] = next((e["t"] for e in later if e["event"] == "node_received"), None)
            after = found.get("handler_end", float("inf"))
            for name in ("node_sending", "node_sent"):
                found[name] = next((e["t"] for e in later if e["event"] == name and e["t"] >= after), None)
            if any(found.get(name) is None for name in MILESTONES):
                continue
            ordered = sorted(MILESTONES, key=lambda name: found[name])
            row: dict[str, Any] = {"type": sent["type"], "total": found["server_pulled"] - start}
            previous = start
            for name in ordered:
                row[name] = found[name] - previous
                previous = found[name]
            row["timeline"] = {name: round(found[name] - start, 3) for name in ordered}
            row["data_read"] = next((e.get("read_seconds", 0.0) for e in app
                                     if e["event"] == "handler_end" and e.get("id") == message_id), 0.0)
            rows.append(row)
    return rows


def _last_before(events: list[dict[str, Any]], name: str, when: float) -> float | None:
    times = [e["t"] for e in events if e["event"] == name and e["t"] <= when]
    return max(times) if times else None


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and median seconds until each milestone, over all messages and per message type."""
    def stats(chosen: list[dict[str, Any]]) -> dict[str, Any]:
        keys = [*MILESTONES, "data_read", "total"]
        return {"messages": len(chosen),
                "mean": {k: statistics.fmean(r[k] for r in chosen) for k in keys},
                "median": {k: statistics.median(r[k] for r in chosen) for k in keys},
                "example_timeline": chosen[len(chosen) // 2]["timeline"]}

    result = {"all": stats(rows)} if rows else {"all": {"messages": 0}}
    for kind in sorted({r["type"] for r in rows}):
        result[kind] = stats([r for r in rows if r["type"] == kind])
    return result


def round_seconds(events: list[dict[str, Any]]) -> list[float]:
    """Wall seconds of each round of messages: the server's push until its last reply."""
    pulled = {e["reply_to"]: e["t"] for e in events if e["event"] == "server_pulled"}
    rounds = []
    for push in (e for e in events if e["event"] == "server_pushed"):
        replies = [pulled[m["id"]] for m in push["messages"] if m["id"] in pulled]
        if len(replies) == len(push["messages"]):
            rounds.append(max(replies) - push["t"])
    return rounds


def deployed_run(scratch: Path, data_root: Path, overrides: list[str], poll: float, warm: bool
                 ) -> dict[str, Any]:
    trace_dir = scratch / "trace"
    trace_dir.mkdir()
    os.environ[TRACE_ENV] = str(trace_dir)  # inherited by the SuperLink, SuperNodes and their children
    try:
        with federation(scratch / "federation", data_root, poll, warm) as coordinator:
            started = time.perf_counter()
            outcome = submit("bench", scratch / "deployed", "smoke", overrides, coordinator)
            wall = time.perf_counter() - started
    finally:
        os.environ.pop(TRACE_ENV, None)
    if not outcome.completed:
        raise RuntimeError(f"deployed run failed: {outcome.describe()}")
    events = read_traces(trace_dir)
    rows = exchange_parts(events)
    rounds = round_seconds(events)
    logs = "".join((scratch / "federation" / f"{site}.log").read_text(errors="replace") for site in SITES)
    return {"wall_seconds": wall, "messages": len(rows), "rounds": len(rounds),
            "warm_forks": logs.count("forked ClientApp process"), "template_restarts": logs.count("restarting it"),
            "round_seconds_mean": statistics.fmean(rounds) if rounds else None,
            "parts": summarise(rows), "milestones": MILESTONES, "folder": scratch / "deployed"}


def simulated_run(scratch: Path, overrides: list[str]) -> dict[str, Any]:
    command = [sys.executable, "-m", "fedforget.cli", "run", "experiment=smoke", *overrides,
               "--output-dir", str(scratch / "simulated")]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"simulated run failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return {"wall_seconds": wall, "folder": scratch / "simulated"}


def compare_checkpoints(first: Path, second: Path) -> dict[str, float]:
    """Largest absolute difference between the two runs' weights, per model (original, oracle, each method)."""
    models = [name for name in json.loads((first / "results.json").read_text())["models"]
              if (first / "checkpoints" / f"{name}.pt").is_file()]
    if not models:
        raise RuntimeError(f"{first / 'checkpoints'} holds no model checkpoint")
    differences = {}
    for name in models:
        mine, _ = load_checkpoint(first / "checkpoints" / f"{name}.pt")
        theirs, _ = load_checkpoint(second / "checkpoints" / f"{name}.pt")
        if mine.keys() != theirs.keys():
            raise RuntimeError(f"{name}.pt: the runs' checkpoints hold different tensors")
        differences[name] = max(float((mine[k].float() - theirs[k].float()).abs().max()) for k in mine)
    return differences


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--poll", type=float, default=0.1, help="SUPERNODE_POLL_SECONDS of the SuperNodes")
    parser.add_argument("--cold", action="store_true",
                        help="no warm ClientApp template: every message's process imports everything (plain Flower)")
    parser.add_argument("--skip-simulation", action="store_true", help="only the deployed run")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="largest weight difference called equal")
    parser.add_argument("--name", default="deployment", help="result file bench/results/NAME.json")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both runs (added to the shrunk smoke)")
    args = parser.parse_args(argv)
    saved = dict(os.environ)
    try:
        _measure(args)
    finally:  # make bench (bench/run_all.py) runs the next benchmark in this process
        os.environ.clear()
        os.environ.update(saved)


def _measure(args: argparse.Namespace) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as the deployed tests: ~6 processes share the cores
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as scratch_name:
        scratch = Path(scratch_name)
        # Fresh per-machine caches: the first message of each kind composes and scans, as on a new site.
        os.environ["FEDFORGET_CACHE"] = str(scratch / "machine-cache")
        data_root = scratch / "data"
        overrides = [*SHRUNK, f"data.root={data_root}", *args.overrides]
        prepare_synthetic_data(load_experiment("smoke", overrides))
        deployed = deployed_run(scratch, data_root, [*overrides, f"cache_dir={scratch / 'cache-deployed'}"],
                                args.poll, not args.cold)
        payload: dict[str, Any] = {
            "workload": {"experiment": "smoke", "overrides": [*SHRUNK, *args.overrides], "sites": list(SITES),
                         "poll_seconds": args.poll, "warm_clientapp": not args.cold,
                         "tls_and_node_auth": True, "torch_threads_per_process": os.environ["OMP_NUM_THREADS"]},
            "deployed": {k: v for k, v in deployed.items() if k != "folder"},
            "seconds_per_message": deployed["parts"]["all"].get("mean", {}).get("total"),
        }
        summary = (f"{deployed['parts']['all'].get('messages', 0)} messages, "
                   f"{payload['seconds_per_message'] or float('nan'):.2f} s each (mean), "
                   f"deployed run {deployed['wall_seconds']:.0f} s")
        write_result(args.name, payload, summary)  # kept even if the simulation below fails
        if not args.skip_simulation:
            simulated = simulated_run(scratch, [*overrides, f"cache_dir={scratch / 'cache-simulated'}"])
            differences = compare_checkpoints(deployed["folder"], simulated["folder"])
            same = bool(differences) and max(differences.values()) <= args.tolerance
            payload["simulated"] = {"wall_seconds": simulated["wall_seconds"]}
            payload["same_weights"] = {"max_abs_difference": differences, "tolerance": args.tolerance,
                                       "equal": same}
            summary += (f", simulated {simulated['wall_seconds']:.0f} s; weights "
                        f"{'equal' if same else 'DIFFER'} (max |diff| {max(differences.values()):.1e})")
    write_result(args.name, payload, summary)
    if "same_weights" in payload and not payload["same_weights"]["equal"]:
        sys.exit(1)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
