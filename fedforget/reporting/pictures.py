"""The run's pictures, drawn from the run folder alone: one reconstruction grid per site, the method
chart, the frontier, and for a poisoned federation what each model hallucinates.

The reconstructions come from ``examples/`` (kept by the evaluation phase, see
:mod:`fedforget.reporting.examples`), so a copied run folder re-renders without any site's data and
nothing here rebuilds a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import uniform_filter

from fedforget.configs.schema import LESION, ORACLE, ORIGINAL, TRAINING_PHASES, ExperimentConfig, unlearn_phase
from fedforget.learning.examples import SiteExample
from fedforget.recon.poison import columns_on_image_grid, hallucinable_pattern, poison_pattern
from fedforget.reporting.costs import frontier_points
from fedforget.reporting.examples import INDEX, examples_dir, read_examples, read_index
from fedforget.reporting.figures import frontier_chart, method_comparison_chart, reconstruction_grid
from fedforget.reporting.hallucination import HallucinationRow, hallucination_grid
from fedforget.reporting.tensorboard import Boards


def marked_region(cfg: ExperimentConfig, target: np.ndarray,
                  recons: Mapping[str, np.ndarray]) -> tuple[int, int, int, int] | None:
    """The poison's extent at a poisoned federation, else where original and oracle differ most."""
    size = max(8, target.shape[-1] // 6)
    if cfg.poison.active:
        pattern = np.abs(poison_pattern(cfg.poison.kind, target, cfg.poison.strength, cfg.poison.seed))
        if cfg.poison.kind != LESION or not pattern.any():
            return None
        rows, cols = np.nonzero(pattern > 0.05 * pattern.max())
        return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1
    if ORIGINAL not in recons or ORACLE not in recons:
        return None
    difference = uniform_filter(np.abs(recons[ORIGINAL] - recons[ORACLE]), size=size)
    row, col = np.unravel_index(int(np.argmax(difference)), difference.shape)
    half = size // 2
    row0, col0 = max(0, row - half), max(0, col - half)
    return row0, col0, min(target.shape[0], row0 + size), min(target.shape[1], col0 + size)


def hallucination_row(cfg: ExperimentConfig, site: str, example: SiteExample) -> HallucinationRow | None:
    """What each model adds beyond the oracle on the site's display slice (poisoned federations only)."""
    images, truth = example.reconstructions, example.ground_truth
    if not cfg.poison.active or ORACLE not in images:
        return None
    sampled = columns_on_image_grid(example.sampled_columns, truth.shape[-1])
    poison = hallucinable_pattern(cfg.poison.kind, truth, cfg.poison.strength, cfg.poison.seed, sampled)
    return HallucinationRow(site, poison, {name: image - images[ORACLE] for name, image in images.items()
                                           if name != ORACLE})


def render_figures(cfg: ExperimentConfig, run_dir: Path, results: Mapping[str, Any],
                   boards: Boards | None = None) -> list[str]:
    """Write figures/methods.png, figures/frontier.png, figures/recon_<site>.png and, for a poisoned
    federation, figures/hallucination.png from the run folder's files; returns notes for the report."""
    figures = Path(run_dir) / "figures"
    method_comparison_chart(figures / "methods.png", dict(results["summary"]))
    if points := frontier_points(results):
        frontier_chart(figures / "frontier.png", points, f"{results['experiment']}: removing {results['forget_site']}"
                       f" (seed {cfg.seed}; KTA intervals: 95 % volume bootstrap)")
    if not (examples_dir(run_dir) / INDEX).is_file():
        return ["no reconstruction grids: this run folder kept no example reconstructions (examples/), "
                "it was written by a fedforget older than the examples"]
    index = read_index(run_dir)
    rows = []
    for site, example in read_examples(run_dir, index).items():
        info = results["sites"][site]
        region = marked_region(cfg, example.ground_truth, example.reconstructions)
        reconstruction_grid(figures / f"recon_{site}.png", f"{site} ({info['role']} site, {info['anatomy']}), "
                            f"test slice", example.ground_truth, example.zero_filled, example.reconstructions,
                            region)
        if (row := hallucination_row(cfg, site, example)) is not None:
            rows.append(row)
        if boards is not None:
            _board_images(boards, site, example.ground_truth, example.reconstructions)
    if rows:
        hallucination_grid(figures / "hallucination.png", f"{cfg.poison.kind} poison: what each model adds to a "
                           f"clean test slice beyond the oracle", rows)
    return list(index["notes"])


def _board_images(boards: Boards, site: str, truth: np.ndarray, images: Mapping[str, np.ndarray]) -> None:
    scale = float(truth.max()) or 1.0
    for name, image in images.items():
        tag = "reconstruction" if name in TRAINING_PHASES else f"{unlearn_phase(name)}/reconstruction"
        phase = TRAINING_PHASES.get(name, "")
        panel = np.concatenate([np.clip(image / scale, 0, 1), np.clip(np.abs(image - truth) / scale * 4, 0, 1)], 1)
        boards.writers[site].add_image(f"{phase}/{tag}" if phase else tag, panel[None], 0)
    boards.writers[site].flush()
