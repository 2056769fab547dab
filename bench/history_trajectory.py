"""Each removal against the oracle's own learning curve at the same site compute.

The oracle is FedAvg over the retain sites; its evaluation every few rounds (``progress.jsonl``) is a
curve of quality against site compute (round r of R costs r / R of the oracle's). A method that
spends a fraction c of that compute and lands on the curve at c did no better than stopping the
retraining there (with the full schedule's learning rate, not a compressed one); a method above
the curve used what the history or the original carried. Per seed of a multirun folder and per
model, this writes the model's BTA and KTA (means over the sites' test PSNR, as the per-round
evaluations are), the oracle curve's values at the model's compute (linear between evaluated
rounds), and the differences, with their mean and 95 % Student-t interval over seeds. Usage::

    python -m bench.history_trajectory outputs/history-demo-3seeds [--name history_trajectory_demo]
    python -m bench.history_trajectory outputs/history-knobs/history_rounds_demo_seed0-variant4
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import write_result
from fedforget.configs.schema import ORACLE_PHASE, REFERENCE_MODELS
from fedforget.learning.intervals import mean_interval
from fedforget.reporting.costs import compute_fraction

REFERENCES = REFERENCE_MODELS


def oracle_curve(progress: Path, retain: list[str], forget: str) -> list[tuple[float, float, float]]:
    """(fraction of the oracle's rounds, BTA, KTA) at every round the oracle was evaluated, round 0 included."""
    points = []
    for line in progress.read_text().splitlines():
        event = json.loads(line)
        if event.get("phase") != ORACLE_PHASE or "psnr" not in event:
            continue
        done = event.get("done", event.get("step", 0)) or 0
        total = event.get("total")
        psnr = event["psnr"]
        points.append((done, total, statistics.fmean(psnr[s] for s in retain), psnr[forget]))
    if not points:
        raise ValueError(f"{progress}: no oracle evaluations (was the oracle loaded from the model cache?)")
    total = max(p[1] or 0 for p in points)
    return sorted((done / total, bta, kta) for done, _, bta, kta in points)


def _site_mean(record: dict[str, Any], sites: list[str]) -> float:
    return statistics.fmean(record["sites"][s]["test"]["psnr"] for s in sites)


def seed_rows(folder: Path) -> dict[str, dict[str, float]]:
    """Per model of one run: compute, BTA, KTA, and the oracle curve's BTA and KTA at that compute."""
    results = json.loads((folder / "results.json").read_text())
    forget = results["forget_site"]
    retain = [s for s in results["sites"] if s != forget]
    curve = np.array(oracle_curve(folder / "progress.jsonl", retain, forget))
    rows = {}
    for model, record in results["models"].items():
        if model in REFERENCES:
            continue
        compute = compute_fraction(results, model)
        if compute is None:
            continue
        bta, kta = _site_mean(record, retain), _site_mean(record, [forget])
        at_bta, at_kta = (float(np.interp(compute, curve[:, 0], curve[:, i])) for i in (1, 2))
        rows[model] = {"compute": compute, "BTA": bta, "KTA": kta, "curve_BTA": at_bta, "curve_KTA": at_kta,
                       "BTA_minus_curve": bta - at_bta, "KTA_minus_curve": kta - at_kta}
    return rows


def summarise(per_seed: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Mean and 95 % interval over seeds of every field, per model present in every seed."""
    models = set.intersection(*(set(rows) for rows in per_seed.values()))
    summary = {}
    for model in sorted(models):
        fields = {}
        for key in next(iter(per_seed.values()))[model]:
            values = [rows[model][key] for rows in per_seed.values()]
            interval = mean_interval(values)
            fields[key] = {"mean": statistics.fmean(values), "ci": list(interval) if interval else None,
                           "n": len(values)}
        summary[model] = fields
    return summary


def _run_folders(folder: Path) -> list[Path]:
    if (folder / "results.json").is_file():
        return [folder]
    seeds = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()) if folder.is_dir() else []
    if not seeds:
        raise SystemExit(f"{folder}: neither a run folder (results.json) nor a multirun folder (0/, 1/, ...)")
    return seeds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("multirun", type=Path, help="a multirun folder (one numbered folder per seed) or one run")
    parser.add_argument("--name", default="")
    args = parser.parse_args(argv)
    seeds = _run_folders(args.multirun)
    per_seed = {p.name: seed_rows(p) for p in seeds}
    name = args.name or f"history_trajectory_{args.multirun.name}"
    models = summarise(per_seed)
    write_result(name, {"multirun": str(args.multirun), "seeds": list(per_seed), "per_seed": per_seed,
                        "models": models},
                 f"{len(per_seed)} seeds, {len(models)} models against the oracle's curve")


if __name__ == "__main__":
    main()
