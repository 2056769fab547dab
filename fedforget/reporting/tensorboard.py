"""TensorBoard layout: ``tensorboard/<site>/`` per site plus ``tensorboard/server/``; tags ``<phase>/<metric>``;
``tensorboard/hparams/<model>/`` holds one HParams entry per model (written when the results are final)."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from fedforget.configs.schema import ZERO_FILLED, ExperimentConfig

SERVER = "server"


class Boards:
    """One event writer per site (and one for the server)."""

    def __init__(self, root: Path, sites: Iterable[str]) -> None:
        self.writers = {name: SummaryWriter(log_dir=str(root / name)) for name in [*sites, SERVER]}

    def site_metrics(self, phase: str, step: int, per_site: Mapping[str, Mapping[str, float]]) -> None:
        """Write ``<phase>/<metric>`` for every site's metrics at ``step``."""
        for site, metrics in per_site.items():
            for metric, value in metrics.items():
                self.writers[site].add_scalar(f"{phase}/{metric}", value, step)

    def server_metric(self, tag: str, value: float, step: int) -> None:
        self.writers[SERVER].add_scalar(tag, value, step)

    def text(self, site: str, tag: str, text: str, step: int) -> None:
        self.writers[site].add_text(tag, text, step)

    def flush(self) -> None:
        for writer in self.writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


HPARAMS = "hparams"
# results.json summary columns shown as HParams metrics: (tag, summary split, metric).
HPARAM_METRICS = (("BTA/psnr", "BTA", "psnr"), ("KTA/psnr", "KTA", "psnr"), ("UA/psnr", "UA", "psnr"),
                  ("BTA/ssim", "BTA", "ssim"), ("KTA/ssim", "KTA", "ssim"), ("UA/ssim", "UA", "ssim"))
MEMBERSHIP_METRIC = "membership/auc"
CALIBRATED_MEMBERSHIP_METRIC = "membership/auc_vs_oracle"
HParams = dict[str, str | float | int]


def hparam_entries(cfg: ExperimentConfig, results: Mapping[str, Any]) -> dict[str, tuple[HParams, dict[str, float]]]:
    """One HParams entry per model (zero-filled, original, oracle, every method that finished): settings, scores.

    Settings: ``model`` (the method's registry name, or zero_filled / original / oracle),
    ``retain_fraction`` (1.0 for original and oracle, which saw all retain data; 0 for zero-filled),
    ``local_steps`` (optimizer steps a site takes per message: the federation's for original and
    oracle, 0 for zero-filled; for a method the model's recorded ``local_steps``, else
    ``unlearning.local_steps``, else 1), ``seed``, ``experiment``, ``forget_site``. Metrics: BTA /
    KTA / UA PSNR and SSIM and the membership AUCs (raw and vs the oracle; left out where not finite).
    """
    entries = {}
    for name, record in results["models"].items():
        summary = results["summary"][name]
        is_method = name in cfg.unlearning.methods
        baseline = name == ZERO_FILLED
        default_steps = getattr(cfg.unlearning, "local_steps", 1) if is_method else cfg.federation.local_steps
        default_steps = 0 if baseline else default_steps
        fraction = record.get("retain_fraction")
        fraction = 0.0 if baseline else (1.0 if fraction is None else fraction)
        hparams: HParams = {"model": name, "retain_fraction": float(fraction),
                            "local_steps": int(record.get("local_steps") or default_steps), "seed": int(cfg.seed),
                            "experiment": cfg.name, "forget_site": cfg.unlearning.forget_site}
        metrics = {tag: summary[split][metric] for tag, split, metric in HPARAM_METRICS}
        metrics[MEMBERSHIP_METRIC] = record.get("audit", {}).get("mia_auc", math.nan)
        metrics[CALIBRATED_MEMBERSHIP_METRIC] = record.get("audit", {}).get("mia_auc_calibrated", math.nan)
        entries[name] = hparams, {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}
    return entries


def write_hparams(root: Path, entries: Mapping[str, tuple[HParams, dict[str, float]]]) -> list[Path]:
    """``root/hparams/<model>/``: one event folder per model, so TensorBoard's HParams table compares them.

    A folder left by an earlier attempt of the same run is replaced (one entry per model).
    """
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    folders = []
    models = sorted(entries)
    for model, (hparams, metrics) in entries.items():
        folder = root / HPARAMS / model
        shutil.rmtree(folder, ignore_errors=True)
        experiment, start, end = hparams_summary(hparams, metrics, hparam_domain_discrete={"model": models})
        with SummaryWriter(log_dir=str(folder)) as writer:
            for summary in (experiment, start, end):
                writer.file_writer.add_summary(summary)
            for tag, value in metrics.items():
                writer.add_scalar(tag, value, 0)
        folders.append(folder)
    return folders
