"""The removal phase of a centralised method: the unlearning engine driven over the federation.

The engine (:func:`fedforget.unlearning.engine.run_unlearning`) calls back after every step;
:class:`UnlearningCurve` turns those calls into the method's curve (server values every step, the
sites' scores every ``unlearning.eval_every`` steps) and hands them to the recorder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from fedforget.configs.schema import unlearn_phase
from fedforget.data.batches import batches_per_pass, subset_size
from fedforget.learning.checkpoints import State, save_checkpoint
from fedforget.reporting.results import ModelRecord
from fedforget.server.federation import Federation
from fedforget.server.recorder import Recorder
from fedforget.server.records import cost_record
from fedforget.server.scoring import evaluate_at_sites
from fedforget.strategies.fedavg import TrainedModel
from fedforget.strategies.protocol import SiteError
from fedforget.strategies.removal import FederatedWorker
from fedforget.unlearning import get_method
from fedforget.unlearning.engine import UnlearnReport, planned_callbacks, run_unlearning
from fedforget.unlearning.method import DAMPENED, FORGET, RETAIN
from fedforget.unlearning.pga import reference_model


@dataclass
class UnlearningCurve:
    """The engine's per-step callback: one curve point per step, the sites' scores when one is due.

    A local round covers several steps, so a point is evaluated when the step count passed a
    multiple of ``every`` (and at the last step, and whenever SSD dampened weights).
    """

    fed: Federation
    recorder: Recorder
    tag: str
    every: int
    budget: int
    last_step: int = 0

    def __call__(self, step: int, current: nn.Module, values: dict[str, float]) -> None:
        scores = None
        if step // self.every > self.last_step // self.every or step == self.budget or DAMPENED in values:
            state = {k: v.detach() for k, v in current.state_dict().items()}
            scores = evaluate_at_sites(self.fed, self.recorder, state, self.tag, max(step, 1))
        self.last_step = step
        self.recorder.curve_point(self.tag, step, values, scores)


class RoundFailures:
    """Records a site that failed an unlearning round, and whether the round is sent again."""

    def __init__(self, recorder: Recorder, method: str) -> None:
        self.recorder, self.method = recorder, method

    def __call__(self, site: str, reason: str, step: int, retried: bool) -> None:
        self.recorder.round_failed(self.method, unlearn_phase(self.method), site, reason, step, retried)


def run_method(fed: Federation, recorder: Recorder, name: str, original: TrainedModel,
               server_retain: Any = None) -> tuple[ModelRecord, State]:
    """Remove the forget site with centralised method ``name``, starting from the original model."""
    cfg = fed.cfg
    method = get_method(name, cfg.unlearning)
    tag = unlearn_phase(name)
    model = fed.new_model()
    model.load_state_dict(original.state)
    worker = FederatedWorker(fed.link, method, fed.forget_site, cfg.retain_sites, _batches_per_pass(fed), tag,
                             original=original.state,
                             server_retain=server_retain(method) if server_retain else None,
                             retries=cfg.unlearning.round_retries, on_failure=RoundFailures(recorder, name))
    budget = cfg.unlearning.budget_steps(cfg.federation.training_steps)
    reference = _reference(fed, original) if method.needs_reference else None
    recorder.unlearning_started(tag, planned_callbacks(method, budget, cfg.unlearning.local_steps), "step")
    curve = UnlearningCurve(fed, recorder, tag, cfg.unlearning.eval_every, budget)
    report = run_unlearning(method, model, worker, budget, cfg.unlearning.lr, reference=reference, on_step=curve,
                            local_steps=cfg.unlearning.local_steps)
    recorder.phase_finished(tag, report.wall_seconds)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    sha = save_checkpoint(recorder.run.checkpoints / f"{name}.pt", state,
                          {"model": name, "budget": budget, "steps": report.steps})
    return _record(fed, tag, budget, report, worker, sha), state


def _record(fed: Federation, tag: str, budget: int, report: UnlearnReport, worker: FederatedWorker, sha: str) -> ModelRecord:
    u = fed.cfg.unlearning
    retain_sites = 0 if u.retain_access == "server" else len(fed.cfg.retain_sites)
    site_steps = report.evaluations[FORGET] + report.evaluations[RETAIN] * retain_sites
    messages = fed.link.ledger.messages_in(tag)
    details = {"budget": budget, "evaluations": report.evaluations,
               "passes": {FORGET: report.evaluations[FORGET] * u.batch_size
                          / max(1, fed.sites[fed.forget_site].train_slices)},
               "dampened_elements": report.dampened_elements, "retain_access": u.retain_access,
               "local_steps": report.local_steps, "rounds": report.rounds, "messages": messages,
               "cost": cost_record(site_steps, max(0.0, report.wall_seconds - worker.sender.seconds), messages,
                                   report.bytes_communicated)}
    return ModelRecord(wall_seconds=report.wall_seconds, steps=report.steps, retain_fraction=u.retain_fraction,
                       bytes_communicated=report.bytes_communicated, trained_on=fed.link.ledger.trained_on(tag),
                       sha256=sha, details=details)


def _batches_per_pass(fed: Federation) -> dict[str, int]:
    u = fed.cfg.unlearning
    forget = fed.sites[fed.forget_site].train_slices
    retain = [subset_size(fed.sites[s].train_slices, u.retain_fraction) for s in fed.cfg.retain_sites]
    return {FORGET: batches_per_pass(forget, u.batch_size),
            RETAIN: max(batches_per_pass(n, u.batch_size) for n in retain)}


def _reference(fed: Federation, original: TrainedModel) -> State:
    updates = original.site_updates
    if fed.forget_site not in updates:
        raise SiteError(fed.forget_site, "pga needs the forget site's last-round update, which the original "
                                         "model's checkpoint does not hold (retrain or use a newer checkpoint)")
    total = sum(n for _, n in updates.values())
    forget_state, forget_n = updates[fed.forget_site]
    return reference_model(original.state, forget_state, total, forget_n)
