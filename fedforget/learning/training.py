"""Flower-free learning steps: local training, reconstruction and per-volume evaluation."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from fedforget.configs.schema import FederationConfig, ModelConfig
from fedforget.data.batches import BatchSource
from fedforget.data.datasets import Batch
from fedforget.learning.checkpoints import State
from fedforget.recon.losses import ReconLoss, center_crop_pair
from fedforget.recon.models import VarNetShape, build_varnet


def model_from_config(m: ModelConfig) -> nn.Module:
    """The E2E-VarNet a model config describes (fresh weights)."""
    return build_varnet(VarNetShape(**m.shape()))


def initial_state(m: ModelConfig, seed: int) -> State:
    """The seed-``seed`` initial weights of the VarNet (shared by original, oracle and the plain loop)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return {k: v.clone() for k, v in model_from_config(m).state_dict().items()}


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

    @classmethod
    def of(cls, fed: FederationConfig, server_round: int = 1) -> LocalTraining:
        """A FedAvg round's settings: its scheduled learning rate, clipping and precision."""
        return cls(fed.round_lr(server_round), fed.grad_clip, fed.bf16)


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


