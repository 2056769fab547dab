"""``fedforget report MULTIRUN_DIR``: mean and 95 % t-interval over seeds, and the retain-fraction sweep figure."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from fedforget.configs.schema import ORACLE, ORIGINAL, REFERENCE_MODELS, ZERO_FILLED
from fedforget.learning.intervals import mean_interval
from fedforget.recon.atomic import atomic_write_bytes, atomic_write_json
from fedforget.reporting.costs import RETRAIN, compute_fraction, family, frontier_points_over_seeds
from fedforget.reporting.figures import frontier_chart, method_comparison_chart, sweep_curve, tradeoff_chart
from fedforget.reporting.report import table
from fedforget.reporting.tradeoff import tradeoff_markdown, tradeoff_points

MULTIRUN_FILE = "multirun.json"
SUMMARY_FIELDS = (("BTA", "psnr"), ("BTA", "ssim"), ("KTA", "psnr"), ("KTA", "ssim"), ("UA", "psnr"), ("UA", "ssim"))


def _mean_std(values: list[float]) -> dict[str, Any]:
    """Mean, standard deviation and the 95 % Student-t interval of the mean over seeds."""
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "ci": None, "n": 0}
    interval = mean_interval(values)
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "ci": list(interval) if interval else None, "n": len(values)}


def load_jobs(folder: Path) -> list[dict[str, Any]]:
    """Every job of a multirun with its overrides and results (failed jobs are reported, not hidden)."""
    jobs = json.loads((folder / MULTIRUN_FILE).read_text())
    for job in jobs:
        path = Path(job["run"]) / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"multirun job {job['job']} ({' '.join(job['overrides'])}) has no {path}")
        job["results"] = json.loads(path.read_text())
    return jobs


def _group_key(overrides: list[str]) -> str:
    return " ".join(o for o in overrides if not o.startswith("seed=") and "data.root=" not in o
                    and "cache_dir=" not in o) or "(all jobs)"


def aggregate(jobs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """group -> model -> metric -> {mean, std, n} over the group's seeds."""
    groups: dict[str, dict[str, dict[str, list]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for job in jobs:
        group = groups[_group_key(job["overrides"])]
        for model, summary in job["results"]["summary"].items():
            for part, metric in SUMMARY_FIELDS:
                group[model][f"{part}_{metric}"].append(summary[part][metric])
            group[model]["RTE"].append(summary.get("RTE"))
            if "artifact" in summary:
                group[model]["artifact"].append(summary["artifact"])
            audit = job["results"]["models"][model].get("audit", {})
            for key in ("mia_auc", "mia_auc_calibrated"):
                if key in audit:
                    group[model][key].append(audit[key])
            for reference in (ORACLE, ORIGINAL):
                versus = summary.get(f"vs_{reference}", {})
                for part in ("BTA", "KTA"):
                    difference = versus.get(part, {}).get("psnr")
                    if difference is not None:
                        group[model][f"{part}_minus_{reference}"].append(difference)
                if "artifact" in versus:  # poisoned federations: the paired artifact difference of each seed
                    group[model][f"artifact_minus_{reference}"].append(versus["artifact"]["value"])
            group[model]["seconds"].append(job["results"]["models"][model]["wall_seconds"])
            _add_costs(group[model], job["results"], model)
    return {g: {m: {k: _mean_std(v) for k, v in metrics.items()} for m, metrics in models.items()}
            for g, models in groups.items()}


def _add_costs(values: dict[str, list], results: dict[str, Any], model: str) -> None:
    """A model's cost in one seed, and its paired difference to retraining at the same compute."""
    cost = results["models"][model].get("cost")
    if cost is None:
        return
    values["compute"].append(compute_fraction(results, model))
    values["site_steps"].append(cost["site_steps"])
    values["server_seconds"].append(cost["server_seconds"])
    values["messages"].append(cost["messages"])
    values["MB"].append(cost["bytes"] / 1e6)
    values["history_MB"].append(cost["history_bytes"] / 1e6)
    versus = results["summary"][model].get(f"vs_{RETRAIN}", {})
    for part in ("BTA", "KTA"):
        if part in versus:
            values[f"{part}_minus_{RETRAIN}"].append(versus[part]["psnr"])


def aggregate_sites(jobs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """group -> model -> site -> {psnr, gain_over_zero_filled: {mean, std, ci, n}} on each site's test split."""
    groups: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    for job in jobs:
        group = groups[_group_key(job["overrides"])]
        for model, entry in job["results"]["models"].items():
            for site, splits in entry.get("sites", {}).items():
                for key in ("psnr", "gain_over_zero_filled"):
                    group[model][site][key].append(splits["test"].get(key))
    return {g: {m: {s: {k: _mean_std(v) for k, v in values.items()} for s, values in sites.items()}
                for m, sites in models.items()} for g, models in groups.items()}


def _cell(stats: dict[str, Any], digits: int) -> str:
    if stats is None or stats["mean"] is None:
        return "–"
    if stats.get("ci") is None:
        return f"{stats['mean']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} ± {(stats['ci'][1] - stats['ci'][0]) / 2:.{digits}f}"


def sites_markdown(per_site: dict[str, dict[str, dict[str, dict[str, Any]]]]) -> list[str]:
    """One table per group: each model's test PSNR at every site, with its gain over zero-filled."""
    parts = []
    for group, models in per_site.items():
        sites = sorted({site for by_site in models.values() for site in by_site})
        rows = [[model, *(f"{_cell(by_site[s]['psnr'], 2)} ({_cell(by_site[s]['gain_over_zero_filled'], 2)})"
                          if s in by_site else "–" for s in sites)] for model, by_site in models.items()]
        parts += [f"## {group}: test PSNR per site (gain over zero-filled)", table(["model", *sites], rows), ""]
    return parts


def summary_markdown(aggregated: dict[str, dict[str, dict[str, Any]]], seeds: int) -> str:
    parts = [f"# Multirun summary (mean ± half-width of the 95 % t-interval over {seeds} seed(s) per group)", ""]
    for group, models in aggregated.items():
        header = ["model", "BTA PSNR", "BTA SSIM", "KTA PSNR", "KTA SSIM", "UA PSNR", "UA SSIM", "KTA - oracle",
                  "BTA - oracle", "MIA AUC vs oracle", "MIA AUC (raw)", "RTE", "artifact", "artifact - oracle"]
        rows = [[model, _cell(m["BTA_psnr"], 2), _cell(m["BTA_ssim"], 4), _cell(m["KTA_psnr"], 2),
                 _cell(m["KTA_ssim"], 4), _cell(m["UA_psnr"], 2), _cell(m["UA_ssim"], 4),
                 _cell(m.get("KTA_minus_oracle"), 2), _cell(m.get("BTA_minus_oracle"), 2),
                 _cell(m.get("mia_auc_calibrated"), 3), _cell(m.get("mia_auc"), 3), _cell(m["RTE"], 1),
                 _cell(m.get("artifact"), 3), _cell(m.get("artifact_minus_oracle"), 3)]
                for model, m in models.items()]
        parts += [f"## {group}", table(header, rows), ""]
        costs = [[model, _percent_cell(m.get("compute")), _cell(m.get("site_steps"), 0), _cell(m.get(
                  "server_seconds"), 2), _cell(m.get("messages"), 0), _cell(m.get("MB"), 1),
                  _cell(m.get("history_MB"), 1), _cell(m.get(f"BTA_minus_{RETRAIN}"), 2),
                  _cell(m.get(f"KTA_minus_{RETRAIN}"), 2)]
                 for model, m in models.items() if "compute" in m and model != ZERO_FILLED]
        if costs:
            parts += [f"## {group}: cost, and each history-based method against retraining at its own compute",
                      table(["model", "site compute (of the oracle's)", "site steps", "server s", "messages",
                             "MB moved", "history MB", f"BTA - {RETRAIN}@model", f"KTA - {RETRAIN}@model"], costs),
                      ""]
    return "\n".join(parts)


def _percent_cell(stats: dict[str, Any] | None) -> str:
    if stats is None or stats["mean"] is None:
        return "–"
    scaled = {**stats, "mean": 100 * stats["mean"], "ci": [100 * c for c in stats["ci"]] if stats.get("ci") else None}
    return _cell(scaled, 1) + " %"


def _chart_summary(models: dict[str, dict[str, Any]]) -> dict[str, dict]:
    """The method chart's input (results.json summary shape) with std as error bars."""
    chart = {}
    for model, m in models.items():
        entry: dict[str, Any] = {part: {"psnr": m[f"{part}_psnr"]["mean"], "psnr_std": m[f"{part}_psnr"]["std"],
                                        "ssim": m[f"{part}_ssim"]["mean"], "ssim_std": m[f"{part}_ssim"]["std"]}
                                 for part in ("BTA", "KTA", "UA")}
        entry["RTE"] = m["RTE"]["mean"]
        if "artifact" in m:
            entry["artifact"] = m["artifact"]["mean"]
        chart[model] = entry
    return chart


def sweep_points(jobs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    points, references = [], defaultdict(list)
    for job in jobs:
        results = job["results"]
        seed = next((int(o.split("=", 1)[1]) for o in job["overrides"] if o.startswith("seed=")), 0)
        for model, summary in results["summary"].items():
            if model in REFERENCE_MODELS:
                references[model].append(summary["BTA"]["psnr"])
                continue
            if results["models"][model]["retain_fraction"] is None:  # history-based: no retain fraction
                continue
            points.append({"method": model, "retain_fraction": results["models"][model]["retain_fraction"],
                           "seed": seed, "bta_psnr": summary["BTA"]["psnr"], "kta_psnr": summary["KTA"]["psnr"],
                           "seconds": results["models"][model]["wall_seconds"]})
    return points, {k: statistics.fmean(v) for k, v in references.items()}


def _original_point(jobs: list[dict[str, Any]]) -> tuple[float, float] | None:
    """The original model's (BTA - oracle, KTA - oracle), averaged over the jobs (their seeds)."""
    pairs = [(v["BTA"]["psnr"], v["KTA"]["psnr"]) for job in jobs
             if "BTA" in (v := job["results"]["summary"].get(ORIGINAL, {}).get("vs_oracle", {}))]
    if not pairs:
        return None
    return statistics.fmean(b for b, _ in pairs), statistics.fmean(k for _, k in pairs)


def aggregate_multirun(folder: Path) -> Path:
    """Write summary.md, summary.json and figures (method chart and frontier per group; sweep curve) for a
    multirun."""
    jobs = load_jobs(folder)
    aggregated = aggregate(jobs)
    seeds = len({o for job in jobs for o in job["overrides"] if o.startswith("seed=")}) or 1
    figures = folder / "figures"
    families = {model: family(model, record) for job in jobs for model, record in job["results"]["models"].items()}
    for number, (group, models) in enumerate(aggregated.items()):
        method_comparison_chart(figures / f"methods_{number}.png", _chart_summary(models))
        if points := frontier_points_over_seeds(models, families):
            name = "frontier.png" if len(aggregated) == 1 else f"frontier_{number}.png"
            experiment = jobs[0]["results"].get("experiment", "multirun")
            frontier_chart(figures / name, points,
                           f"{experiment}: {group} (means over {seeds} seed(s); KTA: 95 % t-interval)")
    points, reference = sweep_points(jobs)
    if len({p["retain_fraction"] for p in points}) > 1:
        sweep_curve(figures / "sweep.png", points, reference=reference)
    curves = tradeoff_points(jobs)
    if curves:
        experiment = jobs[0]["results"].get("experiment", "multirun")
        spread = "95 % t-intervals over seeds" if seeds > 1 else "one seed: paired volume-bootstrap 95 % intervals"
        tradeoff_chart(figures / "tradeoff.png", curves, f"{experiment}: forget/retain trade-off per method "
                       f"(means over {seeds} seed(s); {spread})", original=_original_point(jobs))
    per_site = aggregate_sites(jobs)
    atomic_write_json(folder / "summary.json", {"groups": aggregated, "sweep": points, "sites": per_site,
                                                "tradeoff": {m: [p._asdict() for p in c] for m, c in curves.items()}})
    text = summary_markdown(aggregated, seeds) + "\n" + "\n".join(sites_markdown(per_site))
    if curves:
        text += "\n" + "\n".join(tradeoff_markdown(curves))
    text += "\n" + "\n".join(f"![{p.stem}](figures/{p.name})" for p in sorted(figures.glob("*.png"))) + "\n"
    atomic_write_bytes(folder / "summary.md", text.encode())
    return folder / "summary.md"
