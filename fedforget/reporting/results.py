"""``results.json`` and ``audit.json``: the contract other tools read (extend, never rename)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedforget.configs.schema import FORGET, ORACLE, ORIGINAL, RETAIN, ZERO_FILLED, ExperimentConfig
from fedforget.reporting.comparisons import add_intervals
from fedforget.strategies.directory import SiteInfo

SCHEMA_VERSION = 1
SUMMARY_METRICS = ("psnr", "ssim")


@dataclass
class ModelRecord:
    """One model's cost and its scores at every site."""

    wall_seconds: float
    steps: int
    retain_fraction: float | None
    bytes_communicated: int
    sites: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    trained_on: list[str] = field(default_factory=list)
    sha256: str = ""
    audit: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"wall_seconds": self.wall_seconds, "steps": self.steps, "retain_fraction": self.retain_fraction,
                "bytes_communicated": self.bytes_communicated, "sites": self.sites, "trained_on": self.trained_on,
                "sha256": self.sha256, "audit": self.audit, **self.details}


def site_section(cfg: ExperimentConfig, infos: Mapping[str, SiteInfo]) -> dict[str, Any]:
    forget = cfg.unlearning.forget_site
    return {name: {"anatomy": cfg.sites[name].anatomy, "role": FORGET if name == forget else RETAIN,
                   "poisoned": cfg.is_poisoned(name), "train_slices": info.train_slices,
                   "test_slices": info.test_slices, "train_volumes": info.train_volumes,
                   "test_volumes": info.test_volumes, "device": info.device, "runtime": dict(info.runtime)}
            for name, info in infos.items()}


# A site counts as learned only when the original model beats zero-filled there by this much (PSNR dB).
LEARNED_MARGIN_DB = 2.0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _roles(results: Mapping[str, Any]) -> tuple[str, list[str]]:
    forget = results["forget_site"]
    return forget, [name for name in results["sites"] if name != forget]


def summarise(results: Mapping[str, Any]) -> dict[str, Any]:
    """BTA (retain sites' test), KTA (forget site's test), UA (forget site's train), RTE (oracle time / time)."""
    forget, retain = _roles(results)
    models = results["models"]
    oracle_seconds = models[ORACLE]["wall_seconds"] if ORACLE in models else None
    summary = {}
    for name, record in models.items():
        scores, seconds = record["sites"], record["wall_seconds"]
        summary[name] = {
            "BTA": {m: _mean([scores[s]["test"][m] for s in retain]) for m in SUMMARY_METRICS},
            "KTA": {m: scores[forget]["test"][m] for m in SUMMARY_METRICS},
            "UA": {m: scores[forget]["train"][m] for m in SUMMARY_METRICS},
            "RTE": oracle_seconds / seconds if oracle_seconds is not None and seconds > 0 else None,
        }
        artifacts = [scores[s]["test"]["artifact_score"] for s in scores if "artifact_score" in scores[s]["test"]]
        if artifacts:
            summary[name]["artifact"] = _mean(artifacts)
    return summary


def add_gains_over_zero_filled(results: dict[str, Any]) -> None:
    """Every model's site entries get ``gain_over_zero_filled``: its PSNR minus zero-filled's (same split)."""
    baseline = results["models"][ZERO_FILLED]["sites"]
    for record in results["models"].values():
        for site, splits in record["sites"].items():
            for split, metrics in splits.items():
                metrics["gain_over_zero_filled"] = metrics["psnr"] - baseline[site][split]["psnr"]


def not_learned(results: Mapping[str, Any], model: str = ORIGINAL) -> list[str]:
    """Sites where ``model`` is not clearly above zero-filled, in words (nothing can be unlearned there)."""
    return [f"site {site} was not learned: {splits['test']['gain_over_zero_filled']:+.1f} dB over zero-filled"
            for site, splits in results["models"][model]["sites"].items()
            if splits["test"]["gain_over_zero_filled"] < LEARNED_MARGIN_DB]


def complete(results: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Derive what follows from the models' scores: gains over zero-filled, the summary with its
    intervals and paired comparisons (bootstrap seeded by the run's ``seed``), warnings."""
    add_gains_over_zero_filled(results)
    results["summary"] = summarise(results)
    add_intervals(results, seed)
    results["warnings"] = not_learned(results) if ORIGINAL in results["models"] else []
    return results


def build_results(cfg: ExperimentConfig, infos: Mapping[str, SiteInfo], models: Mapping[str, ModelRecord],
                  extra: Mapping[str, Any]) -> dict[str, Any]:
    results = {
        "schema": SCHEMA_VERSION,
        "experiment": cfg.name,
        "forget_site": cfg.unlearning.forget_site,
        "sites": site_section(cfg, infos),
        "models": {name: record.to_json() for name, record in models.items()},
        **extra,
    }
    return complete(results, cfg.seed)


def build_audit(cfg: ExperimentConfig, models: Mapping[str, ModelRecord], started: str, finished: str,
                events: list[dict[str, Any]], data: Mapping[str, Any] | None = None,
                cache_keys: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The removal record: what was removed, how, the model fingerprints before and after, and the data used.

    ``data`` is ``{"sites": {site: {train, test, poison_manifest_sha256}}, "server_retain": {site: ...} | None}``,
    each split as ``{folder, volumes_from, volumes, files: [{name, bytes, sha256}]}``; ``cache_keys`` are the
    model cache's keys of the original and the oracle (configuration + training data).
    """
    original = models[ORIGINAL]
    audit = {
        "forget_site": cfg.unlearning.forget_site,
        "retain_sites": cfg.retain_sites,
        "retain_fraction": cfg.unlearning.retain_fraction,
        "retain_access": cfg.unlearning.retain_access,
        "methods": [m for m in cfg.unlearning.methods if m in models],
        "model_sha256_before": original.sha256,
        "model_sha256_after": {name: models[name].sha256 for name in cfg.unlearning.methods if name in models},
        "oracle_sha256": models[ORACLE].sha256 if ORACLE in models else None,
        "oracle_trained_on": models[ORACLE].trained_on if ORACLE in models else None,
        "membership_auc": {name: record.audit.get("mia_auc") for name, record in models.items()},
        "started": started,
        "finished": finished,
        "seconds": {name: record.wall_seconds for name, record in models.items()},
        "events": events,
        "data": dict(data or {}),
        "model_cache_keys": dict(cache_keys or {}),
    }
    if "history" in original.details:  # the round history the server kept: rounds, dtype, bytes
        audit["history"] = original.details["history"]
    return audit
