"""The history-based methods' knobs: one `fedforget run` per variant, every method's distance to the oracle.

Each variant sets every knob under study at once (the methods do not interact), so a handful of
runs covers FedEraser's interval and ratio, FedRecover's correction period and abnormality fixing,
PUF's and FUKD's learning rate and FUKD's distillation. The original and the oracle come from the
model cache after the first run. Per variant and method the result holds the site compute
(relative to the oracle's), BTA / KTA - oracle with their intervals, and the paired difference to
retraining at the method's own compute (``retrain_budget@<method>``). Usage::

    python -m bench.history_knobs [--experiment demo] [--seed 0] [--variants 0 1 2 3] [--with-run RUN_DIR]
    python -m bench.history_knobs --name history_rounds_demo_seed0 --variants 4 \
        --methods "[federaser,retrain_budget]" --extra federation.rounds=90
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
from fedforget.reporting.costs import compute_fraction

REPO = Path(__file__).resolve().parents[1]
METHODS = "[federaser,fedrecover,puf,fukd,retrain_budget]"
VARIANTS = [
    ["unlearning.federaser.interval=1", "unlearning.federaser.ratio=0.25", "unlearning.fedrecover.correction_period=3",
     "unlearning.puf.lr=0", "unlearning.fukd.lr=0"],
    ["unlearning.federaser.interval=2", "unlearning.federaser.ratio=0.5", "unlearning.fedrecover.correction_period=6",
     "unlearning.puf.lr=0.002", "unlearning.fukd.lr=0.002"],
    ["unlearning.federaser.interval=1", "unlearning.federaser.ratio=0.5", "unlearning.fedrecover.correction_period=10",
     "unlearning.puf.lr=0.005", "unlearning.fukd.lr=0.005"],
    ["unlearning.federaser.interval=2", "unlearning.federaser.ratio=1.0", "unlearning.fedrecover.correction_period=6",
     "unlearning.fedrecover.abnormality_tolerance=0", "unlearning.puf.scale=10", "unlearning.fukd.repair=kd",
     "unlearning.retain_access=server"],
    [],  # every knob at its default
]


def _difference(summary: dict[str, Any], key: str, part: str) -> dict[str, Any] | None:
    entry = summary.get(key, {}).get(part)
    return {"psnr": entry["psnr"], "ci": entry.get("psnr_ci")} if entry else None


def extract(results: dict[str, Any]) -> dict[str, Any]:
    """Per model: compute, distance to the oracle, difference to retraining at its compute, details."""
    rows = {}
    for model, record in results["models"].items():
        summary = results["summary"][model]
        rows[model] = {"compute": compute_fraction(results, model), "cost": record.get("cost"),
                       "BTA": summary["BTA"]["psnr"], "KTA": summary["KTA"]["psnr"],
                       "BTA_minus_oracle": _difference(summary, "vs_oracle", "BTA"),
                       "KTA_minus_oracle": _difference(summary, "vs_oracle", "KTA"),
                       "BTA_minus_retrain": _difference(summary, "vs_retrain_budget", "BTA"),
                       "KTA_minus_retrain": _difference(summary, "vs_retrain_budget", "KTA"),
                       "wall_seconds": record["wall_seconds"],
                       "details": {k: record[k] for k in ("rollback_round", "exact_sites_per_round", "schedule",
                                                          "abnormality_bound", "same_as") if k in record}}
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", type=int, nargs="*", default=list(range(len(VARIANTS) - 1)))
    parser.add_argument("--methods", default=METHODS, help=f"unlearning.methods of every run (default {METHODS})")
    parser.add_argument("--extra", nargs="*", default=[], help="overrides added to every run (federation.rounds=90)")
    parser.add_argument("--output-dir", type=Path, default=REPO / "outputs" / "history-knobs")
    parser.add_argument("--name", default="")
    parser.add_argument("--with-run", type=Path, default=None,
                        help="a finished run at the default knobs (same experiment and seed) to list beside the variants")
    args = parser.parse_args(argv)
    runs = []
    if args.with_run is not None:
        results = json.loads((args.with_run / "results.json").read_text())
        runs.append({"variant": "defaults", "overrides": [], "run": str(args.with_run), "seconds": None,
                     "models": extract(results)})
    for index in args.variants:
        name = args.name or f"history_knobs_{args.experiment}_seed{args.seed}"
        folder = args.output_dir / f"{name}-variant{index}"
        command = [sys.executable, "-m", "fedforget.cli", "run", f"experiment={args.experiment}", f"seed={args.seed}",
                   f"unlearning.methods={args.methods}", *args.extra, *VARIANTS[index], "--output-dir", str(folder),
                   "--fresh"]
        began = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"variant {index} failed ({done.returncode}):\n"
                               f"{done.stdout[-3000:]}{done.stderr[-3000:]}")
        results = json.loads((folder / "results.json").read_text())
        runs.append({"variant": index, "overrides": [*args.extra, *VARIANTS[index]], "run": str(folder),
                     "seconds": time.perf_counter() - began, "models": extract(results)})
        print(f"variant {index}: {time.perf_counter() - began:.0f} s", flush=True)
    write_result(args.name or f"history_knobs_{args.experiment}_seed{args.seed}",
                 {"experiment": args.experiment, "seed": args.seed, "methods": args.methods, "extra": args.extra,
                  "command": "python -m bench.history_knobs " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "runs": runs},
                 f"{len(runs)} variants, {sum(r['seconds'] or 0 for r in runs) / 60:.0f} min")


if __name__ == "__main__":
    main()
