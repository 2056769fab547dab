"""Example reconstructions: one display slice of a site, as ground truth, zero-filled and every model.

This is the only place the pictures' inference happens. The evaluation phase calls it once per
site after the final scores, and the run folder keeps the result (``examples/``), so the report and
its figures are drawn from files and never reopen a site's data or rebuild a model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from fedforget.configs.schema import ExperimentConfig
from fedforget.data.datasets import CachedSliceDataset, collate
from fedforget.data.sites import open_site_split
from fedforget.learning.checkpoints import State
from fedforget.learning.evaluation import zero_filled
from fedforget.learning.training import reconstruct


class SiteExample(NamedTuple):
    """One site's display slice and what each model makes of it (all images (H, W), float32)."""

    ground_truth: np.ndarray
    zero_filled: np.ndarray
    sampled_columns: np.ndarray  # (W_kspace,) bool: the mask's sampled k-space columns
    reconstructions: dict[str, np.ndarray]  # model name -> its reconstruction


def display_index(dataset: CachedSliceDataset) -> int:
    """The middle slice of the split's first volume."""
    first = dataset.volume_of(0)
    indices = [i for i in range(len(dataset)) if dataset.volume_of(i) == first]
    return indices[len(indices) // 2]


def finite(state: State) -> bool:
    """Whether every floating-point weight of a model is finite."""
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


@torch.no_grad()
def site_example(cfg: ExperimentConfig, site: str, states: Mapping[str, State], model: nn.Module) -> SiteExample:
    """Ground truth, zero-filled and each model's reconstruction of ``site``'s display test slice.

    Raises:
        DataFileError / OSError: the site's test data is not readable here.
    """
    dataset = open_site_split(cfg, site, "test")
    batch = collate([dataset[display_index(dataset)]])
    baseline, target = zero_filled(batch)
    images = {}
    for name, state in states.items():
        model.load_state_dict(state)
        model.eval()
        output, _ = reconstruct(model, batch)
        images[name] = output[0].float().numpy()
    return SiteExample(ground_truth=target[0].float().numpy(), zero_filled=baseline[0].float().numpy(),
                       sampled_columns=batch.mask.reshape(-1).numpy().astype(bool), reconstructions=images)
