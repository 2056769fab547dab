"""``report.md``: the run's tables, readable on its own (also re-rendered by ``fedforget report``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedforget.configs.schema import ExperimentConfig
from fedforget.recon.atomic import atomic_write_bytes


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
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
                    rows.append([site, info["role"], split, model, _fmt(m["psnr"]), _fmt(m["ssim"], 4),
                                 _fmt(m["nmse"], 4)])
    return table(["site", "role", "split", "model", "PSNR (dB)", "SSIM", "NMSE"], rows)


def summary_table(results: Mapping[str, Any]) -> str:
    rows = []
    for model, s in results["summary"].items():
        record = results["models"][model]
        rows.append([model, _fmt(s["BTA"]["psnr"]), _fmt(s["BTA"]["ssim"], 4), _fmt(s["KTA"]["psnr"]),
                     _fmt(s["KTA"]["ssim"], 4), _fmt(s["UA"]["psnr"]), _fmt(s["UA"]["ssim"], 4), _fmt(s["RTE"]),
                     _fmt(record.get("audit", {}).get("mia_auc"), 3), record["steps"],
                     _fmt(record["wall_seconds"], 1), f"{record['bytes_communicated'] / 1e6:.1f}"])
    return table(["model", "BTA PSNR", "BTA SSIM", "KTA PSNR", "KTA SSIM", "UA PSNR", "UA SSIM", "RTE",
                  "MIA AUC", "steps", "seconds", "MB moved"], rows)


def render_report(cfg: ExperimentConfig | None, results: Mapping[str, Any], figures: list[str] = ()) -> str:
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
        "## Summary",
        "BTA: mean over retain sites' test splits; KTA: the forget site's test split; UA: the forget site's "
        "training split (the data to forget). A removal is good when it is close to the oracle on all three. "
        "RTE = oracle seconds / model seconds. MIA AUC: loss-based membership inference on the forget site "
        "(training vs held-out slices); the target is the oracle's value, not 0.5.",
        "",
        summary_table(results),
        "",
        "## Per site",
        per_site_table(results),
        "",
    ]
    if figures:
        parts += ["## Figures", "Reconstruction grids: ground truth, zero-filled and every model on one grey "
                  "scale; below, absolute errors on one shared colour scale. The red box marks the poison "
                  "(poisoned federations) or where the original and the oracle differ most (anatomy shift).", ""]
    for figure in figures:
        parts += [f"![{Path(figure).stem}]({figure})", ""]
    for note in results.get("figure_notes", []):
        parts += [f"- {note}"]
    events = results.get("events", [])
    if events:
        parts += ["## Events", table(["time", "kind", "details"],
                                     [[e["time"], e["kind"], ", ".join(f"{k}={v}" for k, v in e.items()
                                                                       if k not in ("time", "kind"))]
                                      for e in events]), ""]
    return "\n".join(parts)


def write_report(root: Path, cfg: ExperimentConfig | None, results: Mapping[str, Any]) -> Path:
    figures = sorted(f"figures/{p.name}" for p in (root / "figures").glob("*.png"))
    path = root / "report.md"
    atomic_write_bytes(path, render_report(cfg, results, figures).encode())
    return path
