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
from torch import nn

from fedforget.clients.site import SiteRuntime, site_folders
from fedforget.clients.site import SiteIdentity
from fedforget.configs.schema import ExperimentConfig
from fedforget.strategies.aggregation import aggregate
from fedforget.training import evaluate, train_steps

State = dict[str, torch.Tensor]


@dataclass
class PlainResult:
    """Final weights, per-round scores and the pure training time."""

    state: State
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def site_runtimes(cfg: ExperimentConfig, sites: list[str]) -> dict[str, SiteRuntime]:
    """One in-process runtime per site (the same object a Flower node builds)."""
    return {name: SiteRuntime(cfg, SiteIdentity(name, site_folders(cfg, name)), simulated=False) for name in sites}


def initial_weights(cfg: ExperimentConfig, template: nn.Module) -> State:
    """The run's initial weights: the seed-``cfg.seed`` initialisation of the VarNet."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        fresh = type(template)(**_varnet_args(cfg))
    return {k: v.clone() for k, v in fresh.state_dict().items()}


def _varnet_args(cfg: ExperimentConfig) -> dict[str, int]:
    m = cfg.model
    return {"num_cascades": m.num_cascades, "chans": m.chans, "pools": m.pools, "sens_chans": m.sens_chans,
            "sens_pools": m.sens_pools}


def plain_fedavg(
    cfg: ExperimentConfig,
    sites: list[str],
    eval_every: int = 0,
    on_round: Callable[[int, State], None] | None = None,
) -> PlainResult:
    """FedAvg over ``sites`` in one process, one site after another; evaluation time is not counted."""
    runtimes = site_runtimes(cfg, sites)
    first = runtimes[sites[0]]
    state = initial_weights(cfg, first.model)
    fed = cfg.federation
    seconds, history = 0.0, []
    for server_round in range(1, fed.rounds + 1):
        started = time.perf_counter()
        updates = []
        for name in sites:
            runtime = runtimes[name]
            runtime.model.load_state_dict(state)
            train_steps(runtime.model, runtime.train_source(), (server_round - 1) * fed.local_steps,
                        fed.local_steps, runtime.training, runtime.loss, runtime.device)
            updates.append(({k: v.detach().clone() for k, v in runtime.model.state_dict().items()},
                            len(runtime.split("train"))))
        state = aggregate(updates, state)
        seconds += time.perf_counter() - started
        if eval_every and (server_round % eval_every == 0 or server_round == fed.rounds):
            history.append({"round": server_round, **_scores(runtimes, state)})
        if on_round:
            on_round(server_round, state)
    return PlainResult(state, seconds, history)


def _scores(runtimes: dict[str, SiteRuntime], state: State) -> dict[str, float]:
    scores = {}
    for name, runtime in runtimes.items():
        runtime.model.load_state_dict(state)
        result = evaluate(runtime.model, runtime.split("test"), runtime.loss, runtime.device)
        scores[name] = result.metrics.psnr
    return scores
