"""The federation's training as a plain in-process PyTorch loop (no Flower).

Same sites, data streams, initial weights, local training and weighted averaging
as the Flower run (the averaging is Flower's own arithmetic: float32, weights
``n / total``, sites in configured order), so for the same seed and the same torch
thread count it ends with the same weights. That makes it both the overhead
benchmark's baseline (what the federation costs beyond the training it simulates)
and a fast way to study the training dynamics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from fedforget.configs.schema import ExperimentConfig
from fedforget.data.batches import BatchSource, stream_seed
from fedforget.data.datasets import CachedSliceDataset
from fedforget.data.sites import open_site_split
from fedforget.learning.checkpoints import State
from fedforget.learning.evaluation import evaluate
from fedforget.learning.history import RoundHistory
from fedforget.learning.training import LocalTraining, initial_state, model_from_config, pick_device, train_steps
from fedforget.recon.losses import ReconLoss

Update = tuple[State, int]


@dataclass
class PlainResult:
    """Final weights, per-round scores and the pure training time (per round too)."""

    state: State
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    round_seconds: list[float] = field(default_factory=list)


class SiteTrainer(Protocol):
    """Runs one round of local training at the given sites from the global weights."""

    def train(self, sites: Sequence[str], server_round: int, state: State) -> list[Update]: ...


class SequentialTrainer:
    """The sites one after another in this process, with this process's torch threads."""

    def __init__(self, cfg: ExperimentConfig, sites: Sequence[str]) -> None:
        fed = cfg.federation
        self.cfg = cfg
        self.device = pick_device(fed.device)
        self.model = model_from_config(cfg.model).to(self.device)
        self.loss = ReconLoss(fed.l1_weight)
        # Opened (and validated) here, before any timer starts.
        self.data = {name: open_site_split(cfg, name, "train") for name in sites}
        self.streams = {name: BatchSource(self.data[name], fed.batch_size, stream_seed(cfg.seed, name, "train"))
                        for name in sites}

    def train_site(self, name: str, server_round: int, state: State) -> Update:
        steps = self.cfg.federation.local_steps
        self.model.load_state_dict(state)
        train_steps(self.model, self.streams[name], (server_round - 1) * steps, steps,
                    LocalTraining.of(self.cfg.federation, server_round), self.loss,
                    self.device)
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}, len(self.data[name])

    def train(self, sites: Sequence[str], server_round: int, state: State) -> list[Update]:
        return [self.train_site(name, server_round, state) for name in sites]


def aggregate(updates: list[Update], previous: State) -> State:
    """FedAvg as Flower's ``FedAvg.aggregate_train`` computes it: float32 arrays scaled by ``n / total``,
    summed in the given order (so both give bit-identical weights), in ``previous``'s dtypes."""
    total = float(sum(n for _, n in updates))
    merged: dict[str, np.ndarray] = {}
    for state, n in updates:
        weight = n / total
        for key, value in state.items():
            part = value.detach().cpu().numpy() * weight
            if key in merged:
                merged[key] += part
            else:
                merged[key] = part
    return {k: torch.from_numpy(np.asarray(v)).to(previous[k].dtype) for k, v in merged.items()}


def plain_fedavg(
    cfg: ExperimentConfig,
    sites: list[str],
    eval_every: int = 0,
    on_round: Callable[[int, State], None] | None = None,
    trainer: SiteTrainer | None = None,
    round_history: RoundHistory | None = None,
) -> PlainResult:
    """FedAvg over ``sites`` without Flower; only the rounds are timed (data opening and evaluation are not).

    Args:
        cfg: The experiment (its federation schedule, model, seed, and sites' ``joins_at_round``).
        sites: The sites, in the order their updates are summed.
        eval_every: Score every N rounds (and the last); 0 never scores.
        on_round: Called with each round's global weights.
        trainer: Who trains the sites each round (default: one after another in this process).
        round_history: Keeps each round's start and site updates, as the Flower server does.
    """
    fed = cfg.federation
    trainer = trainer or SequentialTrainer(cfg, sites)
    state = initial_state(cfg.model, cfg.seed)
    round_seconds, history = [], []
    for server_round in range(1, fed.rounds + 1):
        taking_part = [site for site in sites if cfg.sites[site].joins_at_round < server_round]
        started = time.perf_counter()
        updates = trainer.train(taking_part, server_round, state)
        start, state = state, aggregate(updates, state)
        round_seconds.append(time.perf_counter() - started)
        if round_history is not None:
            round_history.add(server_round, start, dict(zip(taking_part, updates)))
        if eval_every and (server_round % eval_every == 0 or server_round == fed.rounds):
            history.append({"round": server_round, **_scores(cfg, state, sites)})
        if on_round:
            on_round(server_round, state)
    return PlainResult(state, sum(round_seconds), history, round_seconds)


def _scores(cfg: ExperimentConfig, state: State, sites: list[str]) -> dict[str, float]:
    device = pick_device(cfg.federation.device)
    model = model_from_config(cfg.model).to(device)
    model.load_state_dict(state)
    tests: dict[str, CachedSliceDataset] = {name: open_site_split(cfg, name, "test") for name in sites}
    loss = ReconLoss(cfg.federation.l1_weight)
    return {name: evaluate(model, dataset, loss, device).metrics.psnr for name, dataset in tests.items()}
