"""The federation's training as a plain in-process PyTorch loop (no Flower).

Same sites, data streams, initial weights, local training and weighted averaging
as the Flower run, so it is both the overhead benchmark's baseline (what the
federation costs beyond the training it simulates) and a fast way to study the
training dynamics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from fedforget.configs.schema import ExperimentConfig
from fedforget.data.batches import BatchSource, stream_seed
from fedforget.data.datasets import CachedSliceDataset
from fedforget.data.sites import open_site_split
from fedforget.learning.checkpoints import State
from fedforget.learning.evaluation import evaluate
from fedforget.learning.training import LocalTraining, initial_state, model_from_config, pick_device, train_steps
from fedforget.recon.losses import ReconLoss


@dataclass
class PlainResult:
    """Final weights, per-round scores and the pure training time."""

    state: State
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def aggregate(updates: list[tuple[State, int]], previous: State) -> State:
    """FedAvg: average site models weighted by their training slices, in ``previous``'s dtypes."""
    total = float(sum(n for _, n in updates))
    return {k: sum((n / total) * state[k].double() for state, n in updates).to(previous[k].dtype)
            for k in updates[0][0]}


def plain_fedavg(
    cfg: ExperimentConfig,
    sites: list[str],
    eval_every: int = 0,
    on_round: Callable[[int, State], None] | None = None,
) -> PlainResult:
    """FedAvg over ``sites`` in one process, one site after another; evaluation time is not counted."""
    fed = cfg.federation
    device = pick_device(fed.device)
    model = model_from_config(cfg.model).to(device)
    loss = ReconLoss(fed.l1_weight)
    train = {name: open_site_split(cfg, name, "train") for name in sites}
    streams = {name: BatchSource(train[name], fed.batch_size, stream_seed(cfg.seed, name, "train")) for name in sites}
    state = initial_state(cfg.model, cfg.seed)
    seconds, history = 0.0, []
    for server_round in range(1, fed.rounds + 1):
        started = time.perf_counter()
        updates = []
        for name in sites:
            model.load_state_dict(state)
            train_steps(model, streams[name], (server_round - 1) * fed.local_steps, fed.local_steps,
                        LocalTraining.of(fed, server_round), loss, device)
            updates.append(({k: v.detach().clone() for k, v in model.state_dict().items()}, len(train[name])))
        state = aggregate(updates, state)
        seconds += time.perf_counter() - started
        if eval_every and (server_round % eval_every == 0 or server_round == fed.rounds):
            tests = {name: open_site_split(cfg, name, "test") for name in sites}
            history.append({"round": server_round, **_scores(model, state, tests, loss, device)})
        if on_round:
            on_round(server_round, state)
    return PlainResult(state, seconds, history)


def _scores(model: torch.nn.Module, state: State, tests: dict[str, CachedSliceDataset], loss: ReconLoss,
            device: torch.device) -> dict[str, float]:
    model.load_state_dict(state)
    return {name: evaluate(model, dataset, loss, device).metrics.psnr for name, dataset in tests.items()}
