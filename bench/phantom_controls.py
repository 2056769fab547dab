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
import json
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import RESULTS, write_result
from fedforget.configs.schema import ORACLE, ORIGINAL, ExperimentConfig
from fedforget.learning.intervals import mean_interval
from fedforget.learning.scoring import (
    LoadedModel,
    MaskSetting,
    example_slice,
    load_varnet,
    open_folder,
    score_checkpoint,
)
from fedforget.recon.acquisition import acquire
from fedforget.recon.coils import coil_sensitivities
from fedforget.recon.hdf5io import write_multicoil_volume
from fedforget.recon.phantoms import CONTRASTS, brain_slices
from fedforget.reporting.figures import reconstruction_grid
from fedforget.reporting.rerender import saved_experiment

NAME = "phantom_controls"
PREPARATIONS = {"with skull": False, "skull-stripped": True}
SUBJECTS = 6  # held-out subjects per contrast and preparation
SUBJECT_SEED = 9_000_000  # far above any site's subject seeds
# The phantom contrast nearest each real source of bench.real_anatomy (the b0 EPI is T2-weighted).
MATCHED_CONTRAST = {"mni152-t1": "AXT1", "head-t1-coronal": "AXT1", "brain-b0-epi": "AXT2"}


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


def example_figures(run: Path, folders: dict[str, Path], mask: MaskSetting, contrast: str) -> list[str]:
    """One subject's middle slice in ``contrast``, with and without its skull: ground truth, zero-filled and
    each model, written beside the JSON."""
    paths = []
    for preparation in PREPARATIONS:
        dataset = open_folder(folders[f"{contrast} {preparation}"], mask)
        images: dict[str, np.ndarray] = {}
        for model in (ORIGINAL, ORACLE):
            example = example_slice(load_varnet(run / "checkpoints" / f"{model}.pt"), dataset, torch.device("cpu"))
            images[model] = example.recon
        path = RESULTS / f"{NAME}-{contrast.lower()}-{preparation.replace(' ', '-')}.png"
        reconstruction_grid(path, f"held-out phantom, {contrast}, {preparation} ({run.name})",
                            example.ground_truth, example.zero_filled, images)
        paths.append(str(path.relative_to(RESULTS.parent.parent)))
    return paths


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


def matched_ratios(per_run: Sequence[dict[str, Any]], real: dict[str, Any]) -> dict[str, Any]:
    """Each real source's gain (``bench.real_anatomy``'s record of the same runs) over the same run's gain on
    phantoms of the nearest contrast, with and without their skull: mean and 95 % t-interval over runs."""
    by_run = {str(Path(r["run"]).resolve()): r for r in real["runs"]}
    runs = [(r, by_run[str(Path(r["run"]).resolve())]) for r in per_run]
    ratios: dict[str, Any] = {}
    for source, contrast in MATCHED_CONTRAST.items():
        if source not in runs[0][1]["scores"]:
            continue
        for model in (ORIGINAL, ORACLE):
            for preparation in PREPARATIONS:
                values = [scored["scores"][source][model]["gain"] / controls["gains"][model][f"{contrast} {preparation}"]
                          for controls, scored in runs]
                ratios.setdefault(source, {}).setdefault(model, {})[preparation] = {
                    "contrast": contrast, "mean": statistics.fmean(values), "ci": mean_interval(values),
                    "values": values}
    return ratios


def same_runs(per_run: Sequence[dict[str, Any]], real: dict[str, Any]) -> bool:
    """Whether a real-anatomy record scored exactly these run folders."""
    return sorted(str(Path(r["run"]).resolve()) for r in per_run) == \
        sorted(str(Path(r["run"]).resolve()) for r in real.get("runs", []))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="run folders with checkpoints/original.pt, oracle.pt")
    parser.add_argument("--name", default=NAME)
    parser.add_argument("--real", type=Path, default=RESULTS / "real_anatomy.json",
                        help="bench.real_anatomy's record of the same runs, for the matched transfer ratios")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    per_run, figures = [], []
    with tempfile.TemporaryDirectory(prefix="phantom-controls-") as scratch:
        for run in args.runs:
            cfg = saved_experiment(run)
            mask = MaskSetting(cfg.data.mask_type, cfg.data.acceleration, cfg.data.center_fraction)
            folders = write_controls(cfg, Path(scratch) / run.name)
            gains = {model: control_gains(checkpoint_scorer(load_varnet(run / "checkpoints" / f"{model}.pt"),
                                                            mask), folders)
                     for model in (ORIGINAL, ORACLE)}
            per_run.append({"run": str(run), "seed": cfg.seed, "gains": gains})
            if not figures:
                figures = example_figures(run, folders, mask, "AXT1")
            print(run, {k: round(v, 2) for k, v in gains[ORIGINAL].items()}, flush=True)
    summary = summarise(per_run)
    real = json.loads(args.real.read_text()) if args.real.is_file() else {}
    matched = matched_ratios(per_run, real) if same_runs(per_run, real) else {}
    effect = {contrast: summary[ORIGINAL][f"{contrast} stripped - with skull"]["mean"]
              for contrast in CONTRASTS["brain"]}
    write_result(args.name, {"command": "python -m bench.phantom_controls " + " ".join(map(str, args.runs)),
                             "subjects": SUBJECTS, "runs": per_run, "by_model": summary, "figures": figures,
                             "matched_transfer_ratio": matched},
                 f"{len(per_run)} runs; stripping the skull moves the original's gain by "
                 + ", ".join(f"{c} {v:+.2f}" for c, v in effect.items()) + " dB")


if __name__ == "__main__":
    main()
