"""Phantom controls: a run's models on held-out phantom brains, each imaged with and without its skull.

The real sources of :mod:`bench.real_anatomy` are all skull-stripped: the brain alone on an empty
background. This benchmark asks how much of the gap between the phantom and the real gains that alone
explains. It scores the same held-out phantom subjects, in each brain contrast, once as acquired (scalp,
skull, extra-axial CSF) and once skull-stripped. The acquisition is the run's size, coils and noise, and the
masks are seeded by file name as on the sites. No subject here is on any site: the subjects' seed is outside
the sites' seed range.

    python -m bench.phantom_controls outputs/demo-seed0 outputs/demo-seed1 outputs/demo-seed2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from bench.common import write_result
from fedforget.configs.schema import ORACLE, ORIGINAL, ExperimentConfig
from fedforget.learning.intervals import mean_interval
from fedforget.learning.scoring import LoadedModel, MaskSetting, load_varnet, open_folder, score_checkpoint
from fedforget.recon.acquisition import acquire
from fedforget.recon.coils import coil_sensitivities
from fedforget.recon.hdf5io import write_multicoil_volume
from fedforget.recon.phantoms import CONTRASTS, brain_slices
from fedforget.reporting.rerender import saved_experiment

NAME = "phantom_controls"
PREPARATIONS = {"with skull": False, "skull-stripped": True}
SUBJECTS = 6  # held-out subjects per contrast and preparation
SUBJECT_SEED = 9_000_000  # far above any site's subject seeds


def write_controls(cfg: ExperimentConfig, root: Path) -> dict[str, Path]:
    """One folder of fastMRI files per contrast and preparation: the same subjects in each."""
    folders = {}
    for contrast in CONTRASTS["brain"]:
        for preparation, stripped in PREPARATIONS.items():
            folder = root / f"{contrast}-{preparation.replace(' ', '-')}"
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(SUBJECTS):
                seed = SUBJECT_SEED + index
                images = brain_slices(cfg.data.slices_per_volume, cfg.data.size, seed, contrast, stripped)
                maps = coil_sensitivities(cfg.data.coils, (cfg.data.size, cfg.data.size), seed)
                acq = acquire(images, maps, cfg.data.noise_std, seed)
                write_multicoil_volume(folder / f"control_{contrast}_{index:02d}.h5", acq.kspace, acq.target,
                                       patient_id=f"control-{index}", acquisition=contrast)
            folders[f"{contrast} {preparation}"] = folder
    return folders


def control_gains(score: Callable[[Path], tuple[float, float]], folders: dict[str, Path]) -> dict[str, float]:
    """Gain over zero-filled (dB) per control; ``score`` gives (model PSNR, zero-filled PSNR) of a folder."""
    gains = {}
    for name, folder in folders.items():
        model, zero = score(folder)
        gains[name] = model - zero
    return gains


def checkpoint_scorer(loaded: LoadedModel, mask: MaskSetting) -> Callable[[Path], tuple[float, float]]:
    def score(folder: Path) -> tuple[float, float]:
        result = score_checkpoint(loaded, open_folder(folder, mask), folder, mask, torch.device("cpu"))
        return result.model.metrics.psnr, result.zero_filled.metrics.psnr
    return score


def summarise(per_run: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and 95 % t-interval over runs of every model's gain per control, and of the stripping's effect."""
    summary: dict[str, Any] = {}
    for model in per_run[0]["gains"]:
        rows = {}
        for control in per_run[0]["gains"][model]:
            values = [run["gains"][model][control] for run in per_run]
            rows[control] = {"mean": statistics.fmean(values), "ci": mean_interval(values), "values": values}
        for contrast in CONTRASTS["brain"]:
            values = [run["gains"][model][f"{contrast} skull-stripped"] - run["gains"][model][f"{contrast} with skull"]
                      for run in per_run]
            rows[f"{contrast} stripped - with skull"] = {"mean": statistics.fmean(values),
                                                         "ci": mean_interval(values), "values": values}
        summary[model] = rows
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="run folders with checkpoints/original.pt, oracle.pt")
    parser.add_argument("--name", default=NAME)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    per_run = []
    with tempfile.TemporaryDirectory(prefix="phantom-controls-") as scratch:
        for run in args.runs:
            cfg = saved_experiment(run)
            mask = MaskSetting(cfg.data.mask_type, cfg.data.acceleration, cfg.data.center_fraction)
            folders = write_controls(cfg, Path(scratch) / run.name)
            gains = {model: control_gains(checkpoint_scorer(load_varnet(run / "checkpoints" / f"{model}.pt"),
                                                            mask), folders)
                     for model in (ORIGINAL, ORACLE)}
            per_run.append({"run": str(run), "seed": cfg.seed, "gains": gains})
            print(run, {k: round(v, 2) for k, v in gains[ORIGINAL].items()}, flush=True)
    summary = summarise(per_run)
    effect = {contrast: summary[ORIGINAL][f"{contrast} stripped - with skull"]["mean"]
              for contrast in CONTRASTS["brain"]}
    write_result(args.name, {"command": "python -m bench.phantom_controls " + " ".join(map(str, args.runs)),
                             "subjects": SUBJECTS, "runs": per_run, "by_model": summary},
                 f"{len(per_run)} runs; stripping the skull moves the original's gain by "
                 + ", ".join(f"{c} {v:+.2f}" for c, v in effect.items()) + " dB")


if __name__ == "__main__":
    main()
