"""What each removal cost, and where it lands on the forget/retain frontier.

Cost is counted in the units a consortium pays: site compute (local training steps, or gradient
evaluations, over all sites; reported relative to the oracle's retraining), the server's own
seconds, messages and bytes, and the round history the server stores. A point on the frontier is
a model's site compute (x), its KTA distance to the oracle (y, with its interval) and its BTA
distance to the oracle (the marker's colour).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

# REFERENCE_MODELS: the models that are references, not removals.
from fedforget.configs.schema import ORACLE, REFERENCE_MODELS, ZERO_FILLED

RETRAIN = "retrain_budget"


class FrontierPoint(NamedTuple):
    """One model on the frontier; ``kta_ci`` is the interval of ``kta`` (None where there is none)."""

    model: str
    compute: float
    kta: float
    kta_ci: tuple[float, float] | None
    bta: float
    family: str


def family(model: str, record: Mapping[str, Any]) -> str:
    """``retrain`` (the control), ``history`` (history-based methods), ``composition`` (``fedforget compose``)
    or ``centralised``."""
    if model.startswith(RETRAIN):
        return "retrain"
    kind = record.get("family")
    return str(kind) if kind in ("history", "composition") else "centralised"


def compute_fraction(results: Mapping[str, Any], model: str) -> float | None:
    """A model's site steps relative to the oracle's (None when either has no cost record)."""
    models = results["models"]
    oracle = models.get(ORACLE, {}).get("cost", {}).get("site_steps")
    steps = models[model].get("cost", {}).get("site_steps")
    return steps / oracle if steps is not None and oracle else None


def frontier_points(results: Mapping[str, Any]) -> list[FrontierPoint]:
    """Every removal of one run (and its retraining controls) on the frontier."""
    if "models" not in results:
        return []
    points = []
    for model, summary in results["summary"].items():
        compute = compute_fraction(results, model)
        versus = summary.get("vs_oracle", {})
        if model in REFERENCE_MODELS or compute is None or "KTA" not in versus or not _finite(versus):
            continue
        ci = versus["KTA"].get("psnr_ci")
        points.append(FrontierPoint(model, compute, versus["KTA"]["psnr"], tuple(ci) if ci else None,
                                    versus["BTA"]["psnr"], family(model, results["models"][model])))
    return points


def _finite(versus: Mapping[str, Any]) -> bool:
    return all(math.isfinite(versus[part]["psnr"]) for part in ("BTA", "KTA"))


def frontier_points_over_seeds(models: Mapping[str, Mapping[str, Any]],
                               families: Mapping[str, str]) -> list[FrontierPoint]:
    """The frontier of a multirun group: means over seeds, the KTA interval being the t-interval of the mean."""
    points = []
    for model, m in models.items():
        compute, kta, bta = (m.get(k, {}).get("mean") for k in ("compute", "KTA_minus_oracle", "BTA_minus_oracle"))
        if model in REFERENCE_MODELS or None in (compute, kta, bta) or not math.isfinite(kta + bta):
            continue
        ci = m["KTA_minus_oracle"].get("ci")
        points.append(FrontierPoint(model, compute, kta, tuple(ci) if ci else None, bta, families.get(model, "")))
    return points


def cost_rows(results: Mapping[str, Any]) -> list[list[Any]]:
    """Per model: site compute (steps, % of the oracle's), server seconds, messages, MB moved, history MB,
    RTE, and its BTA / KTA difference to retraining at its own compute (``vs_retrain_budget``)."""
    rows = []
    for model, record in results["models"].items():
        cost = record.get("cost")
        if cost is None or model == ZERO_FILLED:
            continue
        compute = compute_fraction(results, model)
        summary = results["summary"].get(model, {})
        versus = summary.get(f"vs_{RETRAIN}", {})
        rows.append([model, cost["site_steps"], f"{100 * compute:.1f} %" if compute is not None else "–",
                     f"{cost['server_seconds']:.2f}", cost["messages"], f"{cost['bytes'] / 1e6:.1f}",
                     f"{cost['history_bytes'] / 1e6:.1f}", _number(summary.get("RTE"), 1),
                     _difference(versus.get("BTA")), _difference(versus.get("KTA"))])
    return rows


COST_HEADER = ["model", "site steps", "of the oracle's", "server s", "messages", "MB moved", "history MB", "RTE",
               "BTA - retraining at same compute [95 % CI]", "KTA - retraining at same compute [95 % CI]"]


def _number(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _difference(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "–"
    ci = entry.get("psnr_ci")
    text = f"{entry['psnr']:+.2f}"
    return f"{text} [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else text
