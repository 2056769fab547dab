"""Source variants: which property of a real image the run's models fail on.

One real source (default: Colin27 with its skull, from ``make anatomy-sources``) is changed one property at
a time and each variant is scored by every run's original, under the same masks (every variant is written
under the same file name, and fastMRI seeds a volume's mask by its name) and the same coil, phase and noise
draws:

* ``padded-<f>``: a margin around each slice, so the head fills a smaller part of the field of view (the
  phantoms' heads fill about half of it);
* ``tissue-classes-<k>``: every foreground voxel replaced by the mean of its intensity class (k classes by
  1-D k-means): the anatomy's geometry without its texture or intensity histogram;
* ``blurred``: a Gaussian of one output pixel: fine detail removed.

A variant's *change* is its gain over zero-filled minus the unchanged source's, per run; over runs, a mean
with a 95 % t-interval.

    make anatomy-sources
    python -m bench.source_variants outputs/demo-seed0 outputs/demo-seed1 outputs/demo-seed2
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from bench.common import spread, write_result
from bench.real_anatomy import (
    DEFAULT_SOURCES,
    DRAWS,
    SOURCES,
    Source,
    build_site,
    extract,
    file_sha256,
    scored_slices,
    source_named,
)
from fedforget.configs.schema import ORIGINAL, ExperimentConfig
from fedforget.learning.scoring import MaskSetting, load_varnet, open_folder, score_checkpoint
from fedforget.reporting.rerender import saved_experiment

NAME = "source_variants"
MAX_SLICES = 24  # as bench.real_anatomy scores
BACKGROUND = 0.04  # of the volume's maximum: below it a voxel is background, never a tissue class


def padded(factor: float) -> Callable[[np.ndarray, float], np.ndarray]:
    def change(slices: np.ndarray, _: float) -> np.ndarray:
        margin = int(round(max(slices.shape[1:]) * (factor - 1) / 2))
        return np.pad(slices, ((0, 0), (margin, margin), (margin, margin)))
    return change


def tissue_classes(classes: int) -> Callable[[np.ndarray, float], np.ndarray]:
    def change(slices: np.ndarray, _: float) -> np.ndarray:
        foreground = slices > BACKGROUND * slices.max()
        values = slices[foreground]
        centres = np.quantile(values, np.linspace(0.1, 0.9, classes))
        for _ in range(30):  # 1-D k-means: a few dozen passes settle
            labels = np.argmin(np.abs(values[:, None] - centres[None]), axis=1)
            centres = np.array([values[labels == k].mean() for k in range(classes)])
        out = np.zeros_like(slices)
        out[foreground] = centres[np.argmin(np.abs(values[:, None] - centres[None]), axis=1)]
        return out
    return change


def blurred(slices: np.ndarray, downsampling: float) -> np.ndarray:
    """One output pixel of Gaussian blur, in the source's in-plane pixels."""
    return ndimage.gaussian_filter(slices, (0, downsampling, downsampling))


VARIANTS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "unchanged": lambda slices, _: slices,
    "padded-1.2": padded(1.2), "padded-1.4": padded(1.4),
    "tissue-classes-4": tissue_classes(4), "tissue-classes-6": tissue_classes(6),
    "blurred": blurred,
}


def write_variants(cfg: ExperimentConfig, source: Source, image: Path, scratch: Path) -> dict[str, Path]:
    """Each variant of the source's scored slices as one ``.npy`` stack under ``scratch/<variant>/test/``,
    every one under the same file name.

    The slices are the ones :mod:`bench.real_anatomy` scores (enough foreground, at most 24, evenly spaced),
    chosen on the unchanged source, so that a variant that shrinks the foreground keeps the same slices."""
    chosen = scored_slices(cfg, source, image, MAX_SLICES)
    slices = chosen.volume.slices[chosen.kept]
    downsampling = max(slices.shape[1:]) / cfg.data.size
    paths = {}
    for name, change in VARIANTS.items():
        path = scratch / name / "test" / f"{source.name}.npy"
        path.parent.mkdir(parents=True)
        np.save(path, change(slices, downsampling).astype(np.float32))
        paths[name] = path
    return paths


def score_variants(run: Path, source: Source, images: dict[str, Path], scratch: Path) -> dict[str, float]:
    """The run's original: gain over zero-filled on each variant, at the run's size, coils and noise."""
    cfg = saved_experiment(run)
    mask = MaskSetting(cfg.data.mask_type, cfg.data.acceleration, cfg.data.center_fraction)
    loaded = load_varnet(run / "checkpoints" / f"{ORIGINAL}.pt")
    stack = source._replace(slice_axis=0)  # the variants are (slices, rows, cols) stacks
    setting = f"{cfg.data.size}px-{cfg.data.coils}coils-{cfg.data.noise_std:g}"  # all the sites depend on
    gains = {}
    for name, image in images.items():
        folder = scratch / f"site-{setting}-{name}" / "test"
        if not folder.is_dir():
            folder = build_site(cfg, stack, image, folder.parent, None, max_slices=0, draws=DRAWS,
                                min_foreground=0.0)
        score = score_checkpoint(loaded, open_folder(folder, mask), folder, mask, torch.device("cpu"))
        gains[name] = score.model.metrics.psnr - score.zero_filled.metrics.psnr
    return gains


def summarise(per_run: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Each variant's gain and its change against the unchanged source, over runs."""
    return {name: {"gain": spread([r["gains"][name] for r in per_run]),
                   "change": spread([r["gains"][name] - r["gains"]["unchanged"] for r in per_run])}
            for name in VARIANTS}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="run folders (one per seed) with checkpoints/original.pt")
    parser.add_argument("--source", default="colin27-t1", choices=[s.name for s in SOURCES])
    parser.add_argument("--sources", type=Path, default=DEFAULT_SOURCES,
                        help="folder of the fetched packages (make anatomy-sources)")
    parser.add_argument("--name", default=NAME)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    source = source_named(args.source)
    with tempfile.TemporaryDirectory(prefix="source-variants-") as scratch:
        image = extract(source, args.sources, Path(scratch) / "extracted")
        images = write_variants(saved_experiment(args.runs[0]), source, image, Path(scratch) / "variants")
        per_run = [{"run": str(run), "seed": saved_experiment(run).seed,
                    "gains": score_variants(run, source, images, Path(scratch))} for run in args.runs]
        digest = file_sha256(image)
    summary = summarise(per_run)
    write_result(args.name, {"command": "python -m bench.source_variants " + " ".join(map(str, args.runs))
                             + (f" --source {args.source}" if args.source != "colin27-t1" else ""),
                             "source": source._asdict() | {"sha256": digest}, "variants": list(VARIANTS),
                             "runs": per_run, "by_variant": summary},
                 ", ".join(f"{name} {row['change']['mean']:+.2f} dB" for name, row in summary.items()
                           if name != "unchanged") + " against the unchanged source")


if __name__ == "__main__":
    main()
