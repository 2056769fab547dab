"""``fedforget evaluate``: a saved model on any fastMRI multicoil folder, next to zero-filled.

The checkpoint holds only the weights and metadata, so the VarNet's shape is read from
the weights (``checkpoints.varnet_shape_of``) or given as a preset and checked against
them. Masks are seeded from each file name, as in the runs (``data.datasets.open_split``),
so a site's test folder scores exactly as the run scored it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastmri.data.subsample import MaskFunc
from torch import nn

from fedforget.configs.schema import EQUISPACED_FRACTION, ZERO_FILLED
from fedforget.data.datasets import CachedSliceDataset, collate, open_split
from fedforget.learning.checkpoints import CheckpointError, load_checkpoint, varnet_shape_of
from fedforget.learning.evaluation import Evaluation, evaluate, evaluate_zero_filled, zero_filled
from fedforget.learning.training import reconstruct
from fedforget.recon.losses import ReconLoss
from fedforget.recon.masks import make_mask_func
from fedforget.recon.models import VarNetShape, build_varnet, varnet_preset


@dataclass(frozen=True)
class MaskSetting:
    """The undersampling to score under; the default is the papers' 8x / 0.04 equispaced_fraction."""

    mask_type: str = EQUISPACED_FRACTION
    acceleration: int = 8
    center_fraction: float = 0.04

    def mask_func(self) -> MaskFunc:
        """The fastMRI mask function (ValueError names a bad setting)."""
        return make_mask_func(self.mask_type, self.acceleration, self.center_fraction)


@dataclass
class LoadedModel:
    """A VarNet rebuilt from a checkpoint: the model, its shape and the checkpoint's metadata."""

    path: Path
    model: nn.Module
    shape: VarNetShape
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The run's name for the model (original, oracle, a method), else the file's stem."""
        return str(self.meta.get("model") or self.path.stem)


def _describe(shape: VarNetShape) -> str:
    return ", ".join(f"{k}={v}" for k, v in asdict(shape).items())


def load_varnet(path: Path, preset: str | None = None) -> LoadedModel:
    """Rebuild the E2E-VarNet a fedforget checkpoint was saved from.

    Args:
        path: A ``.pt`` file written by fedforget (e.g. ``<run>/checkpoints/original.pt``).
        preset: ``tiny`` / ``small`` / ``paper`` to insist on a shape; None reads it from the weights.

    Returns:
        The model in eval mode, with the checkpoint's weights.

    Raises:
        FileNotFoundError: The file does not exist.
        CheckpointError: It is not a fedforget VarNet checkpoint, or its shape is not ``preset``'s.
        ValueError: ``preset`` is not a known preset.
    """
    state, meta = load_checkpoint(path)
    shape = varnet_shape_of(path, state)
    if preset is not None and varnet_preset(preset) != shape:
        raise CheckpointError(f"checkpoint {path} holds a VarNet with {_describe(shape)}, but model {preset!r} "
                              f"has {_describe(varnet_preset(preset))}: pick the preset it was trained with, "
                              f"or leave the model out to read the shape from the checkpoint")
    model = build_varnet(shape)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path} does not fit a VarNet with {_describe(shape)}: {err}") from err
    return LoadedModel(Path(path), model.eval(), shape, dict(meta))


@dataclass
class CheckpointScore:
    """A checkpoint's and zero-filled's fastMRI metrics on one folder, mean over volumes and per volume."""

    checkpoint: Path
    folder: Path
    model_name: str
    shape: VarNetShape
    mask: MaskSetting
    model: Evaluation
    zero_filled: Evaluation

    def to_json(self) -> dict[str, Any]:
        def scores(evaluation: Evaluation) -> dict[str, Any]:
            return {"mean": evaluation.metrics._asdict(),
                    "volumes": {name: metrics._asdict()
                                for name, metrics in zip(evaluation.volume_names, evaluation.per_volume)}}

        return {"checkpoint": str(self.checkpoint), "folder": str(self.folder), "model": self.model_name,
                "shape": asdict(self.shape), "mask": asdict(self.mask), "volumes": self.model.volumes,
                "slices": self.model.slices, "scores": {self.model_name: scores(self.model),
                                                        ZERO_FILLED: scores(self.zero_filled)}}


def open_folder(folder: Path, mask: MaskSetting) -> CachedSliceDataset:
    """A folder of fastMRI multicoil volumes, validated; k-space values are checked as each slice is read.

    Every slice is read once, so nothing is cached (a real fastMRI folder holds ~100 MB a volume).
    """
    return open_split(Path(folder), mask.mask_func(), cache=False, scan_kspace=False)


def score_checkpoint(loaded: LoadedModel, dataset: CachedSliceDataset, folder: Path, mask: MaskSetting,
                     device: torch.device, batch_size: int = 4) -> CheckpointScore:
    """Score a rebuilt model and zero-filled on the same slices, under the same masks."""
    loss = ReconLoss()
    model = evaluate(loaded.model.to(device), dataset, loss, device, batch_size)
    baseline = evaluate_zero_filled(dataset, loss, batch_size)
    return CheckpointScore(loaded.path, Path(folder), loaded.name, loaded.shape, mask, model, baseline)


@dataclass
class ExampleSlice:
    """One slice reconstructed three ways, for the figure."""

    volume: str
    slice_index: int
    ground_truth: np.ndarray
    zero_filled: np.ndarray
    recon: np.ndarray


@torch.no_grad()
def example_slice(loaded: LoadedModel, dataset: CachedSliceDataset, device: torch.device,
                  index: int | None = None) -> ExampleSlice:
    """Ground truth, zero-filled and the model's reconstruction of one slice (default: the middle one)."""
    index = len(dataset) // 2 if index is None else index
    batch = collate([dataset[index]]).to(device)
    recon, target = reconstruct(loaded.model.to(device).eval(), batch)
    baseline, _ = zero_filled(batch)
    raw = dataset.raw_samples[index]
    return ExampleSlice(raw.fname.name, int(raw.slice_ind), target[0].cpu().numpy(), baseline[0].cpu().numpy(),
                        recon[0].float().cpu().numpy())
