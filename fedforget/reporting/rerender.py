"""``fedforget report RUN_DIR``: re-render report.md and figures from a finished run's files."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from fedforget.configs.compose import to_experiment
from fedforget.configs.schema import ZERO_FILLED, ExperimentConfig
from fedforget.data.sites import open_site_split
from fedforget.learning.audits import artifact_scorer, membership_auc
from fedforget.learning.evaluation import evaluate_zero_filled
from fedforget.recon.atomic import atomic_write_json
from fedforget.recon.hdf5io import DataFileError
from fedforget.recon.losses import ReconLoss
from fedforget.reporting.pictures import render_figures
from fedforget.reporting.report import write_report
from fedforget.reporting.results import complete


def saved_experiment(run_dir: Path) -> ExperimentConfig:
    """The resolved config a run wrote (config.yaml), validated again."""
    merged = OmegaConf.merge(OmegaConf.structured(ExperimentConfig),
                             OmegaConf.create(yaml.safe_load((run_dir / "config.yaml").read_text())))
    return to_experiment(merged)


def model_checkpoint(run_dir: Path, name: str, record: Mapping[str, Any]) -> Path:
    """Where a model's weights lie: the ``checkpoint`` its record names (a composition, whose name is not a
    file name), else ``checkpoints/<name>.pt``."""
    return run_dir / str(record.get("checkpoint") or f"checkpoints/{name}.pt")


def zero_filled_scores(cfg: ExperimentConfig, results: dict[str, Any]) -> dict[str, Any]:
    """``models.zero_filled`` for a run folder written before the baseline existed, scored from the sites' data.

    Raises:
        DataFileError / OSError: a site's data is not readable here (e.g. a deployment's).
    """
    loss = ReconLoss(cfg.federation.l1_weight)
    forget = results["forget_site"]
    sites, audit = {}, {}
    for site in results["sites"]:
        splits = ("test", "train") if site == forget else ("test",)
        scored = {split: evaluate_zero_filled(open_site_split(cfg, site, split), loss, cfg.federation.batch_size,
                                              artifact_scorer(cfg.poison, split)) for split in splits}
        sites[site] = {split: {"psnr": e.metrics.psnr, "ssim": e.metrics.ssim, "nmse": e.metrics.nmse, **e.extras}
                       for split, e in scored.items()}
        if site == forget:
            audit["mia_auc"] = membership_auc(scored["train"].slice_losses, scored["test"].slice_losses)
    return {"wall_seconds": 0.0, "steps": 0, "retain_fraction": None, "bytes_communicated": 0, "sites": sites,
            "trained_on": [], "sha256": "", "audit": audit, "baseline": "computed by fedforget report"}


def rerender(run_dir: Path) -> Path:
    """Rewrite figures and report.md of one run folder, from its files alone (``examples/`` for the pictures).

    A run written before zero-filled was part of every result gets its ``models.zero_filled``
    (and the gains and warnings that follow) added to ``results.json``; what follows from the scores
    (summary, intervals, paired comparisons) is derived again, and written back when it changed.
    """
    run_dir = run_dir.resolve()
    results = json.loads((run_dir / "results.json").read_text())
    cfg = saved_experiment(run_dir)
    if ZERO_FILLED not in results["models"]:
        try:
            results["models"] = {ZERO_FILLED: zero_filled_scores(cfg, results), **results["models"]}
        except (OSError, DataFileError) as err:
            raise DataFileError(f"{run_dir} has no zero-filled baseline and the sites' data to compute it is not "
                                f"readable here: {err}") from err
    before = json.dumps(results, sort_keys=True)
    results = complete(results, cfg.seed)  # what follows from the scores, as this version derives it
    if json.dumps(results, sort_keys=True) != before:
        atomic_write_json(run_dir / "results.json", results)
    if cfg.report.figures:
        results["figure_notes"] = render_figures(cfg, run_dir, results)
    return write_report(run_dir, results)
