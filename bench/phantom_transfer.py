"""Phantom transfer probe: how a change to the phantoms moves what a model trained on them carries to real MRI.

For each variant (Hydra overrides of one experiment) and seed, the original is trained with the plain
in-process FedAvg loop (the Flower run's training without Flower, same weights: ``learning/plain_loop.py``),
then scored with zero-filled on every phantom test site, on the real sources of
:mod:`bench.real_anatomy` (simulated at the experiment's size, coils and noise) and on the held-out
phantom brains of :mod:`bench.phantom_controls`, with and without their skull. Reported per run: each
phantom site's gain over zero-filled, each real source's gain, and the transfer ratio (real gain over the
mean phantom brain gain). This is the fast loop behind the phantom changes; the Flower runs
(:mod:`bench.real_anatomy` on ``fedforget run`` folders) confirm them.

    make anatomy-sources
    python -m bench.phantom_transfer --seeds 0 --variant base= --variant noskull=...
"""

from __future__ import annotations

import argparse
import ast
import importlib
import shlex
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from bench.common import write_result
from bench.knowledge_gap import data_root, parse_variant, site_scores
from bench.phantom_controls import write_controls
from bench.real_anatomy import DEFAULT_SOURCES, SOURCES, build_site, extract
from fedforget.configs import load_experiment
from fedforget.configs.compose import fingerprint
from fedforget.configs.schema import ZERO_FILLED, ExperimentConfig
from fedforget.data.synthetic import prepare_synthetic_data
from fedforget.learning.evaluation import evaluate, evaluate_zero_filled
from fedforget.learning.plain_loop import plain_fedavg
from fedforget.learning.scoring import MaskSetting, open_folder
from fedforget.learning.training import model_from_config
from fedforget.recon.losses import ReconLoss


def real_scores(cfg: ExperimentConfig, state: dict[str, torch.Tensor], sites: dict[str, Path]) -> dict[str, Any]:
    """PSNR of the model and of zero-filled on each real source, and the gain."""
    mask = MaskSetting(cfg.data.mask_type, cfg.data.acceleration, cfg.data.center_fraction)
    model = model_from_config(cfg.model)
    model.load_state_dict(state)
    loss, scores = ReconLoss(), {}
    for name, folder in sites.items():
        dataset = open_folder(folder, mask)
        psnr = evaluate(model, dataset, loss, torch.device("cpu")).metrics.psnr
        zero = evaluate_zero_filled(dataset, loss).metrics.psnr
        scores[name] = {"psnr": psnr, "zero_filled_psnr": zero, "gain": psnr - zero}
    return scores


def apply_patches(patches: list[str]) -> None:
    """``module.ATTRIBUTE=value`` settings of phantom constants (exploration only: a change that helps becomes
    a real phantom change). Each value is a Python literal."""
    for patch in patches:
        target, _, value = patch.partition("=")
        module, _, attribute = target.rpartition(".")
        if not hasattr(importlib.import_module(module), attribute):
            raise SystemExit(f"{module} has no {attribute}")
        setattr(importlib.import_module(module), attribute, ast.literal_eval(value))


def one_run(experiment: str, overrides: list[str], seed: int, sources: Path, scratch: Path,
            patches: list[str]) -> dict[str, Any]:
    probe = load_experiment(experiment, [*overrides, f"seed={seed}"])
    root = data_root(probe)
    if patches:  # patched phantoms never reuse the unpatched sites' folder
        root = root.with_name(f"{root.name}-{fingerprint(patches)}")
    cfg = load_experiment(experiment, [*overrides, f"seed={seed}", f"data.root={root}"])
    apply_patches(patches)
    prepare_synthetic_data(cfg)
    original = plain_fedavg(cfg, cfg.site_names)
    phantom, zero = site_scores(cfg, original.state), site_scores(cfg, None)
    gains = {s: phantom[s]["test_psnr"] - zero[s]["test_psnr"] for s in cfg.site_names}
    brain = statistics.fmean(g for s, g in gains.items() if cfg.sites[s].anatomy == "brain")
    images = {s.name: extract(s, sources, scratch / "images") for s in SOURCES}
    sites = {s.name: build_site(cfg, s, images[s.name], scratch / f"sites-{seed}" / s.name, None, 24)
             for s in SOURCES}
    real = real_scores(cfg, original.state, sites)
    controls = real_scores(cfg, original.state, write_controls(cfg, scratch))
    return {"seed": seed, "overrides": overrides, "patches": patches, "phantom_gain": gains, "phantom_brain_gain": brain,
            "phantom_zero_filled": {s: zero[s]["test_psnr"] for s in cfg.site_names},
            "real": real, "transfer_ratio": {name: row["gain"] / brain for name, row in real.items()},
            "controls": {name: row["gain"] for name, row in controls.items()},
            "training_seconds": original.seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variant", action="append", default=[], help="NAME=OVERRIDES; repeatable")
    parser.add_argument("--patch", action="append", default=[],
                        help="module.ATTRIBUTE=literal for every variant, e.g. "
                             "fedforget.recon.phantoms.rendering.BLUR_SIGMA_PX=1.0")
    parser.add_argument("--sources", type=Path, default=DEFAULT_SOURCES)
    parser.add_argument("--name", default="phantom_transfer")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory(prefix="phantom-transfer-") as scratch:
        for name, overrides in [parse_variant(v) for v in args.variant] or [("base", [])]:
            for seed in args.seeds:
                row = {"variant": name, **one_run(args.experiment, overrides, seed, args.sources, Path(scratch),
                                                          args.patch)}
                rows.append(row)
                real = ", ".join(f"{k} {v['gain']:+.2f} ({row['transfer_ratio'][k]:.2f})"
                                 for k, v in row["real"].items())
                phantom = ", ".join(f"{k} {v:+.2f}" for k, v in row["phantom_gain"].items())
                controls = ", ".join(f"{k} {v:+.2f}" for k, v in row["controls"].items())
                print(f"{name} seed {seed}: phantom {phantom}; real {real}; controls {controls}; "
                      f"{row['training_seconds']:.0f} s",
                      flush=True)
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m bench.phantom_transfer", *map(shlex.quote, given)])
    write_result(args.name, {"command": command, "experiment": args.experiment, "seeds": args.seeds,
                             "zero_filled": ZERO_FILLED,
                             "runs": rows}, f"{len(rows)} runs")


if __name__ == "__main__":
    main()
