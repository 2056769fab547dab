"""The removal phase of a history-based method, and the retraining controls it is compared with.

A history-based method runs on the server with the original's round history; its only work at the
sites is local training rounds (``strategies.replay``). Its cost is what a consortium pays: site
steps, server seconds, messages, bytes and the history's storage.

``retrain_budget`` is the control: besides its own model (``unlearning.retrain_budget.fraction``), it
trains ``retrain_budget@<method>`` at each history-based method's measured site compute (with
``match``), and ``retrain_budget@<fraction>`` for each fraction of ``curve``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fedforget.configs.schema import ORACLE, ExperimentConfig, unlearn_phase
from fedforget.data.batches import BatchSource
from fedforget.learning.checkpoints import State, save_checkpoint
from fedforget.learning.training import initial_state
from fedforget.reporting.results import ModelRecord
from fedforget.server.federation import Federation
from fedforget.server.recorder import Recorder
from fedforget.server.records import cost_record
from fedforget.server.removal import RoundFailures
from fedforget.server.scoring import evaluate_at_sites
from fedforget.strategies.fedavg import TrainedModel
from fedforget.strategies.replay import FederatedRoundWorker
from fedforget.unlearning import VARIANT, get_history_method, is_history_method
from fedforget.unlearning.history_base import HistoryRun, run_history_method
from fedforget.unlearning.retrain_budget import RetrainBudget, budget_schedule

RETRAIN_BUDGET = RetrainBudget.name


def run_history(fed: Federation, recorder: Recorder, name: str, original: TrainedModel,
                server_retain: BatchSource | None, fraction: float | None = None) -> tuple[ModelRecord, State]:
    """Remove the forget site with history-based method ``name`` (``fraction``: retraining's budget)."""
    cfg = fed.cfg
    method = get_history_method(name, cfg.unlearning, fraction)
    tag = unlearn_phase(name)
    worker = FederatedRoundWorker(fed.link, tag, cfg.unlearning.round_retries, RoundFailures(recorder, name))
    planned = method.planned_rounds(cfg.federation)
    recorder.unlearning_started(tag, planned, "round")
    run = HistoryRun(history=original.round_history, original=original.state,
                     initial=initial_state(cfg.model, cfg.seed), fed=cfg.federation, unlearning=cfg.unlearning,
                     forget_site=fed.forget_site, retain_sites=cfg.retain_sites, worker=worker,
                     new_model=fed.new_model, seed=cfg.seed, joins=cfg.joins, server_retain=server_retain,
                     on_round=RoundCurve(fed, recorder, tag, planned))
    state, report = run_history_method(method, run)
    recorder.phase_finished(tag, report.wall_seconds)
    sha = save_checkpoint(recorder.run.checkpoints / f"{name}.pt", state,
                          {"model": name, "rounds": report.rounds, "site_steps": report.site_steps})
    ledger = fed.link.ledger
    history_bytes = original.round_history.bytes if original.round_history is not None and method.needs_history else 0
    details = {**report.details, "family": "history", "retain_data": "every retain site's whole training stream",
               "rounds": report.rounds, "messages": ledger.messages_in(tag),
               "cost": cost_record(report.site_steps, report.server_seconds, ledger.messages_in(tag),
                                   ledger.bytes_in(tag), history_bytes)}
    return ModelRecord(wall_seconds=report.wall_seconds, steps=report.trajectory_steps, retain_fraction=None,
                       bytes_communicated=ledger.bytes_in(tag), trained_on=ledger.trained_on(tag), sha256=sha,
                       details=details), state


@dataclass
class RoundCurve:
    """The history run's per-round callback: evaluate every ``unlearning.eval_every``-th new global model
    (and the planned last) at every site, and hand the round to the recorder."""

    fed: Federation
    recorder: Recorder
    tag: str
    planned: int

    def __call__(self, count: int, state: State, values: dict[str, float]) -> None:
        scores = None
        if count % self.fed.cfg.unlearning.eval_every == 0 or count == self.planned:
            scores = evaluate_at_sites(self.fed, self.recorder, state, self.tag, count)
        self.recorder.curve_point(self.tag, count, values, scores)


def retrain_controls(cfg: ExperimentConfig, models: Mapping[str, ModelRecord]) -> Iterator[tuple[str, float]]:
    """The ``retrain_budget@...`` models a run owes: (name, fraction of the oracle's site compute)."""
    u = cfg.unlearning
    if RETRAIN_BUDGET not in u.methods:
        return
    oracle_steps = models[ORACLE].details["cost"]["site_steps"]
    if u.retrain_budget.match:
        for name in u.methods:
            steps = models[name].details["cost"]["site_steps"] if name in models else 0
            # A method that trained nothing at the sites (FUKD with distillation) has no retraining twin.
            if is_history_method(name) and name.partition(VARIANT)[0] != RETRAIN_BUDGET and steps:
                yield f"{RETRAIN_BUDGET}{VARIANT}{name}", steps / oracle_steps
    for fraction in u.retrain_budget.curve:
        yield f"{RETRAIN_BUDGET}{VARIANT}{fraction:g}", fraction


def full_schedule(cfg: ExperimentConfig) -> list[int]:
    """Local steps per round of retraining with the whole budget: the oracle's schedule."""
    fed = cfg.federation
    return budget_schedule(1.0, fed.rounds, fed.local_steps)


def same_schedule(cfg: ExperimentConfig, fraction: float, trained: Mapping[str, dict[str, Any]]) -> str | None:
    """A retraining model already trained on the schedule ``fraction`` gives (its name), if any."""
    fed = cfg.federation
    wanted = budget_schedule(fraction, fed.rounds, fed.local_steps)
    for name, details in trained.items():
        if details.get("schedule") == wanted:
            return name
    return None
