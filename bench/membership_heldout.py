"""How many held-out volumes the calibrated membership audit needs: re-audit a finished run with more.

The calibrated audit scores each slice as loss(model) - loss(oracle) and compares the forget set
(members) with held-out slices of the same site. Zero-filled learned nothing, so its AUC should sit near
0.5; when it does not, the held-out slices differ from the members in something other than membership.
This re-scores a run's checkpoints at its forget site with ``test_volumes`` set to each given count
(synthetic data only: the generator writes the extra test volumes and leaves the training volumes, and so
the checkpoints, valid), and reports the pooled AUC and the AUC within each acquisition.

    python -m bench.membership_heldout outputs/poisoned-site-multirun-.../0 --test-volumes 2 8 --models ft
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from bench.common import write_result
from fedforget.clients.site import HELDOUT, SiteRuntime, resolve_site
from fedforget.configs.schema import ORACLE, ORIGINAL, ZERO_FILLED, ExperimentConfig
from fedforget.data.inspection import acquisition_of
from fedforget.data.preparation import prepare_data
from fedforget.learning.audits import membership_auc
from fedforget.learning.checkpoints import load_checkpoint
from fedforget.learning.evaluation import Evaluation, Reconstructor, zero_filled
from fedforget.learning.training import model_from_config, reconstruct
from fedforget.reporting.rerender import saved_experiment

SPLITS = ("train", HELDOUT)


def _with_test_volumes(cfg: ExperimentConfig, count: int) -> ExperimentConfig:
    site = cfg.unlearning.forget_site
    sites = {**cfg.sites, site: dataclasses.replace(cfg.sites[site], test_volumes=count)}
    return dataclasses.replace(cfg, sites=sites)


def _checkpoint_model(cfg: ExperimentConfig, path: Path) -> Reconstructor:
    model = model_from_config(cfg.model)
    model.load_state_dict(load_checkpoint(path)[0])
    model.eval()
    return lambda batch: reconstruct(model, batch)


def _acquisitions(runtime: SiteRuntime, split: str, scores: Evaluation) -> np.ndarray:
    folder = Path(runtime.split("test" if split == HELDOUT else "train").raw_samples[0].fname).parent
    names = {name: acquisition_of(folder / name) or "?" for name in set(scores.volume_names)}
    return np.array([names[scores.volume_names[v]] for v in scores.slice_volumes])


def audit_with_heldout(run: Path, cfg: ExperimentConfig, models: list[str]) -> dict[str, object]:
    """Pooled and per-acquisition calibrated AUCs of zero-filled and each checkpoint at the forget site."""
    prepare_data(cfg)
    site = cfg.unlearning.forget_site
    runtime = SiteRuntime(cfg, resolve_site({"partition-id": cfg.site_names.index(site)}, cfg), simulated=False)
    oracle = _checkpoint_model(cfg, run / "checkpoints" / f"{ORACLE}.pt")
    reference = {split: runtime.score(oracle, split) for split in SPLITS}
    contrast = {split: _acquisitions(runtime, split, reference[split]) for split in SPLITS}
    rows: dict[str, object] = {}
    for name in [ZERO_FILLED, *models]:
        reconstructor = zero_filled if name == ZERO_FILLED else _checkpoint_model(
            cfg, run / "checkpoints" / f"{name}.pt")
        scored = {split: runtime.score(reconstructor, split).slice_losses - reference[split].slice_losses
                  for split in SPLITS}
        by_contrast = {c: membership_auc(scored["train"][contrast["train"] == c],
                                         scored[HELDOUT][contrast[HELDOUT] == c])
                       for c in sorted(set(contrast[HELDOUT])) if (contrast["train"] == c).any()}
        rows[name] = {"pooled": membership_auc(scored["train"], scored[HELDOUT]), "by_acquisition": by_contrast}
    counts = {split: {c: int(n) for c, n in zip(*np.unique(contrast[split], return_counts=True))} for split in SPLITS}
    return {"slices_by_acquisition": counts, "auc": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished run folder (with checkpoints/)")
    parser.add_argument("--test-volumes", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--models", nargs="*", default=[ORIGINAL])
    parser.add_argument("--name", default="membership_heldout")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = saved_experiment(args.run)
    results = {str(n): audit_with_heldout(args.run, _with_test_volumes(cfg, n), args.models) for n in args.test_volumes}
    summary = ", ".join(f"{n} held-out volumes: zero-filled {r['auc']['zero_filled']['pooled']:.3f}"
                        for n, r in results.items())
    write_result(args.name, {"run": str(args.run), "seed": cfg.seed, "by_test_volumes": results}, summary)


if __name__ == "__main__":
    main()
