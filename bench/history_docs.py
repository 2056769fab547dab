"""Write docs/history-unlearning.md from the JSON the runs and benchmarks wrote (never by hand).

Inputs, each produced by the command the page names beside its table:

- ``bench/results/history-demo-3seeds/summary.json`` and ``history-poisoned-3seeds/summary.json``:
  ``fedforget report`` of the 3-seed multiruns (their ``figures/frontier.png`` beside them);
- ``bench/results/demo-3seeds/summary.json`` / ``poisoned-site-3seeds/summary.json``: the centralised
  methods on the same defaults and seeds (an earlier multirun; the page checks that its original and
  oracle are the new run's, so the rows compare like with like);
- ``history_knobs_demo_seed0.json``, ``history_rounds_demo_seed0.json`` (``bench.history_knobs``);
- ``history_diagnostics_sifu.json``, ``history_diagnostics_fedrecover.json`` (``bench.history_diagnostics``);
- ``history_trajectory_history-demo-3seeds.json``, ``history_rounds_trajectory_demo_seed0.json``
  (``bench.history_trajectory``: each model against the oracle's learning curve at the same compute);
- ``history_projection_paper-brain-knee.json`` (``bench.history_projection``).

Usage: ``python -m bench.history_docs``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.common import RESULTS
from fedforget.configs.schema import ORACLE, ORIGINAL, REFERENCE_MODELS

DOCS = Path(__file__).resolve().parents[1] / "docs"
HISTORY_METHODS = ("federaser", "sifu", "fedrecover", "fukd", "puf", "rollback")
REFERENCES = REFERENCE_MODELS
TARGET_COMPUTE = 0.25
TARGET_BTA = -0.5


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def _cell(stats: dict[str, Any] | None, digits: int = 2, signed: bool = True, scale: float = 1.0) -> str:
    if not stats or stats.get("mean") is None or not math.isfinite(stats["mean"]):
        return "–" if not stats or stats.get("mean") is None else "diverged (NaN)"
    sign = "+" if signed else ""
    text = f"{scale * stats['mean']:{sign}.{digits}f}"
    ci = stats.get("ci")
    if ci and stats.get("n", 0) > 1:
        text += f" [{scale * ci[0]:{sign}.{digits}f}, {scale * ci[1]:{sign}.{digits}f}]"
    return text


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _group(summary: dict[str, Any]) -> dict[str, Any]:
    groups = summary["groups"]
    if len(groups) != 1:
        raise ValueError(f"expected one group of seeds, found {list(groups)}")
    return next(iter(groups.values()))


def _contains_zero(stats: dict[str, Any] | None) -> bool:
    ci = (stats or {}).get("ci")
    return bool(ci) and ci[0] <= 0 <= ci[1]


def _clear_of_zero(stats: dict[str, Any] | None) -> bool:
    ci = (stats or {}).get("ci")
    return bool(ci) and ci[0] > 0


def _same_references(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """The earlier multirun trained the same original and oracle (equal means over the same seeds)."""
    return all(abs(new[m][k]["mean"] - old[m][k]["mean"]) < 1e-6 for m in (ORIGINAL, ORACLE)
               for k in ("BTA_psnr", "KTA_psnr"))


def every_method_rows(models: dict[str, Any], centralised: dict[str, Any] | None) -> list[list[str]]:
    rows = []
    merged = dict(models)
    if centralised is not None:
        merged = {**{m: v for m, v in centralised.items() if m not in models}, **models}
    order = [m for m in REFERENCES if m in merged] + [m for m in merged if m not in REFERENCES]
    for model in order:
        m = merged[model]
        rows.append([model, _cell(m.get("compute"), 1, False, 100.0) + (" %" if m.get("compute") else ""),
                     _cell(m.get("BTA_psnr"), 2, False), _cell(m.get("KTA_psnr"), 2, False),
                     _cell(m.get("BTA_minus_oracle")), _cell(m.get("KTA_minus_oracle")),
                     _cell(m.get("BTA_minus_retrain_budget")), _cell(m.get("KTA_minus_retrain_budget")),
                     _cell(m.get("RTE"), 1, False), _cell(m.get("messages"), 0, False),
                     _cell(m.get("MB"), 1, False), _cell(m.get("history_MB"), 1, False)])
    return rows


EVERY_HEADER = ["model", "site compute (of the oracle's)", "BTA PSNR", "KTA PSNR", "BTA - oracle", "KTA - oracle",
                "BTA - retraining at same compute", "KTA - retraining at same compute", "RTE", "messages",
                "MB moved", "history MB"]


def demo_targets(models: dict[str, Any]) -> list[list[str]]:
    """The issue's demo targets, per history-based method: each condition and whether it holds."""
    rows = []
    for name in HISTORY_METHODS:
        m = models.get(name)
        if m is None:
            continue
        compute = m["compute"]["mean"]
        bta = m["BTA_minus_oracle"]["mean"]
        checks = [compute is not None and compute <= TARGET_COMPUTE + 1e-9, _contains_zero(m["KTA_minus_oracle"]),
                  bta is not None and math.isfinite(bta) and bta >= TARGET_BTA,
                  _clear_of_zero(m.get("BTA_minus_retrain_budget"))]
        rows.append([name, *("yes" if c else "no" for c in checks), "**met**" if all(checks) else "not met"])
    return rows


def poisoned_targets(models: dict[str, Any]) -> list[list[str]]:
    oracle = models[ORACLE]["artifact"]
    rows = []
    for name, m in models.items():
        if name in REFERENCES or name.startswith("retrain_budget@") or "artifact" not in m:
            continue
        compute = (m.get("compute") or {}).get("mean")
        artifact = m["artifact"]["mean"]
        inside = oracle.get("ci") is not None and math.isfinite(artifact) and \
            oracle["ci"][0] <= artifact <= oracle["ci"][1]
        bta = (m.get("BTA_minus_original") or {}).get("mean")
        checks = [compute is not None and compute <= TARGET_COMPUTE + 1e-9, inside,
                  bta is not None and math.isfinite(bta) and bta >= TARGET_BTA]
        rows.append([name, _cell(m.get("compute"), 1, False, 100.0) + " %", _cell(m["artifact"], 3, False),
                     _cell(m.get("BTA_minus_original")), *("yes" if c else "no" for c in checks),
                     "**met**" if all(checks) else "not met"])
    return rows


def knob_rows(knobs: dict[str, Any]) -> list[list[str]]:
    rows = []
    for run in knobs["runs"]:
        for model, m in run["models"].items():
            if model in REFERENCES or model.startswith("retrain_budget"):
                continue
            section = [o for o in run["overrides"] if f".{model}." in o or o.startswith("federation.")
                       or (model == "fukd" and "retain_access" in o)]
            rows.append([model, ", ".join(o.split(".", 2)[-1] for o in section) or "defaults",
                         f"{100 * m['compute']:.1f} %" if m["compute"] is not None else "–",
                         _difference(m["BTA_minus_oracle"]), _difference(m["KTA_minus_oracle"]),
                         _difference(m["BTA_minus_retrain"]), _difference(m["KTA_minus_retrain"])])
    return sorted(rows, key=lambda r: (r[0], r[2]))


def _difference(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("psnr") is None:
        return "–"
    if not math.isfinite(entry["psnr"]):
        return "diverged (NaN)"
    ci = entry.get("ci")
    return f"{entry['psnr']:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def projection_rows(projection: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, m in projection["methods"].items():
        rows.append([name, f"{m['site_steps']:,}", f"{100 * m['of_retraining']:.0f} %", m["messages"],
                     f"{m['bytes'] / 1e9:.1f}", f"{m['history_bytes'] / 1e9:.1f}"])
    return rows


def page_text() -> str:
    """The page, from the JSON under bench/results/ only."""
    parts = ["# History-based unlearning: what was measured",
             "",
             "Generated by `python -m bench.history_docs` from the JSON under `bench/results/`; each table names "
             "the command that produced its numbers. CPU numbers come from this project's 2-core machine "
             "(synthetic data, the tiny VarNet). Intervals: 95 % Student-t over seeds for 3-seed tables, 95 % "
             "volume bootstrap for single-seed ones; a difference whose interval contains 0 is not "
             "distinguishable from 0. Site compute: local training steps (or gradient evaluations) over all "
             "sites, relative to the oracle's retraining.",
             ""]
    parts += _experiment_section("demo", "history-demo-3seeds", "centralised-demo-3seeds", poisoned=False)
    parts += _experiment_section("poisoned-site", "history-poisoned-3seeds", "poisoned-site-3seeds", poisoned=True)
    parts += _knob_section()
    parts += _diagnostics_section()
    parts += _projection_section()
    return "\n".join(parts) + "\n"


def write_page() -> Path:
    DOCS.mkdir(exist_ok=True)
    path = DOCS / "history-unlearning.md"
    path.write_text(page_text())
    print(f"wrote {path}")
    return path


def _experiment_section(experiment: str, folder: str, centralised_folder: str, poisoned: bool) -> list[str]:
    summary = _load(f"{folder}/summary.json")
    if summary is None:
        return [f"## {experiment}: not measured yet", ""]
    models = _group(summary)
    meta = _load(f"{folder}/command.json") or {}
    old = _load(f"{centralised_folder}/summary.json")
    centralised = None
    note = ""
    if old is not None and _same_references(models, _group(old)):
        centralised = _group(old)
        note = (f" The centralised methods' rows come from `bench/results/{centralised_folder}/` "
                f"(`{meta.get('centralised_command', '')}`): its original and oracle are this run's to 1e-6 dB on "
                f"every seed's mean, so the rows compare like with like.")
        if not any("compute" in m for m in centralised.values()):
            note += " They were measured before costs were recorded, so their cost columns are empty."
    elif old is not None:
        note = (f" The centralised methods' multirun `bench/results/{centralised_folder}/` trained a different "
                f"original or oracle (another machine, or other data or defaults), so its rows are not shown beside these.")
    parts = [f"## {experiment}: every method, seeds {meta.get('seeds', '0, 1, 2')}",
             f"`{meta.get('command', '')}`, then `fedforget report` on the multirun folder "
             f"({meta.get('minutes', '?')} min on the 2-core machine).{note}",
             "",
             _table(EVERY_HEADER, every_method_rows(models, centralised)),
             "",
             f"![frontier](../bench/results/{folder}/figures/frontier.png)",
             ""]
    if poisoned:
        parts += ["### Target: the artifact inside the oracle's interval, BTA >= original - 0.5 dB, site compute "
                  "<= 25 %", "",
                  _table(["method", "site compute", "artifact", "BTA - original", "compute <= 25 %",
                          "artifact in the oracle's interval", "BTA >= original - 0.5", "target"],
                         poisoned_targets(models)), ""]
    else:
        parts += ["### Target: KTA at the oracle's, BTA >= oracle - 0.5 dB, better than retraining at the same "
                  "compute, site compute <= 25 %", "",
                  _table(["method", "compute <= 25 %", "KTA - oracle: 0 in its interval", "BTA >= oracle - 0.5",
                          "BTA - retraining > 0 (interval clear)", "target"], demo_targets(models)), ""]
    parts += meta.get("findings", [])
    return parts + [""]


def _knob_section() -> list[str]:
    knobs = _load("history_knobs_demo_seed0.json")
    rounds = _load("history_rounds_demo_seed0.json")
    parts = ["## Knobs: not measured yet", ""]
    if knobs is not None:
        parts = ["## The knobs' effect (demo, seed 0)",
                 f"`{knobs.get('command', 'python -m bench.history_knobs')}` (one run per variant; the original and "
                 "oracle from the model cache). Intervals: volume bootstrap of this one seed.", "",
                 _table(["method", "setting", "site compute", "BTA - oracle", "KTA - oracle", "BTA - retraining",
                         "KTA - retraining"], knob_rows(knobs)), ""]
    if rounds is not None:
        parts += ["### Longer training", f"`{rounds.get('command', '')}`", "",
                  _table(["model", "setting", "site compute", "BTA - oracle", "KTA - oracle", "BTA - retraining",
                          "KTA - retraining"], knob_rows(rounds)), ""]
    return parts


def trajectory_rows(trajectory: dict[str, Any]) -> list[list[str]]:
    rows = []
    for model, m in sorted(trajectory["models"].items(), key=lambda item: item[1]["compute"]["mean"]):
        rows.append([model, _cell(m["compute"], 1, False, 100.0) + " %", _cell(m["BTA"], 2, False),
                     _cell(m["curve_BTA"], 2, False), _cell(m["BTA_minus_curve"]), _cell(m["KTA"], 2, False),
                     _cell(m["curve_KTA"], 2, False), _cell(m["KTA_minus_curve"])])
    return rows


def _trajectory_section() -> list[str]:
    parts = []
    for name, label in (("history_trajectory_history-demo-3seeds", "demo, seeds 0-2"),
                        ("history_rounds_trajectory_demo_seed0", "the longer-training run, seed 0")):
        trajectory = _load(f"{name}.json")
        if trajectory is None:
            continue
        parts += [f"### Against the oracle's own learning curve ({label})",
                  f"`python -m bench.history_trajectory {trajectory['multirun']}`: the oracle's evaluations every "
                  "few rounds give its quality at each fraction of its site compute; each row compares a model "
                  "with that curve at the model's own compute (BTA and KTA here are means of the sites' test "
                  "PSNR, as the per-round evaluations are). 0 means the method did exactly as well as stopping "
                  "retraining there.", "",
                  _table(["model", "site compute", "BTA", "oracle curve BTA there", "BTA - curve", "KTA",
                          "oracle curve KTA there", "KTA - curve"], trajectory_rows(trajectory)), ""]
    return parts


def _diagnostics_section() -> list[str]:
    parts = ["## Why: measured causes", "", *_trajectory_section()]
    fedrecover = _load("history_diagnostics_fedrecover.json")
    if fedrecover is not None:
        rows = []
        for row in fedrecover["rounds"]:
            for site, v in row.items():
                if isinstance(v, dict):
                    rows.append([row["round"], site, f"{row['weight_step']:.2f}", f"{v['stored']:.2f}",
                                 f"{v['exact_minus_stored']:.2f}", f"{v['cos_exact_stored']:+.3f}",
                                 f"{v['estimate_error']:.1f}" if "estimate_error" in v else "–",
                                 f"{v['cos_secant_pair']:+.4f}" if "cos_secant_pair" in v else "–"])
        parts += ["### FedRecover: the L-BFGS estimate under local Adam",
                  f"`python -m bench.history_diagnostics fedrecover {fedrecover['run']}` (demo, seed 0): recovery's "
                  "first rounds replayed exactly, comparing each retain site's exact update with its stored one "
                  "and with the estimate FedRecover would make from its buffer (norms of parameter vectors).", "",
                  _table(["round", "site", "|w^ - w| (recovered - original)", "|U stored|", "|U exact - U stored|",
                          "cos(U exact, U stored)", "|estimate - U exact|", "cos(s, y) of the newest pair"], rows), ""]
    sifu = _load("history_diagnostics_sifu.json")
    if sifu is not None:
        rows = [[r["rollback_round"], f"{r['psi']:.2f}", f"{r['sigma_needed']:.3f}"] for r in sifu["rollback"][:8]]
        parts += ["### SIFU: how far the bound lets it roll back",
                  f"`python -m bench.history_diagnostics sifu {sifu['run']}`: psi(T) for the forget site and the "
                  f"noise std sigma for which SIFU would roll back only to round T (epsilon {sifu['epsilon']}, "
                  f"delta {sifu['delta']:.3f}); the default sigma {sifu['default_sigma']} gives psi* = "
                  f"{sifu['default_threshold']:.3f}. The weights' RMS is {sifu['weights_rms']:.3f}.", "",
                  _table(["rollback to round T", "psi(T)", "sigma needed"], rows), ""]
    return parts


def _projection_section() -> list[str]:
    projection = _load("history_projection_paper-brain-knee.json")
    if projection is None:
        return []
    storage = ", ".join(f"{k}: {v / 1e9:.1f} GB" for k, v in projection["history_bytes"].items())
    return ["## At the paper's scale (`python -m bench.history_projection`)",
            f"`paper-brain-knee`: {projection['parameters']:,} weights ({projection['model_mb']:.1f} MB a model), "
            f"{projection['rounds']} rounds of {projection['local_steps']} local steps, {projection['sites']} sites. "
            f"Round history: {storage}. FedAvg training itself moves "
            f"{projection['training']['bytes'] / 1e9:.1f} GB in {projection['training']['messages']} messages. "
            "Per method, from each method's own plan at its default knobs (SIFU: its most expensive branch, a "
            "rollback to the initial model; rollback: a site that took part from the start):", "",
            _table(["method", "site steps", "of retraining's", "messages", "GB moved", "history GB"],
                   projection_rows(projection)), ""]


if __name__ == "__main__":
    write_page()
