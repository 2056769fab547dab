"""Intervals and comparisons in a run's summary: volume-bootstrap CIs and paired differences.

Each site reports its per-volume scores. A bootstrap replicate resamples every site's volumes
with replacement (independently per site and split) and recomputes BTA (mean over retain sites
of each site's mean), KTA and UA. The resampling depends only on the run's seed, the site and
the split, never on the model, so the replicates of two models are paired: a method's
difference to the oracle (or to the original) has its own interval, narrower than the two
intervals side by side, because the volumes' shared difficulty cancels.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedforget.configs.schema import ORACLE, ORIGINAL
from fedforget.learning.intervals import REPLICATES, percentile_interval

PARTS = {"BTA": "test", "KTA": "test", "UA": "train"}
REFERENCES = (ORACLE, ORIGINAL)
# The control every history-based method is compared with: retraining at the method's own site compute.
RETRAIN_CONTROL = "retrain_budget"
NOT_DISTINGUISHABLE = "not distinguishable from the oracle"
UNCHANGED = "did not change the model"


def _part_sites(results: Mapping[str, Any], part: str) -> list[str]:
    forget = results["forget_site"]
    return [s for s in results["sites"] if s != forget] if part == "BTA" else [forget]


def _resamples(count: int, seed: int, site: str, split: str, replicates: int) -> np.ndarray:
    """Volume indices of every replicate for one site and split (the same for every model)."""
    rng = np.random.default_rng([seed, zlib.crc32(f"{site}/{split}".encode())])
    return rng.integers(0, count, size=(replicates, count))


def part_replicates(results: Mapping[str, Any], model: str, part: str, metric: str = "psnr", seed: int = 0,
                    replicates: int = REPLICATES) -> np.ndarray | None:
    """Bootstrap replicates of one summary value (e.g. BTA PSNR) of one model; None without per-volume scores."""
    split, sites = PARTS[part], _part_sites(results, part)
    site_means = []
    for site in sites:
        values = results["models"][model]["sites"][site][split].get(f"{metric}_volumes")
        if not values:
            return None
        values = np.asarray(values, dtype=float)
        site_means.append(values[_resamples(len(values), seed, site, split, replicates)].mean(axis=1))
    return np.mean(site_means, axis=0)


def artifact_replicates(results: Mapping[str, Any], model: str, seed: int = 0,
                        replicates: int = REPLICATES) -> np.ndarray | None:
    """Replicates of the mean artifact score over every site's clean test volumes (poisoned federations)."""
    site_means = []
    for site in results["sites"]:
        values = results["models"][model]["sites"][site]["test"].get("artifact_score_volumes")
        if not values:
            return None
        values = np.asarray(values, dtype=float)
        site_means.append(values[_resamples(len(values), seed, site, "test", replicates)].mean(axis=1))
    return np.mean(site_means, axis=0)


def _interval(values: np.ndarray) -> list[float]:
    return list(percentile_interval(values))


def add_intervals(results: dict[str, Any], seed: int = 0) -> None:
    """Add ``psnr_ci`` to every summary part, and paired differences to the oracle and the original.

    For model m and reference r, ``summary[m]["vs_<r>"][part]`` holds the PSNR difference m - r and
    its interval (and ``artifact`` likewise for poisoned federations). A model with a retraining
    control at its own site compute (``retrain_budget@m``) gets ``vs_retrain_budget`` the same way,
    naming the control in ``model``. Runs without per-volume scores (written before they existed)
    are left as they are.
    """
    models = results["models"]
    draws = {model: {part: part_replicates(results, model, part, seed=seed) for part in PARTS} for model in models}
    artifacts = {model: artifact_replicates(results, model, seed=seed) for model in models}
    for model, summary in results["summary"].items():
        for part, replicates in draws[model].items():
            if replicates is not None:
                summary[part]["psnr_ci"] = _interval(replicates)
        if artifacts[model] is not None:
            summary["artifact_ci"] = _interval(artifacts[model])
        for reference in REFERENCES:
            if reference != model and reference in models:
                _add_comparison(results, draws, artifacts, model, reference, f"vs_{reference}")
        control = f"{RETRAIN_CONTROL}@{model}"
        if control in models and _add_comparison(results, draws, artifacts, model, control, f"vs_{RETRAIN_CONTROL}"):
            summary[f"vs_{RETRAIN_CONTROL}"]["model"] = control


def _add_comparison(results: dict[str, Any], draws: Mapping[str, Any], artifacts: Mapping[str, Any], model: str,
                    reference: str, key: str) -> bool:
    """``summary[model][key]``: the paired differences model - reference (False when none can be formed)."""
    summary, other = results["summary"][model], results["summary"][reference]
    comparison: dict[str, Any] = {}
    for part, replicates in draws[model].items():
        if replicates is not None and draws[reference][part] is not None:
            comparison[part] = {"psnr": summary[part]["psnr"] - other[part]["psnr"],
                                "psnr_ci": _interval(replicates - draws[reference][part])}
    if artifacts[model] is not None and artifacts[reference] is not None:
        comparison["artifact"] = {"value": summary["artifact"] - other["artifact"],
                                  "ci": _interval(artifacts[model] - artifacts[reference])}
    if comparison:
        summary[key] = comparison
    return bool(comparison)


def contains_zero(interval: list[float] | None) -> bool:
    return interval is not None and interval[0] <= 0.0 <= interval[1]


def verdicts(summary: Mapping[str, Any], part: str) -> list[str]:
    """The report's words for one model and summary part, from its paired intervals."""
    words = []
    if contains_zero(summary.get("vs_oracle", {}).get(part, {}).get("psnr_ci")):
        words.append(NOT_DISTINGUISHABLE)
    if contains_zero(summary.get("vs_original", {}).get(part, {}).get("psnr_ci")):
        words.append(UNCHANGED)
    return words
