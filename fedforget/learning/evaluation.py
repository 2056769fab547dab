"""Scoring a model on a split: reconstruct every slice, fastMRI metrics per volume, per-slice losses."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import fastmri
import numpy as np
import torch
from torch import nn

from fedforget.data.datasets import Batch, CachedSliceDataset, collate
from fedforget.learning.training import reconstruct
from fedforget.recon.losses import ReconLoss, center_crop_pair
from fedforget.recon.metrics import ReconMetrics, mean_metrics, volume_metrics

Reconstructor = Callable[[Batch], tuple[torch.Tensor, torch.Tensor]]
VolumeScore = Callable[[np.ndarray, np.ndarray, np.ndarray], dict[str, float]]


@dataclass
class Evaluation:
    """A reconstructor on one split: fastMRI metrics per volume and per-slice losses.

    ``metrics`` is the mean over volumes (the fastMRI leaderboard's number); the per-volume
    values stay at the site, where they feed bootstrap intervals and audits.
    """

    per_volume: list[ReconMetrics]
    volume_names: list[str]
    slice_losses: np.ndarray
    slice_volumes: np.ndarray
    volume_extras: list[dict[str, float]] = field(default_factory=list)

    @property
    def metrics(self) -> ReconMetrics:
        return mean_metrics(self.per_volume)

    @property
    def volumes(self) -> int:
        return len(self.per_volume)

    @property
    def slices(self) -> int:
        return len(self.slice_losses)

    @property
    def loss(self) -> float:
        return float(self.slice_losses.mean())

    @property
    def extras(self) -> dict[str, float]:
        """Per-volume extra scores (e.g. the artifact score), averaged over volumes."""
        if not self.volume_extras:
            return {}
        return {k: float(np.mean([e[k] for e in self.volume_extras])) for k in self.volume_extras[0]}


def _volume_slices(dataset: CachedSliceDataset) -> Iterator[tuple[str, list[int]]]:
    """Slice indices grouped by volume, in file order."""
    current, indices = None, []
    for i in range(len(dataset)):
        name = dataset.volume_of(i)
        if name != current and indices:
            yield current, indices
            indices = []
        current = name
        indices.append(i)
    if indices:
        yield current, indices


def zero_filled(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The no-learning baseline: RSS of the inverse FFT of the undersampled k-space, cropped like VarNet's output."""
    image = fastmri.rss(fastmri.complex_abs(fastmri.ifft2c(batch.masked_kspace)), dim=1)
    return center_crop_pair(image, batch.target)


@torch.no_grad()
def evaluate_reconstructions(
    reconstructor: Reconstructor, dataset: CachedSliceDataset, loss_fn: ReconLoss, device: torch.device,
    batch_size: int = 4, volume_score: VolumeScore | None = None,
) -> Evaluation:
    """Reconstruct every slice and score each volume as fastMRI does.

    ``volume_score(target, recon, sampled_columns)`` adds per-volume scores (e.g. the artifact
    score); ``sampled_columns`` is the volume's undersampling mask over k-space columns.
    """
    per_volume, names, losses, owners, extras = [], [], [], [], []
    for number, (name, indices) in enumerate(_volume_slices(dataset)):
        outputs, targets, sampled = [], [], None
        for start in range(0, len(indices), batch_size):
            batch = collate([dataset[i] for i in indices[start:start + batch_size]]).to(device)
            output, target = reconstructor(batch)
            output = output.float()
            losses.append(loss_fn.per_sample(output, target, batch.max_value).cpu())
            outputs.append(output.cpu())
            targets.append(target.cpu())
            sampled = batch.mask[0].reshape(-1).cpu().numpy()
        target_volume, recon_volume = torch.cat(targets).numpy(), torch.cat(outputs).numpy()
        per_volume.append(volume_metrics(target_volume, recon_volume))
        names.append(name)
        owners += [number] * len(indices)
        if volume_score is not None:
            extras.append(volume_score(target_volume, recon_volume, sampled))
    slice_losses = torch.cat(losses).numpy().astype(np.float64)
    return Evaluation(per_volume, names, slice_losses, np.asarray(owners), extras)


def evaluate(
    model: nn.Module, dataset: CachedSliceDataset, loss_fn: ReconLoss, device: torch.device, batch_size: int = 4,
    volume_score: VolumeScore | None = None,
) -> Evaluation:
    """A model's reconstructions of a split, scored per volume (see :func:`evaluate_reconstructions`)."""
    model.eval()
    return evaluate_reconstructions(lambda batch: reconstruct(model, batch), dataset, loss_fn, device, batch_size,
                                    volume_score)


def evaluate_zero_filled(dataset: CachedSliceDataset, loss_fn: ReconLoss, batch_size: int = 4,
                         volume_score: VolumeScore | None = None) -> Evaluation:
    """Zero-filled reconstructions of a split, scored exactly like a model's."""
    return evaluate_reconstructions(zero_filled, dataset, loss_fn, torch.device("cpu"), batch_size, volume_score)
