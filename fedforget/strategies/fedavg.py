"""FedAvg over a chosen set of sites, round by round, resumable after a crash.

Flower's ``FedAvg`` builds the train messages and averages the replies (weighted
by ``num-examples``); this module picks the sites (all of them for the original
model, the retain sites for the oracle), tolerates sites that fail a round, and
saves a progress checkpoint after every round so that a restarted server
continues from the last complete round.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedforget.configs.schema import FederationConfig
from fedforget.learning.checkpoints import State, load_checkpoint, save_checkpoint
from fedforget.learning.history import RoundHistory
from fedforget.strategies.link import SiteLink
from fedforget.strategies.messages import TrainRequest
from fedforget.strategies.protocol import (
    ARRAYS,
    METRICS,
    SiteError,
    arrays_from_state,
    state_from_arrays,
)


class SiteFedAvg(FedAvg):
    """FedAvg that trains exactly the given nodes every round (no sampling)."""

    def __init__(self, node_ids: list[int]) -> None:
        count = len(node_ids)
        super().__init__(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=count,
                         min_evaluate_nodes=0, min_available_nodes=count)
        self.node_ids = list(node_ids)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        config["server-round"] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(record, self.node_ids, MessageType.TRAIN)


@dataclass
class RoundReport:
    """What one round did: per-site training loss, the sites that failed it, and its time.

    ``seconds`` runs from sending the round to the end of the averaging, as the server saw it;
    ``poll_seconds`` of it passed between the last reply's arrival and the server's poll noticing
    it (``seconds - poll_seconds`` is the round timed from reply arrival).
    """

    round: int
    losses: dict[str, float]
    failures: dict[str, str]
    seconds: float
    poll_seconds: float = 0.0
    server_seconds: float = 0.0  # the server's own computation: averaging the sites' models


@dataclass
class TrainedModel:
    """A federated training phase's result."""

    state: State
    sites: list[str]
    rounds: int
    steps: int
    wall_seconds: float
    bytes_communicated: int
    site_updates: dict[str, tuple[State, int]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    round_history: RoundHistory | None = None

    @property
    def site_steps(self) -> int:
        """Local training steps over all sites (the sites that answered each round)."""
        return sum(len(entry["losses"]) for entry in self.history) * (self.steps // max(1, self.rounds))

    @property
    def messages(self) -> int:
        """Training messages sent (failed ones included)."""
        return sum(len(entry["losses"]) + len(entry["failures"]) for entry in self.history)

    @property
    def server_seconds(self) -> float:
        return sum(float(entry.get("server_seconds", 0.0)) for entry in self.history)


class RoundHooks(Protocol):
    """What the caller does around each round: score it (kept in the progress file), then log it."""

    def score(self, report: RoundReport, state: State) -> dict[str, Any]: ...

    def completed(self, report: RoundReport, scores: dict[str, Any]) -> None: ...


@dataclass
class Progress:
    """Where a phase stands after its last complete round (persisted atomically)."""

    path: Path
    fingerprint: str

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        state, meta = load_checkpoint(self.path)
        if meta.get("fingerprint") != self.fingerprint:
            return None
        return {**meta, "state": state}

    def save(self, state: State, **meta: Any) -> None:
        save_checkpoint(self.path, state, {**meta, "fingerprint": self.fingerprint})


def train_federated(
    link: SiteLink,
    sites: list[str],
    initial: State,
    fed: FederationConfig,
    phase: str,
    progress: Progress,
    hooks: RoundHooks,
    exclude_poisoned: bool | None = None,
    joins: Mapping[str, int] | None = None,
    round_history: RoundHistory | None = None,
) -> TrainedModel:
    """Run ``fed.rounds`` FedAvg rounds over ``sites`` (continuing a saved phase if there is one).

    ``exclude_poisoned`` is sent with every round (None: not sent; the sites train on all their slices).
    A site with ``joins[site] = j`` takes part in rounds j+1 onwards only. With ``round_history``
    every kept round's start and site updates are written to it before the round's checkpoint.

    Each round is scored, then saved, then reported to ``hooks.completed``: a server
    killed at any point resumes at the first unsaved round, and no saved round is
    trained or logged twice.
    """
    saved = progress.load()
    state = saved["state"] if saved else initial
    done = int(saved["round"]) if saved else 0
    wall = float(saved["wall_seconds"]) if saved else 0.0
    history = list(saved["history"]) if saved else []
    earlier_bytes = int(saved["bytes"]) if saved else 0
    updates: dict[str, tuple[State, int]] = saved.get("site_updates", {}) if saved else {}
    if round_history is not None:
        round_history.truncate(done)  # rounds written after the last checkpoint are trained again
    for server_round in range(done + 1, fed.rounds + 1):
        taking_part = participants(sites, joins or {}, server_round)
        strategy = SiteFedAvg([link.nodes[s] for s in taking_part])
        start = state
        state, updates, report = _one_round(link, strategy, state, fed, phase, taking_part, server_round,
                                            exclude_poisoned)
        if round_history is not None:
            round_history.add(server_round, start, updates)
        wall += report.seconds
        scores = hooks.score(report, state)
        history.append({"round": server_round, "losses": report.losses, "failures": report.failures,
                        "seconds": report.seconds, "poll_seconds": report.poll_seconds,
                        "server_seconds": report.server_seconds, "scores": scores})
        final = server_round == fed.rounds
        if server_round % fed.checkpoint_every == 0 or final:
            # The last round's site models are kept for the pga reference; earlier ones are not needed.
            progress.save(state, round=server_round, wall_seconds=wall, history=history,
                          bytes=earlier_bytes + link.ledger.bytes_in(phase), site_updates=updates if final else {})
        hooks.completed(report, scores)
    return TrainedModel(state=state, sites=contributors(sites, history), rounds=fed.rounds, steps=fed.training_steps,
                        wall_seconds=wall, bytes_communicated=earlier_bytes + link.ledger.bytes_in(phase),
                        site_updates=updates, history=history)


def participants(sites: list[str], joins: Mapping[str, int], server_round: int) -> list[str]:
    """The sites that train in round ``server_round`` (1-based): those that joined before it.

    Raises:
        ValueError: no site takes part in that round.
    """
    taking_part = [site for site in sites if joins.get(site, 0) < server_round]
    if not taking_part:
        raise ValueError(f"no site takes part in round {server_round}: every site's joins_at_round is "
                         f"{server_round} or more ({dict(joins)})")
    return taking_part


def contributors(sites: list[str], history: list[dict[str, Any]]) -> list[str]:
    """The sites whose training updates were averaged in at least one round (in ``sites``' order).

    Read from the rounds' answers, not from the sites asked: a site that failed every
    round did not shape the model. The history is saved with every round, so a resumed
    phase counts the rounds before the crash too.
    """
    answered = {site for entry in history for site in entry["losses"]}
    return [site for site in sites if site in answered]


def _one_round(link: SiteLink, strategy: SiteFedAvg, state: State, fed: FederationConfig, phase: str,
               sites: list[str], server_round: int,
               exclude_poisoned: bool | None) -> tuple[State, dict[str, tuple[State, int]], RoundReport]:
    """One FedAvg round over the sites that answer; a round fails only if every site fails it."""
    started = time.perf_counter()
    request = TrainRequest(model=arrays_from_state(state), phase=phase, local_steps=fed.local_steps,
                           first_batch=(server_round - 1) * fed.local_steps, exclude_poisoned=exclude_poisoned,
                           server_round=server_round)
    # Flower's FedAvg writes the messages (it sets server-round itself, to the same value and place).
    messages = list(strategy.configure_train(server_round, request.model, request.to_config(), link.grid))
    exchange = link.send_messages(messages, phase, server_round)
    if not exchange.replies:
        raise SiteError(",".join(sites), f"every site failed {phase} round {server_round}: {exchange.failures}")
    # Sites in a fixed order: summing in arrival order would make runs differ in the last float bits,
    # which 30 rounds of training amplify to ~0.1 dB.
    answered = [site for site in sites if site in exchange.replies]
    averaging = time.perf_counter()
    arrays, _ = strategy.aggregate_train(server_round, [exchange.messages[site] for site in answered])
    averaging = time.perf_counter() - averaging
    updates = {site: (state_from_arrays(c[ARRAYS]), int(c[METRICS]["num-examples"]))
               for site, c in exchange.replies.items()}
    losses = {s: float(c[METRICS]["loss"]) for s, c in exchange.replies.items()}
    state = state_from_arrays(arrays)
    return state, updates, RoundReport(server_round, losses, exchange.failures, time.perf_counter() - started,
                                       exchange.poll_latency, averaging)
