"""``report.md``: the run's tables, readable on its own (also re-rendered by ``fedforget report``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedforget.configs.schema import ORACLE, ORIGINAL, ZERO_FILLED
from fedforget.recon.atomic import atomic_write_bytes
from fedforget.reporting.comparisons import NOT_DISTINGUISHABLE, UNCHANGED, verdicts
from fedforget.reporting.costs import COST_HEADER, cost_rows


def _fmt(value: Any, digits: int = 2, signed: bool = False) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return str(value)


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def site_table(results: Mapping[str, Any]) -> str:
    rows = [[name, s["anatomy"], s["role"], "yes" if s["poisoned"] else "no", s["train_slices"], s["test_slices"]]
            for name, s in results["sites"].items()]
    return table(["site", "anatomy", "role", "poisoned", "train slices", "test slices"], rows)


def per_site_table(results: Mapping[str, Any]) -> str:
    """Per site and per model: test PSNR / SSIM / NMSE (the forget site's train split too)."""
    rows = []
    for site, info in results["sites"].items():
        for model, record in results["models"].items():
            scores = record["sites"][site]
            for split in ("test", "train"):
                if split in scores:
                    m = scores[split]
                    rows.append([site, info["role"], split, model, _fmt(m["psnr"]),
                                 _fmt(m.get("gain_over_zero_filled"), 2, signed=True), _fmt(m["ssim"], 4),
                                 _fmt(m["nmse"], 4)])
    return table(["site", "role", "split", "model", "PSNR (dB)", "gain over zero-filled (dB)", "SSIM", "NMSE"], rows)


def _with_interval(value: float | None, interval: list[float] | None, digits: int = 2, signed: bool = False) -> str:
    text = _fmt(value, digits, signed)
    if interval is None:
        return text
    return f"{text} [{interval[0]:{'+' if signed else ''}.{digits}f}, {interval[1]:{'+' if signed else ''}.{digits}f}]"


def summary_table(results: Mapping[str, Any]) -> str:
    """Per model: BTA / KTA / UA with 95 % intervals, RTE, the membership audit, cost."""
    rows = []
    for model, s in results["summary"].items():
        record = results["models"][model]
        audit = record.get("audit", {})
        rows.append([model, _with_interval(s["BTA"]["psnr"], s["BTA"].get("psnr_ci")), _fmt(s["BTA"]["ssim"], 4),
                     _with_interval(s["KTA"]["psnr"], s["KTA"].get("psnr_ci")), _fmt(s["KTA"]["ssim"], 4),
                     _with_interval(s["UA"]["psnr"], s["UA"].get("psnr_ci")), _fmt(s["UA"]["ssim"], 4),
                     _fmt(s["RTE"]), _with_interval(audit.get("mia_auc_calibrated"), audit.get("mia_auc_ci"), 3),
                     _fmt(audit.get("mia_auc"), 3), record["steps"], _fmt(record["wall_seconds"], 1),
                     f"{record['bytes_communicated'] / 1e6:.1f}"])
    return table(["model", "BTA PSNR [95 % CI]", "BTA SSIM", "KTA PSNR [95 % CI]", "KTA SSIM", "UA PSNR [95 % CI]",
                  "UA SSIM", "RTE", "MIA AUC vs oracle [95 % CI]", "MIA AUC (raw loss)", "steps", "seconds",
                  "MB moved"], rows)


def comparison_table(results: Mapping[str, Any]) -> str:
    """Per model and part: paired differences to the oracle and to the original, with what they mean."""
    rows = []
    for model, s in results["summary"].items():
        if model in (ZERO_FILLED, ORACLE):
            continue
        for part in ("BTA", "KTA", "UA"):
            oracle = s.get("vs_oracle", {}).get(part, {})
            original = s.get("vs_original", {}).get(part, {})
            if not oracle and not original:
                continue
            rows.append([model, part, _with_interval(oracle.get("psnr"), oracle.get("psnr_ci"), signed=True),
                         _with_interval(original.get("psnr"), original.get("psnr_ci"), signed=True),
                         "; ".join(verdicts(s, part)) or "–"])
    return table(["model", "part", "PSNR - oracle [95 % CI]", "PSNR - original [95 % CI]", "reading"], rows)


def learned_table(results: Mapping[str, Any]) -> str:
    """Per site: zero-filled, original and oracle test PSNR and their gains (is there anything to unlearn?)."""
    models = results["models"]
    rows = []
    for site, info in results["sites"].items():
        row = [site, info["role"], _fmt(models[ZERO_FILLED]["sites"][site]["test"]["psnr"])]
        for name in (ORIGINAL, ORACLE):
            m = models[name]["sites"][site]["test"] if name in models else {}
            row += [_fmt(m.get("psnr")), _fmt(m.get("gain_over_zero_filled"), 2, signed=True)]
        rows.append(row)
    return table(["site", "role", "zero-filled PSNR", "original PSNR", "original gain", "oracle PSNR",
                  "oracle gain"], rows)


def render_report(results: Mapping[str, Any], figures: list[str] = ()) -> str:
    forget = results["forget_site"]
    parts = [
        f"# fedforget report: {results['experiment']}",
        "",
        f"Removal of site **{forget}** from a federated E2E-VarNet. The *original* model was trained with "
        f"FedAvg on every site, the *oracle* on the retain sites only (the gold standard); each method starts "
        f"from the original with a budget of {results.get('budget_steps', '?')} optimizer steps "
        f"({results.get('training_steps', '?')} training steps).",
        "",
        "## Sites",
        site_table(results),
        "",
        "## Did the federation learn every site?",
        "A model that is not clearly above zero-filled at a site has learned nothing there, and then nothing "
        "can be unlearned: look at the gain over zero-filled (test PSNR, dB) first.",
        "",
        learned_table(results),
        "",
        *[f"**Warning: {warning}.**" for warning in results.get("warnings", [])],
        "",
        "## Summary",
        "BTA: mean over retain sites' test splits; KTA: the forget site's test split; UA: the forget set "
        "(the forget site's training slices, or its known-poisoned ones). A removal is good when it is close "
        "to the oracle on all three. Intervals: 95 % volume bootstrap. RTE = oracle seconds / model seconds. "
        "MIA AUC vs oracle: membership inference on the forget site with each slice's loss taken relative to "
        "the oracle's (difficulty calibration): 0.5 is the oracle by construction, the original's value is "
        "what there was to forget. MIA AUC (raw loss): the same attack on raw losses, which mostly measures "
        "how hard the forget set's slices are compared with the held-out ones.",
        "",
        summary_table(results),
        "",
        "## Compared with the oracle and the original",
        "Paired volume-bootstrap differences (the same resampled volumes for both models). A difference "
        f"to the oracle whose interval contains 0 is marked *{NOT_DISTINGUISHABLE}*; a difference to the "
        f"original whose interval contains 0, *{UNCHANGED}*.",
        "",
        comparison_table(results),
        "",
        "## What each removal cost",
        "Site steps: local training steps (or gradient evaluations) over all sites, the compute the hospitals "
        "pay, also as a share of the oracle's retraining; server s: the server's own computation (replaying, "
        "estimating, averaging, distilling), not its waiting; MB moved: both ways; history MB: the round "
        "history the method needs the server to keep. The last two columns compare each history-based method "
        "with retraining from scratch at its own site compute (retrain_budget@<method>): a removal that is not "
        "better than that has not helped.",
        "",
        table(COST_HEADER, cost_rows(results)),
        "",
        "## Per site",
        per_site_table(results),
        "",
    ]
    parts += _figures_part(results, figures) + _events_part(results)
    return "\n".join(parts)


def _figures_part(results: Mapping[str, Any], figures: list[str]) -> list[str]:
    parts: list[str] = []
    if figures:
        parts += ["## Figures", "Reconstruction grids: ground truth, zero-filled and every model on one grey "
                  "scale; below, absolute errors on one shared colour scale. The red box marks the poison "
                  "(poisoned federations) or where the original and the oracle differ most (anatomy shift). "
                  "For a poisoned federation, hallucination.png shows on each site's clean slice the part of the "
                  "poison a model can add (its unsampled k-space part) and what each model adds beyond the "
                  "oracle, on one signed scale, with that slice's artifact score relative to the oracle.", ""]
    for figure in figures:
        parts += [f"![{Path(figure).stem}]({figure})", ""]
    for note in results.get("figure_notes", []):
        parts += [f"- {note}"]
    return parts


def _events_part(results: Mapping[str, Any]) -> list[str]:
    events = results.get("events", [])
    if not events:
        return []
    return ["## Events", table(["time", "kind", "details"],
                               [[e["time"], e["kind"], ", ".join(f"{k}={v}" for k, v in e.items()
                                                                 if k not in ("time", "kind"))]
                                for e in events]), ""]


def write_report(root: Path, results: Mapping[str, Any]) -> Path:
    figures = sorted(f"figures/{p.name}" for p in (root / "figures").glob("*.png"))
    path = root / "report.md"
    atomic_write_bytes(path, render_report(results, figures).encode())
    return path
