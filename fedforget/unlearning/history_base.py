"""The shape every history-based (federated-native) unlearning method shares, and the engine that runs them.

These methods use what only a federation's server has: the round history (each kept round's
starting global model and every site's update, :mod:`fedforget.learning.history`). Their only
work at the sites is local training rounds, as in FedAvg: a site trains ``steps`` Adam steps on its
own training stream from the weights it is sent and returns its new weights. A
:class:`RoundWorker` runs those rounds: :class:`LocalRoundWorker` in-process (the Flower-free
path), ``strategies.replay.FederatedRoundWorker`` through Flower. The method code is the same
either way, so both give the same weights for the same seed.

:class:`HistoryRun` is the method's view of one removal: the history, the original and initial
models, the schedule, and the counters of what it cost (site steps, server seconds, rounds).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from fedforget.configs.schema import FORGET, ExperimentConfig, FederationConfig, UnlearningConfig
from fedforget.data.batches import BatchSource, stream_seed, unlearning_source
from fedforget.data.sites import marked_slices, open_site_split, site_folders
from fedforget.learning.checkpoints import State
from fedforget.learning.history import HistoryError, RoundHistory
from fedforget.learning.plain_loop import aggregate
from fedforget.learning.training import LocalTraining, model_from_config, train_steps
from fedforget.recon.losses import ReconLoss
from fedforget.recon.poison import load_manifest

# Which of its streams a site trains on in a local round: its FedAvg training stream, or its forget set.
TRAIN_DATA, FORGET_DATA = "train", "forget"


@dataclass(frozen=True)
class SiteUpdate:
    """A site's answer to a local round: its weights after training, its example count, its mean loss."""

    state: State
    examples: int
    loss: float


class RoundWorker(Protocol):
    """Where sites run local training rounds (in-process, or at Flower sites)."""

    def local_round(self, sites: Sequence[str], state: State, first_batch: int, steps: int, lr: float,
                    data: str = TRAIN_DATA) -> dict[str, SiteUpdate]: ...


class LocalRoundWorker:
    """Every site in this process, one after another: the Flower-free form of every history-based method.

    ``sources[site]`` is the site's FedAvg training stream (``data=train``); ``forget`` is the forget
    site's forget-set stream (``data=forget``). Training is :func:`train_steps`, as at a Flower site.
    """

    def __init__(self, model: nn.Module, sources: Mapping[str, BatchSource], fed: FederationConfig,
                 forget: BatchSource | None = None, device: torch.device | str = "cpu") -> None:
        self.model = model
        self.sources = dict(sources)
        self.forget = forget
        self.fed = fed
        self.device = torch.device(device)
        self.loss = ReconLoss(fed.l1_weight)
        self.model.to(self.device)

    def local_round(self, sites: Sequence[str], state: State, first_batch: int, steps: int, lr: float,
                    data: str = TRAIN_DATA) -> dict[str, SiteUpdate]:
        updates = {}
        for site in sites:
            source = self.forget if data == FORGET_DATA else self.sources[site]
            if source is None:
                raise ValueError(f"{site} has no forget stream in this worker")
            self.model.load_state_dict(state)
            loss = train_steps(self.model, source, first_batch, steps,
                               LocalTraining(lr, self.fed.grad_clip, self.fed.bf16), self.loss, self.device)
            trained = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            updates[site] = SiteUpdate(trained, len(source), loss)
        return updates


def local_round_worker(cfg: ExperimentConfig, device: torch.device | str = "cpu") -> LocalRoundWorker:
    """The Flower-free worker of an experiment: every site's training stream as its site opens it, and the
    forget site's forget set (its known-poisoned slices at a poisoned site)."""
    fed, forget = cfg.federation, cfg.unlearning.forget_site
    train = {site: open_site_split(cfg, site, "train") for site in cfg.sites}
    sources = {site: BatchSource(data, fed.batch_size, stream_seed(cfg.seed, site, "train"))
               for site, data in train.items()}
    known = None
    if cfg.is_poisoned(forget):
        manifest = load_manifest(site_folders(cfg, forget)["train"].parent)
        if manifest is None:
            raise ValueError(f"poisoned site {forget} has no poison manifest: prepare its data first")
        known = marked_slices(train[forget], manifest, "known")
    forget_source = unlearning_source(cfg, forget, train[forget], FORGET, indices=known)
    return LocalRoundWorker(model_from_config(cfg.model), sources, fed, forget_source, device)


RoundCallback = Callable[[int, State, dict[str, float]], None]


@dataclass
class HistoryRun:
    """One history-based removal: what the method may use, and what it has cost so far.

    ``retain_sites`` and ``joins`` say who trains in which round (a late joiner takes part from round
    ``joins[site] + 1``). ``server_retain`` is the server's own retain data (``retain_access=server``),
    for methods that compute at the server. ``contacts_forget_site`` is checked on every round.
    """

    history: RoundHistory | None
    original: State
    initial: State
    fed: FederationConfig
    unlearning: UnlearningConfig
    forget_site: str
    retain_sites: list[str]
    worker: RoundWorker
    new_model: Callable[[], nn.Module]
    seed: int = 0
    joins: dict[str, int] = field(default_factory=dict)
    server_retain: BatchSource | None = None
    on_round: RoundCallback | None = None
    contacts_forget_site: bool = False
    site_steps: int = 0
    rounds: int = 0
    trajectory_steps: int = 0
    worker_seconds: float = 0.0
    monitoring_seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def participants(self, server_round: int) -> list[str]:
        """The retain sites that trained in original round ``server_round``."""
        return [s for s in self.retain_sites if self.joins.get(s, 0) < server_round]

    def local_round(self, sites: Sequence[str], state: State, first_batch: int, steps: int, lr: float,
                    data: str = TRAIN_DATA) -> dict[str, SiteUpdate]:
        """A local round at ``sites``, counted as ``steps`` site steps each."""
        if self.forget_site in sites and not self.contacts_forget_site:
            raise RuntimeError(f"this method must not contact the forget site {self.forget_site}")
        began = time.perf_counter()
        updates = self.worker.local_round(list(sites), state, first_batch, steps, lr, data)
        self.worker_seconds += time.perf_counter() - began
        self.site_steps += steps * len(sites)
        return updates

    def fedavg_round(self, sites: Sequence[str], state: State, first_batch: int, steps: int, lr: float) -> State:
        """One FedAvg round over ``sites`` from ``state``: Flower's weighted average of their new weights."""
        updates = self.local_round(sites, state, first_batch, steps, lr)
        return aggregate([(updates[s].state, updates[s].examples) for s in sites], state)

    def advanced(self, state: State, steps: int, values: Mapping[str, float] | None = None) -> None:
        """Record one new global model (``steps`` local steps along its trajectory) and report it."""
        self.rounds += 1
        self.trajectory_steps += steps
        if self.on_round is not None:
            began = time.perf_counter()
            self.on_round(self.rounds, state, dict(values or {}))
            self.monitoring_seconds += time.perf_counter() - began


class HistoryMethod(ABC):
    """A history-based method. Subclasses set ``name`` and implement :meth:`remove`."""

    name: ClassVar[str]
    # Whether the method sends work to the forget site (PUF's negated round); the others never contact it.
    contacts_forget_site: ClassVar[bool] = False
    # Whether it reads the round history (PUF and retraining on a budget do not).
    needs_history: ClassVar[bool] = True

    def __init__(self, cfg: UnlearningConfig) -> None:
        self.cfg = cfg

    @abstractmethod
    def remove(self, run: HistoryRun) -> State:
        """The unlearned model (the method reports its own numbers in ``run.details``)."""

    def planned_rounds(self, fed: FederationConfig) -> int:
        """How many global models the method will produce (the progress bar's length; an estimate is fine)."""
        return fed.rounds

    @abstractmethod
    def plan(self, fed: FederationConfig, retain_sites: int) -> list[tuple[int, int]]:
        """Its exchanges with the sites, without running it: (sites asked, local steps each) per exchange,
        for projections to other scales. Data-dependent choices take their most expensive branch."""


@dataclass
class HistoryReport:
    """What a history-based method did, in the units a consortium pays."""

    method: str
    rounds: int
    trajectory_steps: int
    site_steps: int
    wall_seconds: float
    server_seconds: float
    details: dict[str, Any] = field(default_factory=dict)


def run_history_method(method: HistoryMethod, run: HistoryRun) -> tuple[State, HistoryReport]:
    """Run ``method`` on ``run``; the wall clock leaves out the evaluations ``run.on_round`` makes."""
    if method.needs_history and run.history is None:
        raise HistoryError(f"{method.name} reads the server's round history, and this run has none: train the "
                           "original with federation.history.every=1")
    run.contacts_forget_site = method.contacts_forget_site
    began = time.perf_counter()
    state = method.remove(run)
    wall = time.perf_counter() - began - run.monitoring_seconds
    report = HistoryReport(method=method.name, rounds=run.rounds, trajectory_steps=run.trajectory_steps,
                           site_steps=run.site_steps, wall_seconds=wall,
                           server_seconds=max(0.0, wall - run.worker_seconds), details=dict(run.details))
    return {k: v.detach().cpu() for k, v in state.items()}, report


def weighted_sum(parts: Sequence[tuple[State, float]]) -> State:
    """``sum_i w_i x_i`` over states, in float32, summed in the given order."""
    total = {k: v.float() * parts[0][1] for k, v in parts[0][0].items()}
    for state, weight in parts[1:]:
        for k, v in state.items():
            total[k] += v.float() * weight
    return total


def added(state: State, change: State, scale: float = 1.0) -> State:
    """``state + scale * change``, in ``state``'s dtypes."""
    return {k: (v.float() + scale * change[k].float()).to(v.dtype) for k, v in state.items()}


def difference(after: State, before: State) -> State:
    """``after - before`` in float32."""
    return {k: after[k].float() - before[k].float() for k in before}


def weights_of(examples: Mapping[str, int], sites: Sequence[str]) -> dict[str, float]:
    """FedAvg's weights ``n_i / sum n`` of ``sites``."""
    total = float(sum(examples[s] for s in sites))
    return {s: examples[s] / total for s in sites}
