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
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import RESULTS, spread, write_result
from fedforget.configs.atomic import swap_dir
from fedforget.configs.schema import ORACLE, ORIGINAL, DataConfig, ExperimentConfig
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
MATCHED_CONTRAST = {"mni152-t1": "AXT1", "head-t1-coronal": "AXT1", "brain-b0-epi": "AXT2", "colin27-t1": "AXT1",
                    "colin27-t1-stripped": "AXT1"}


def write_controls(cfg: ExperimentConfig, scratch: Path) -> dict[str, Path]:
    """One folder of fastMRI files per contrast and preparation: the same subjects in each. Written once per
    acquisition setting under ``scratch`` (the files depend on nothing else)."""
    data = cfg.data
    root = scratch / f"controls-{data.size}px-{data.coils}coils-{data.slices_per_volume}slices-{data.noise_std:g}"
    if not root.is_dir():
        _write_controls(data, root)
    return {f"{contrast} {preparation}": root / _folder(contrast, preparation)
            for contrast in CONTRASTS["brain"] for preparation in PREPARATIONS}


def _folder(contrast: str, preparation: str) -> str:
    return f"{contrast}-{preparation.replace(' ', '-')}"


def _write_controls(data: DataConfig, root: Path) -> None:
    """Written beside ``root`` and renamed into place, so a folder that is there is complete."""
    build = root.with_name(root.name + ".build")
    for contrast in CONTRASTS["brain"]:
        for preparation, stripped in PREPARATIONS.items():
            folder = build / _folder(contrast, preparation)
            folder.mkdir(parents=True)
            for index in range(SUBJECTS):
                seed = SUBJECT_SEED + index
                images = brain_slices(data.slices_per_volume, data.size, seed, contrast, stripped)
                maps = coil_sensitivities(data.coils, (data.size, data.size), seed)
                acq = acquire(images, maps, data.noise_std, seed)
                write_multicoil_volume(folder / f"control_{contrast}_{index:02d}.h5", acq.kspace, acq.target,
                                       patient_id=f"control-{index}", acquisition=contrast)
    swap_dir(build, root)


def checkpoint_gains(loaded: LoadedModel, mask: MaskSetting, folders: dict[str, Path]) -> dict[str, float]:
    """A model's gain over zero-filled (dB) on each control, under the same masks."""
    gains = {}
    for name, folder in folders.items():
        score = score_checkpoint(loaded, open_folder(folder, mask), folder, mask, torch.device("cpu"))
        gains[name] = score.model.metrics.psnr - score.zero_filled.metrics.psnr
    return gains


def example_figures(run: Path, models: dict[str, LoadedModel], folders: dict[str, Path], mask: MaskSetting,
                    contrast: str) -> list[str]:
    """One subject's middle slice in ``contrast``, with and without its skull: ground truth, zero-filled and
    each model, written beside the JSON."""
    paths = []
    for preparation in PREPARATIONS:
        dataset = open_folder(folders[f"{contrast} {preparation}"], mask)
        images: dict[str, np.ndarray] = {}
        for name, loaded in models.items():
            example = example_slice(loaded, dataset, torch.device("cpu"))
            images[name] = example.recon
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
            rows[control] = spread(values)
        for contrast in CONTRASTS["brain"]:
            values = [run["gains"][model][f"{contrast} skull-stripped"] - run["gains"][model][f"{contrast} with skull"]
                      for run in per_run]
            rows[f"{contrast} stripped - with skull"] = spread(values)
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
                ratios.setdefault(source, {}).setdefault(model, {})[preparation] = {"contrast": contrast,
                                                                                    **spread(values)}
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
            folders = write_controls(cfg, Path(scratch))
            models = {model: load_varnet(run / "checkpoints" / f"{model}.pt") for model in (ORIGINAL, ORACLE)}
            gains = {model: checkpoint_gains(loaded, mask, folders) for model, loaded in models.items()}
            per_run.append({"run": str(run), "seed": cfg.seed, "gains": gains})
            if not figures:
                figures = example_figures(run, models, folders, mask, "AXT1")
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
