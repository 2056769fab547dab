"""Local unlearning rounds (``unlearning.local_steps = k``): what k costs in quality and saves in traffic.

Measure (default): runs the experiment once per k (the demo, k in 1, 4, 8, 16) with the
same methods, seed and model cache, so the original and the oracle are trained once and
loaded afterwards. Per method and k: BTA, KTA and UA PSNR and the membership AUC, each
also as the difference to k = 1; messages, bytes and the unlearning wall time.

    python -m bench.local_unlearning [--ks 1 4 8 16] [--methods ft nl_ft] [OVERRIDES...]

Project (``--project EXPERIMENT``): no training; messages, exchanges, bytes and the time
spent exchanging for every method at k = 1 and at ``--local-steps``, from the protocol's
message plan (``strategies.removal.message_plan``, which a test checks against the real
ledger) and the size of the experiment's model in a message. Each party computes the
same number of steps at every k, so compute time is the same at every k and is left out.

    python -m bench.local_unlearning --project paper-brain-knee --local-steps 8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import write_result
from fedforget.configs import load_experiment
from fedforget.configs.schema import ORACLE
from fedforget.learning.training import model_from_config
from fedforget.recon.models import count_parameters
from fedforget.strategies.protocol import arrays_from_state
from fedforget.strategies.removal import message_plan
from fedforget.unlearning import REGISTRY, get_method

REPO = Path(__file__).resolve().parents[1]
METHODS = ["ft", "ga_l1_ft", "nl_ft", "grad_surgery", "pga", "bad_teacher"]


def run_once(experiment: str, methods: list[str], local_steps: int, cache_dir: Path, output: Path,
             overrides: list[str]) -> dict[str, Any]:
    """One ``fedforget run`` at ``local_steps``; returns its results.json."""
    command = [sys.executable, "-m", "fedforget.cli", "run", f"experiment={experiment}",
               f"unlearning.methods=[{','.join(methods)}]", f"unlearning.local_steps={local_steps}",
               f"cache_dir={cache_dir}", *overrides, "--output-dir", str(output), "--fresh"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"run at local_steps={local_steps} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return json.loads((output / "results.json").read_text())


def method_row(results: dict[str, Any], name: str) -> dict[str, Any]:
    record, summary = results["models"][name], results["summary"][name]
    return {"BTA_psnr": summary["BTA"]["psnr"], "KTA_psnr": summary["KTA"]["psnr"], "UA_psnr": summary["UA"]["psnr"],
            "mia_auc": record["audit"]["mia_auc"], "messages": record["messages"], "rounds": record["rounds"],
            "bytes": record["bytes_communicated"], "wall_seconds": record["wall_seconds"], "steps": record["steps"]}


def with_differences(rows: dict[int, dict[str, dict[str, Any]]]) -> None:
    """Add each row's difference to k = 1 (quality in dB / AUC points, traffic and time as ratios)."""
    base = rows[min(rows)]
    for k, methods in rows.items():
        for name, row in methods.items():
            ref = base[name]
            for key in ("BTA_psnr", "KTA_psnr", "UA_psnr", "mia_auc"):
                row[f"{key}_vs_k1"] = row[key] - ref[key]
            for key in ("messages", "bytes", "wall_seconds"):
                row[f"{key}_fraction_of_k1"] = row[key] / ref[key] if ref[key] else None


def markdown(rows: dict[int, dict[str, dict[str, Any]]]) -> str:
    lines = ["| method | k | BTA (vs k=1) | KTA (vs k=1) | UA (vs k=1) | MIA AUC (vs k=1) | messages | MB | wall s |",
             "|---|---|---|---|---|---|---|---|---|"]
    names = list(next(iter(rows.values())))
    for name in names:
        for k in sorted(rows):
            r = rows[k][name]
            lines.append(f"| `{name}` | {k} | {r['BTA_psnr']:.2f} ({r['BTA_psnr_vs_k1']:+.2f}) | "
                         f"{r['KTA_psnr']:.2f} ({r['KTA_psnr_vs_k1']:+.2f}) | {r['UA_psnr']:.2f} "
                         f"({r['UA_psnr_vs_k1']:+.2f}) | {r['mia_auc']:.2f} ({r['mia_auc_vs_k1']:+.2f}) | "
                         f"{r['messages']} | {r['bytes'] / 1e6:.1f} | {r['wall_seconds']:.1f} |")
    return "\n".join(lines)


def oracle_row(results: dict[str, Any]) -> dict[str, Any]:
    summary, record = results["summary"][ORACLE], results["models"][ORACLE]
    return {"BTA_psnr": summary["BTA"]["psnr"], "KTA_psnr": summary["KTA"]["psnr"], "UA_psnr": summary["UA"]["psnr"],
            "mia_auc": record["audit"]["mia_auc"], "wall_seconds": record["wall_seconds"]}


def measure(args: argparse.Namespace) -> None:
    cache = args.cache_dir or args.output_dir / "cache"
    rows: dict[int, dict[str, dict[str, Any]]] = {}
    oracle: dict[str, Any] = {}
    started = time.perf_counter()
    for k in args.ks:
        results = run_once(args.experiment, args.methods, k, cache, args.output_dir / f"k{k}", args.overrides)
        rows[k] = {name: method_row(results, name) for name in args.methods}
        oracle = oracle or oracle_row(results)
    with_differences(rows)
    table = markdown(rows)
    print(table)
    goal_methods = [m for m in ("ft", "nl_ft", "ga_l1_ft") if m in args.methods]
    worst = max((abs(rows[k][m][key]) for k in rows for m in goal_methods for key in ("BTA_psnr_vs_k1",
                                                                                   "KTA_psnr_vs_k1")),
                default=float("nan"))
    write_result("local_unlearning", {"experiment": args.experiment, "ks": args.ks, "methods": args.methods,
                                      "overrides": args.overrides, ORACLE: oracle,
                                      "bench_wall_seconds": time.perf_counter() - started,
                                      "rows": {str(k): v for k, v in rows.items()}, "table": table},
                 f"{len(args.methods)} methods x k in {args.ks}; largest |BTA or KTA change| of "
                 f"{'/'.join(goal_methods) or '-'} against k=1: {worst:.2f} dB")


def projection(experiment: str, local_steps: int, exchange_seconds: float, bandwidth_gbit: float,
               budget: int | None = None, methods: list[str] | None = None) -> dict[str, Any]:
    """Messages, bytes and exchange time of every method's removal at k = 1 and k = ``local_steps``.

    Args:
        experiment: the experiment whose model, sites, retain access and budget are projected.
        local_steps: the k to compare with k = 1.
        exchange_seconds: fixed cost of one exchange (send, site start, poll, reply).
        bandwidth_gbit: the coordinator's link; an exchange's messages share it.
        budget: a step budget other than the experiment's ``unlearning.budget_steps``.
        methods: which methods (default: every registered one).

    Returns:
        The inputs of the projection and one row per method and k.
    """
    cfg = load_experiment(experiment, ["data.root=/projection/not/read"])
    model = model_from_config(cfg.model)
    record_bytes = arrays_from_state(model.state_dict()).count_bytes()
    steps = budget or cfg.unlearning.budget_steps(cfg.federation.training_steps)
    retain_sites, at_server = len(cfg.retain_sites), cfg.unlearning.retain_access == "server"
    rows: dict[str, dict[str, Any]] = {}
    for name in methods or list(REGISTRY):
        method = get_method(name, cfg.unlearning)
        rows[name] = {}
        for k in sorted({1, local_steps}):
            plan = message_plan(method, steps, k, retain_sites, at_server)
            moved = sum(e.arrays_down + e.arrays_up for e in plan) * record_bytes
            transfer = moved * 8 / (bandwidth_gbit * 1e9)
            rows[name][str(k)] = {"messages": sum(e.messages for e in plan), "exchanges": len(plan),
                                  "bytes": moved, "exchange_hours": (len(plan) * exchange_seconds + transfer) / 3600}
    return {"experiment": experiment, "parameters": count_parameters(model), "record_bytes": record_bytes,
            "budget_steps": steps, "retain_sites": retain_sites, "retain_access": cfg.unlearning.retain_access,
            "local_steps": local_steps, "exchange_seconds": exchange_seconds, "bandwidth_gbit": bandwidth_gbit,
            "methods": rows}


def projection_markdown(projected: dict[str, Any]) -> str:
    k = str(projected["local_steps"])
    lines = [f"| method | messages k=1 / k={k} | traffic k=1 / k={k} | exchanging k=1 / k={k} |", "|---|---|---|---|"]
    for name, row in projected["methods"].items():
        one, local = row["1"], row[k]
        lines.append(f"| `{name}` | {one['messages']:,} / {local['messages']:,} | {_size(one['bytes'])} / "
                     f"{_size(local['bytes'])} | {_hours(one['exchange_hours'])} / {_hours(local['exchange_hours'])} |")
    return "\n".join(lines)


def _size(count: float) -> str:
    return f"{count / 1e12:.2f} TB" if count >= 1e12 else f"{count / 1e9:.1f} GB"


def _hours(hours: float) -> str:
    return f"{hours / 24:.1f} d" if hours >= 48 else f"{hours:.1f} h"


def project(args: argparse.Namespace) -> None:
    projected = projection(args.project, args.local_steps, args.exchange_seconds, args.bandwidth_gbit, args.budget,
                           args.methods if args.methods != METHODS else None)
    table = projection_markdown(projected)
    print(table)
    name = f"local_unlearning_projection_{args.project}" + (f"_budget{args.budget}" if args.budget else "")
    write_result(name, {**projected, "table": table},
                 f"{projected['parameters']:,} parameters, {projected['budget_steps']:,} steps, k=1 vs "
                 f"k={args.local_steps}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="demo")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--output-dir", type=Path, default=REPO / "outputs" / "bench-local-unlearning")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="model cache shared by the runs (default: <output-dir>/cache)")
    parser.add_argument("--project", metavar="EXPERIMENT", help="project traffic for EXPERIMENT instead of measuring")
    parser.add_argument("--local-steps", type=int, default=8, help="the k projected next to k = 1")
    parser.add_argument("--exchange-seconds", type=float, default=1.44,
                        help="fixed seconds per exchange (1.44: mean deployed exchange on loopback, TLS + node "
                             "auth, warm ClientApp, bench/results/deployment.json)")
    parser.add_argument("--bandwidth-gbit", type=float, default=1.0, help="the coordinator's link, Gbit/s")
    parser.add_argument("--budget", type=int, default=None, help="step budget (default: the experiment's)")
    parser.add_argument("overrides", nargs="*", default=["report.figures=false"])
    args = parser.parse_args(argv)
    if 1 not in args.ks:
        parser.error("--ks must include 1 (every row is compared with k = 1)")
    project(args) if args.project else measure(args)


if __name__ == "__main__":
    main()
