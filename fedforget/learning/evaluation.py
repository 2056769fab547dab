"""Scoring a model on a split: reconstruct every slice, fastMRI metrics per volume, per-slice losses."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from fedforget.data.datasets import CachedSliceDataset, collate
from fedforget.learning.training import reconstruct
from fedforget.recon.losses import ReconLoss
from fedforget.recon.metrics import ReconMetrics, mean_metrics, volume_metrics


@dataclass
class Evaluation:
    """A model on one split: fastMRI metrics (mean over volumes) and per-slice losses."""

    metrics: ReconMetrics
    slice_losses: np.ndarray
    volumes: int
    slices: int
    extras: dict[str, float] = field(default_factory=dict)

    @property
    def loss(self) -> float:
        return float(self.slice_losses.mean())


def _volume_batches(dataset: CachedSliceDataset, batch_size: int) -> Iterator[tuple[str, list[int]]]:
    """Slice indices grouped by volume, in file order, chunked into batches."""
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


VolumeScore = Callable[[np.ndarray, np.ndarray, np.ndarray], dict[str, float]]


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset: CachedSliceDataset, loss_fn: ReconLoss, device: torch.device, batch_size: int = 4,
    volume_score: VolumeScore | None = None,
) -> Evaluation:
    """Reconstruct every slice and score each volume as fastMRI does, then average volumes.

    ``volume_score(target, recon, sampled_columns)`` adds per-volume scores (e.g. the artifact
    score), also averaged; ``sampled_columns`` is the volume's undersampling mask over k-space columns.
    """
    model.eval()
    per_volume, losses, extras = [], [], []
    for _, indices in _volume_batches(dataset, batch_size):
        outputs, targets, sampled = [], [], None
        for start in range(0, len(indices), batch_size):
            batch = collate([dataset[i] for i in indices[start:start + batch_size]]).to(device)
            output, target = reconstruct(model, batch)
            output = output.float()
            losses.append(loss_fn.per_sample(output, target, batch.max_value).cpu())
            outputs.append(output.cpu())
            targets.append(target.cpu())
            sampled = batch.mask[0].reshape(-1).cpu().numpy()
        target_volume, recon_volume = torch.cat(targets).numpy(), torch.cat(outputs).numpy()
        per_volume.append(volume_metrics(target_volume, recon_volume))
        if volume_score is not None:
            extras.append(volume_score(target_volume, recon_volume, sampled))
    slice_losses = torch.cat(losses).numpy().astype(np.float64)
    means = {k: float(np.mean([e[k] for e in extras])) for k in extras[0]} if extras else {}
    return Evaluation(mean_metrics(per_volume), slice_losses, len(per_volume), len(slice_losses), means)
