"""The run's pictures: one reconstruction grid per site, the method chart, TensorBoard images.

Reconstruction grids need a slice of each site's test data at the server. The server
reads it only where that moves no hospital's data: in a simulation on synthetic data,
or when ``report.server_reads_site_data=true`` says the coordinator may read the sites'
test files. Otherwise (every deployment, a simulation of real data) the grids are
skipped with a note in the report.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fastmri
import numpy as np
import torch
from scipy.ndimage import uniform_filter
from torch import nn

from fedforget.configs.schema import (
    LESION,
    ORACLE,
    ORIGINAL,
    SYNTHETIC,
    TRAINING_PHASES,
    ExperimentConfig,
    unlearn_phase,
)
from fedforget.data.datasets import collate
from fedforget.data.sites import open_site_split
from fedforget.learning.checkpoints import State
from fedforget.learning.training import model_from_config, reconstruct
from fedforget.recon.hdf5io import DataFileError
from fedforget.recon.poison import columns_on_image_grid, hallucinable_pattern, poison_pattern
from fedforget.reporting.costs import frontier_points
from fedforget.reporting.figures import frontier_chart, method_comparison_chart, reconstruction_grid
from fedforget.reporting.hallucination import HallucinationRow, hallucination_grid
from fedforget.reporting.tensorboard import Boards


def zero_filled(masked_kspace: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """RSS of the inverse FFT of the undersampled k-space, centre-cropped (the no-learning baseline)."""
    image = fastmri.rss(fastmri.complex_abs(fastmri.ifft2c(masked_kspace)), dim=0)
    return fastmri.data.transforms.center_crop(image, shape).numpy()


def display_slice(cfg: ExperimentConfig, site: str) -> Any:
    """The middle slice of the site's first test volume, as a VarNet sample."""
    dataset = open_site_split(cfg, site, "test")
    first = dataset.volume_of(0)
    indices = [i for i in range(len(dataset)) if dataset.volume_of(i) == first]
    return dataset[indices[len(indices) // 2]]


def marked_region(cfg: ExperimentConfig, site: str, target: np.ndarray,
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


def finite(state: State) -> bool:
    """Whether every floating-point weight of a model is finite."""
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


@torch.no_grad()
def site_reconstructions(sample: Any, states: Mapping[str, State], model: nn.Module) -> dict[str, np.ndarray]:
    """Ground truth, zero-filled and every model's reconstruction of a site's display slice."""
    batch = collate([sample])
    images = {}
    for name, state in states.items():
        model.load_state_dict(state)
        model.eval()
        output, target = reconstruct(model, batch)
        images[name] = output[0].float().numpy()
    images_target = target[0].numpy()
    return {"ground truth": images_target,
            "zero-filled": zero_filled(batch.masked_kspace[0], images_target.shape), **images}


def hallucination_row(cfg: ExperimentConfig, site: str, sample: Any, truth: np.ndarray,
                      images: Mapping[str, np.ndarray]) -> HallucinationRow | None:
    """What each model adds beyond the oracle on the site's display slice (poisoned federations only)."""
    if not cfg.poison.active or ORACLE not in images:
        return None
    sampled = columns_on_image_grid(sample.mask.reshape(-1).numpy().astype(bool), truth.shape[-1])
    poison = hallucinable_pattern(cfg.poison.kind, truth, cfg.poison.strength, cfg.poison.seed, sampled)
    return HallucinationRow(site, poison, {name: image - images[ORACLE] for name, image in images.items()
                                           if name != ORACLE})


def server_may_read_site_data(cfg: ExperimentConfig, results: Mapping[str, Any]) -> bool:
    """Whether the server may read the sites' test files for pictures (see the module docstring)."""
    simulated = results.get("mode") == "simulation"
    return (simulated and cfg.data.kind == SYNTHETIC) or cfg.report.server_reads_site_data


def render_figures(cfg: ExperimentConfig, figures: Path, results: Mapping[str, Any], states: Mapping[str, State],
                   boards: Boards | None = None) -> list[str]:
    """Write figures/methods.png, figures/recon_<site>.png and, for a poisoned federation,
    figures/hallucination.png; returns notes for the report."""
    notes = []
    diverged = [name for name, state in states.items() if not finite(state)]
    if diverged:
        notes.append(f"left out of the pictures, their weights are not finite (the method diverged): "
                      f"{', '.join(diverged)}")
        states = {name: state for name, state in states.items() if name not in diverged}
    method_comparison_chart(figures / "methods.png", dict(results["summary"]))
    if points := frontier_points(results):
        frontier_chart(figures / "frontier.png", points, f"{results['experiment']}: removing {results['forget_site']}"
                       f" (seed {cfg.seed}; KTA intervals: 95 % volume bootstrap)")
    if not server_may_read_site_data(cfg, results):
        return [f"no reconstruction grids: the server reads no site's data in a {results.get('mode', 'deployment')} "
                f"on {cfg.data.kind} data (set report.server_reads_site_data=true where the coordinator may "
                f"read the sites' test files)"]
    model = model_from_config(cfg.model)
    rows = []
    for site, info in results["sites"].items():
        try:
            sample = display_slice(cfg, site)
            images = site_reconstructions(sample, states, model)
        except (OSError, DataFileError) as err:
            notes.append(f"no reconstruction grid for {site}: its test data is not readable from the server ({err})")
            continue
        truth, zero = images.pop("ground truth"), images.pop("zero-filled")
        region = marked_region(cfg, site, truth, images)
        reconstruction_grid(figures / f"recon_{site}.png", f"{site} ({info['role']} site, {info['anatomy']}), "
                            f"test slice", truth, zero, images, region)
        if (row := hallucination_row(cfg, site, sample, truth, images)) is not None:
            rows.append(row)
        if boards is not None:
            _board_images(boards, site, truth, images)
    if rows:
        hallucination_grid(figures / "hallucination.png", f"{cfg.poison.kind} poison: what each model adds to a "
                           f"clean test slice beyond the oracle", rows)
    return notes


def _board_images(boards: Boards, site: str, truth: np.ndarray, images: Mapping[str, np.ndarray]) -> None:
    scale = float(truth.max()) or 1.0
    for name, image in images.items():
        tag = "reconstruction" if name in TRAINING_PHASES else f"{unlearn_phase(name)}/reconstruction"
        phase = TRAINING_PHASES.get(name, "")
        panel = np.concatenate([np.clip(image / scale, 0, 1), np.clip(np.abs(image - truth) / scale * 4, 0, 1)], 1)
        boards.writers[site].add_image(f"{phase}/{tag}" if phase else tag, panel[None], 0)
    boards.writers[site].flush()
