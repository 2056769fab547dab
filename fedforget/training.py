"""Flower-free learning steps: local training, reconstruction and per-volume evaluation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from fedforget.configs.schema import ModelConfig
from fedforget.recon.losses import ReconLoss, center_crop_pair
from fedforget.recon.models import VarNetShape, build_varnet
from fedforget.recon.metrics import ReconMetrics, mean_metrics, volume_metrics
from fedforget.sitedata import Batch, BatchSource, CachedSliceDataset, collate


def model_from_config(m: ModelConfig) -> nn.Module:
    """The E2E-VarNet a model config describes (fresh weights)."""
    return build_varnet(VarNetShape(m.num_cascades, m.chans, m.pools, m.sens_chans, m.sens_pools))


def pick_device(preference: str = "auto") -> torch.device:
    """CUDA when present (and wanted), else CPU; chosen per process."""
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("federation.device=cuda but this process sees no CUDA device")
    return torch.device("cuda")


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast where asked for; a no-op otherwise."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def reconstruct(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Run VarNet and crop output and target to their common size (fastMRI's VarNetModule)."""
    # num_low_frequencies=None: VarNet finds the centre from the mask (a collated int breaks it).
    output = model(batch.masked_kspace, batch.mask, None)
    return center_crop_pair(output, batch.target)


def batch_loss(model: nn.Module, batch: Batch, loss_fn: ReconLoss) -> torch.Tensor:
    output, target = reconstruct(model, batch)
    return loss_fn(output.float(), target, batch.max_value)


@dataclass
class LocalTraining:
    """How a site trains: optimizer settings shared by FedAvg rounds and benchmarks."""

    lr: float
    grad_clip: float = 0.0
    bf16: bool = False


def train_steps(
    model: nn.Module,
    source: BatchSource,
    first_batch: int,
    steps: int,
    settings: LocalTraining,
    loss_fn: ReconLoss,
    device: torch.device,
) -> float:
    """Run ``steps`` Adam steps from a fresh optimizer; returns the mean training loss.

    A fresh optimizer per round keeps rounds independent of which process ran the
    previous one (the FedAvg convention in Flower's examples), so a resumed or
    re-assigned site trains exactly as an uninterrupted one.
    """
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    total = torch.zeros((), device=device)
    for k in range(first_batch, first_batch + steps):
        batch = source.batch(k).to(device)
        with autocast(device, settings.bf16):
            loss = batch_loss(model, batch, loss_fn)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        total += loss.detach()
    return float(total) / steps  # one host sync per round, not per step


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


def membership_auc(member_losses: np.ndarray, heldout_losses: np.ndarray) -> float:
    """Loss-based membership-inference AUC: P(a member slice has lower loss than a held-out one).

    0.5 means the attack cannot tell training slices from unseen ones; ties count half.
    """
    if len(member_losses) == 0 or len(heldout_losses) == 0:
        raise ValueError("membership AUC needs member and held-out slices")
    members = np.asarray(member_losses)[:, None]
    heldout = np.asarray(heldout_losses)[None, :]
    return float(np.mean((members < heldout) + 0.5 * (members == heldout)))
