"""Do the methods of papers 003/004, or compositions, dominate bad teacher and gradient surgery?

A candidate dominates a baseline when it is better on both axes at once: retain quality (BTA - oracle,
higher is better) and forgetting (|KTA - oracle|, the distance to the retrained model's quality on the
forget site, smaller is better). Two readings:

- at each method's defaults, over the seeds of a multirun: the paired per-seed differences
  (candidate - baseline; every seed shares one original and one oracle), with 95 % Student-t
  intervals; "dominates" only where both intervals exclude 0 in the candidate's favour;
- along the trade-off curves of a ``experiment=tradeoff`` multirun (one seed): which of the
  candidates' knob values beat which of the baselines' knob values on both axes (point estimates;
  each point's volume-bootstrap interval is kept beside it).

Usage::

    python -m bench.paper_methods --defaults outputs/paper-methods-demo-3seeds --tradeoff outputs/tradeoff-seed0
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import yaml

from bench.common import write_result
from fedforget.learning.intervals import mean_interval
from fedforget.reporting.tradeoff import knob_value
from fedforget.unlearning import REGISTRY

BASELINES = ("bad_teacher", "grad_surgery")
NEW_METHODS = ("activation_pruning", "soft_relabel", "boundary_relabel")
COMPOSITION = "compose("


def _jobs(folder: Path) -> list[Path]:
    return [Path(job["run"]) for job in json.loads((folder / "multirun.json").read_text())]


def _axes(versus: dict[str, Any]) -> tuple[float, float]:
    """(BTA - oracle, |KTA - oracle|) of one model in one run."""
    return versus["BTA"]["psnr"], abs(versus["KTA"]["psnr"])


def _candidates(summary: dict[str, Any]) -> list[str]:
    return [m for m in summary if m in NEW_METHODS or m.startswith(COMPOSITION)]


def _verdict(bta: tuple[float, float] | None, kta: tuple[float, float] | None) -> str:
    if bta is None or kta is None:
        return "one seed: no interval"
    if bta[0] > 0 and kta[1] < 0:
        return "dominates"
    if bta[1] < 0 and kta[0] > 0:
        return "dominated"
    if (bta[0] > 0 and kta[0] > 0) or (bta[1] < 0 and kta[1] < 0):
        return "trades one axis for the other"
    return "not distinguishable on at least one axis"


def paired_at_defaults(folder: Path) -> list[dict[str, Any]]:
    """Per candidate and baseline: the paired differences over seeds on both axes, and the verdict."""
    runs = [json.loads((run / "results.json").read_text())["summary"] for run in _jobs(folder)]
    rows = []
    for candidate in _candidates(runs[0]):
        for baseline in BASELINES:
            pairs = [(_axes(s[candidate]["vs_oracle"]), _axes(s[baseline]["vs_oracle"])) for s in runs
                     if candidate in s and baseline in s]
            d_bta = [c[0] - b[0] for c, b in pairs]
            d_kta = [c[1] - b[1] for c, b in pairs]
            bta_ci, kta_ci = mean_interval(d_bta), mean_interval(d_kta)
            rows.append({"candidate": candidate, "baseline": baseline, "seeds": len(pairs),
                         "bta_minus_baseline": round(statistics.fmean(d_bta), 3),
                         "bta_ci": [round(v, 3) for v in bta_ci] if bta_ci else None,
                         "abs_kta_minus_baseline": round(statistics.fmean(d_kta), 3),
                         "abs_kta_ci": [round(v, 3) for v in kta_ci] if kta_ci else None,
                         "verdict": _verdict(bta_ci, kta_ci)})
    return rows


def curve_points(folder: Path) -> list[dict[str, Any]]:
    """Every knob value of every method in a trade-off multirun: its (BTA - oracle, KTA - oracle) and intervals."""
    points = []
    for run in _jobs(folder):
        config = yaml.safe_load((run / "config.yaml").read_text())
        summary = json.loads((run / "results.json").read_text())["summary"]
        for model, record in summary.items():
            method = REGISTRY.get(model)
            if method is None or method.tradeoff_knob is None or "vs_oracle" not in record:
                continue
            versus = record["vs_oracle"]
            points.append({"method": model, "knob": method.tradeoff_knob,
                           "value": knob_value(config, method.tradeoff_knob),
                           "bta": round(versus["BTA"]["psnr"], 3), "kta": round(versus["KTA"]["psnr"], 3),
                           "bta_ci": versus["BTA"].get("psnr_ci"), "kta_ci": versus["KTA"].get("psnr_ci")})
    return sorted(points, key=lambda p: (p["method"], p["value"]))


def curve_dominance(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each baseline point: the candidates' points better on both axes (point estimates)."""
    rows = []
    for base in (p for p in points if p["method"] in BASELINES):
        beaten_by = [f"{p['method']}={p['value']:g}" for p in points if p["method"] in NEW_METHODS
                     and p["bta"] > base["bta"] and abs(p["kta"]) < abs(base["kta"])]
        rows.append({"baseline": f"{base['method']}={base['value']:g}", "bta": base["bta"], "kta": base["kta"],
                     "dominated_by": beaten_by})
    return rows


def knees(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each method's point closest to the oracle's forget quality (smallest |KTA - oracle|): what forgetting
    as retraining would costs it on the retain sites."""
    methods = sorted({p["method"] for p in points})
    return [min((p for p in points if p["method"] == m), key=lambda p: abs(p["kta"])) for m in methods]


def _summary(paired: list[dict[str, Any]], dominance: list[dict[str, Any]], knee_names: set[str]) -> str:
    winners = sorted({f"{r['candidate']} over {r['baseline']}" for r in paired if r["verdict"] == "dominates"})
    at_defaults = ("at defaults, " + ("; ".join(winners) + " dominate(s) on both axes" if winners
                                      else "no candidate dominates bad_teacher or grad_surgery on both axes"))
    if not dominance:
        return at_defaults
    beaten = sum(1 for r in dominance if r["dominated_by"])
    best = [r for r in dominance if r["baseline"] in knee_names]
    verdicts = "; ".join(f"{r['baseline']} beaten by {', '.join(r['dominated_by']) or 'none'}" for r in best)
    return (at_defaults + f"; on the trade-off curves {beaten} of {len(dominance)} baseline points are beaten on both "
            f"axes, and of each baseline's point closest to the oracle's KTA: {verdicts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--defaults", type=Path, required=True, help="multirun folder: methods at their defaults")
    parser.add_argument("--tradeoff", type=Path, help="multirun folder of experiment=tradeoff")
    parser.add_argument("--name", default="paper_methods_dominance")
    args = parser.parse_args()
    paired = paired_at_defaults(args.defaults)
    points = curve_points(args.tradeoff) if args.tradeoff else []
    dominance = curve_dominance(points)
    command = f"python -m bench.paper_methods --defaults {args.defaults}" + (
        f" --tradeoff {args.tradeoff}" if args.tradeoff else "")
    write_result(args.name, {"command": command, "baselines": list(BASELINES), "at_defaults": paired,
                             "tradeoff_points": points, "tradeoff_dominance": dominance,
                             "tradeoff_knees": knees(points)},
                 _summary(paired, dominance, {f"{k['method']}={k['value']:g}" for k in knees(points)}))


if __name__ == "__main__":
    main()
