"""The run's phases: original -> oracle -> one removal per method -> evaluation of every model.

Original and oracle are cached by a fingerprint of everything that shapes them
(data config, sites, model, federation schedule, seed; the oracle also by the forget
site) *and* of the data each was trained on, as the sites report it (every training
file's name, size and SHA-256, and the poison manifest), so sweeps over methods or
retain fractions reuse them, and a changed, added or corrupted file retrains them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from flwr.app import RecordDict
from torch import nn

from fedforget.configs.atomic import atomic_torch_save
from fedforget.configs.compose import fingerprint, to_plain
from fedforget.configs.schema import (
    ORACLE,
    ORIGINAL,
    TRAINING_PHASES,
    ExperimentConfig,
    final_phase,
    unlearn_phase,
)
from fedforget.data.batches import batches_per_pass, subset_size
from fedforget.learning.checkpoints import State, load_checkpoint, save_checkpoint, state_sha256
from fedforget.learning.history import INDEX as HISTORY_INDEX
from fedforget.learning.history import HistoryError, RoundHistory, history_folder
from fedforget.learning.training import initial_state, model_from_config
from fedforget.recon.poison import poisoned_count
from fedforget.reporting.results import ModelRecord
from fedforget.reporting.tensorboard import Boards
from fedforget.server.run_folder import RunFolder
from fedforget.strategies.directory import SiteInfo
from fedforget.strategies.fedavg import Progress, RoundReport, TrainedModel, train_federated
from fedforget.strategies.link import SiteLink
from fedforget.strategies.messages import EvaluateRequest
from fedforget.strategies.protocol import (
    EVAL_SPLITS,
    EVALUATE,
    METRICS,
    SiteError,
    arrays_from_state,
    parse_evaluation,
)
from fedforget.strategies.removal import FederatedWorker
from fedforget.unlearning import get_method
from fedforget.unlearning.base import DAMPENED, FORGET, RETAIN, planned_callbacks, run_unlearning
from fedforget.unlearning.pga import reference_model

SiteScores = dict[str, dict[str, Any]]
# What of a split's scores goes into results.json (the loss goes to TensorBoard only).
RESULT_KEYS = ("psnr", "ssim", "nmse", "artifact_score", "psnr_volumes", "ssim_volumes", "artifact_score_volumes")


@dataclass
class Session:
    """What every phase of one run shares."""

    cfg: ExperimentConfig
    run: RunFolder
    link: SiteLink
    sites: dict[str, SiteInfo]
    boards: Boards
    cache_dir: Path | None
    scores: dict[str, SiteScores] = field(default_factory=dict)
    reference: State | None = None  # the oracle: the membership audit's reference model
    cache_keys: dict[str, str] = field(default_factory=dict)

    @property
    def forget_site(self) -> str:
        return self.cfg.unlearning.forget_site

    def new_model(self) -> nn.Module:
        return model_from_config(self.cfg.model)


def score_sites(session: Session, state: State | None, tag: str, step: int, tolerate: bool = False,
                reference: State | None = None) -> SiteScores:
    """Evaluate one model at every site (test split; the forget site's train split too).

    ``state=None`` scores zero-filled reconstructions (the sites need no model for them). A
    ``reference`` (the oracle) goes to the forget site for the calibrated membership audit.

    With ``tolerate``, a site that fails is recorded as an event and left out;
    otherwise it fails the phase (final scores must cover every site).
    """
    contents = {site: evaluation_content(site, session.forget_site, state, tag, step, reference)
                for site in session.sites}
    exchange = session.link.send(EVALUATE, contents, f"evaluate/{tag}", step)
    if tolerate:
        for site, reason in exchange.failures.items():
            session.run.event("evaluation_failed", phase=tag, step=step, site=site, reason=reason)
        replies = exchange.replies
    else:
        replies = exchange.require_all()
    return {site: site_scores(content) for site, content in replies.items()}


def evaluation_content(site: str, forget_site: str, state: State | None, tag: str, step: int,
                       reference: State | None = None) -> RecordDict:
    """What an ``evaluate`` message asks of one site: the test split (the forget site's train split too) of
    ``state`` (None: zero-filled), and at the forget site the ``reference`` for the calibrated audit."""
    at_forget_site = site == forget_site
    request = EvaluateRequest(splits=("test", "train") if at_forget_site else ("test",), phase=tag, step=step,
                              model=None if state is None else arrays_from_state(state),
                              reference=arrays_from_state(reference) if reference is not None and at_forget_site
                              else None)
    return request.to_record()


def site_scores(content: RecordDict) -> dict[str, Any]:
    """A site's evaluation reply as the server keeps it: per split, plus ``audit`` (the membership values)."""
    splits, audit = parse_evaluation(content[METRICS])
    return {**splits, "audit": audit}


def log_scores(session: Session, tag: str, step: int, scores: SiteScores) -> None:
    session.boards.site_metrics(tag, step, {s: _board_values(v) for s, v in scores.items()})


def evaluate_at_sites(session: Session, state: State | None, tag: str, step: int, tolerate: bool = False,
                      reference: State | None = None) -> SiteScores:
    """Score a model at every site and write the scores to TensorBoard."""
    scores = score_sites(session, state, tag, step, tolerate, reference)
    log_scores(session, tag, step, scores)
    return scores


def _board_values(site_scores: dict[str, Any]) -> dict[str, float]:
    """A site's scalar scores as TensorBoard metrics (the train split's prefixed ``train_``)."""
    values = {k: v for k, v in site_scores["test"].items() if isinstance(v, float)}
    values.update({f"train_{k}": v for k, v in site_scores.get("train", {}).items() if isinstance(v, float)})
    return values


def training_data(infos: Mapping[str, SiteInfo], sites: list[str]) -> dict[str, Any]:
    """What each site trains on, as it reported it: its training files (name, bytes, SHA-256), its poison manifest."""
    return {site: {"train": [[f["name"], f["bytes"], f["sha256"]] for f in infos[site].data["train"]["files"]],
                   "poison_manifest_sha256": infos[site].data.get("poison_manifest_sha256", "")}
            for site in sites}


def training_fingerprint(cfg: ExperimentConfig, sites: list[str], data: Mapping[str, Any],
                         history: Mapping[str, Any] | None = None) -> str:
    """The model cache's key: the configuration that shapes a trained model and the data it was trained on
    (and, for an original that keeps its round history, the history's settings)."""
    plain = to_plain(cfg)
    schedule = {k: plain["federation"][k] for k in ("rounds", "local_steps", "batch_size", "lr", "lr_schedule",
                                                   "lr_final_fraction", "l1_weight", "grad_clip", "bf16")}
    payload = {"data": plain["data"], "sites": plain["sites"], "model": plain["model"],
               "schedule": schedule, "seed": cfg.seed, "trained_on": sites, "poison": plain["poison"],
               "training_data": {site: data[site] for site in sites}}
    if history:
        payload["history"] = dict(history)
    return fingerprint(payload)


def _history_settings(session: Session, name: str) -> dict[str, Any] | None:
    """What the original keeps of its rounds (None: no history, or not the original)."""
    history = session.cfg.federation.history
    return {"every": history.every, "dtype": history.dtype} if name == ORIGINAL and history.enabled else None


def _phase_sites(session: Session, name: str) -> list[str]:
    if name == ORIGINAL:
        return list(session.sites)
    return [s for s in session.cfg.oracle_sites if not _wholly_poisoned(session, s)]


def _wholly_poisoned(session: Session, site: str) -> bool:
    """A poisoned site with no clean training slice has nothing to give the oracle."""
    poison = session.cfg.poison
    slices = session.sites[site].train_slices
    return session.cfg.is_poisoned(site) and poisoned_count(poison.fraction, slices) == slices


def obtain_trained(session: Session, name: str) -> TrainedModel:
    """The original or the oracle: from ``from_checkpoint``, the cache, or federated training.

    An original that keeps its round history comes with it: loaded models only where their history
    lies beside them; the history is copied next to the run folder's and the cache's checkpoint.
    """
    sites = _phase_sites(session, name)
    key = training_fingerprint(session.cfg, sites, training_data(session.sites, sites),
                               _history_settings(session, name))
    session.cache_keys[name] = key
    target = session.run.checkpoints / f"{name}.pt"
    source = _existing_checkpoint(session, name, key)
    if source is not None:
        trained = _load_trained(source, sites, _history_settings(session, name) is not None)
        session.run.event("loaded", model=name, source=str(source))
        session.run.progress.phase_loaded(TRAINING_PHASES[name], trained.rounds, "round", str(source))
        session.boards.text("server", f"{TRAINING_PHASES[name]}/source", f"loaded from {source}", 0)
    else:
        trained = _train(session, name, sites, key)
    _save_trained(target, trained, key, name)
    if session.cache_dir is not None:
        _save_trained(session.cache_dir / key / f"{name}.pt", trained, key, name)
    if trained.round_history is not None:
        trained.round_history = trained.round_history.copy_to(history_folder(target))
        cached = session.cache_dir / key / f"{name}.pt" if session.cache_dir is not None else None
        if cached is not None and not _history_beside(cached, key):
            trained.round_history.copy_to(history_folder(cached))
    return trained


def _existing_checkpoint(session: Session, name: str, key: str) -> Path | None:
    given = session.cfg.unlearning.from_checkpoint
    wants_history = _history_settings(session, name) is not None
    if given:
        original = Path(given).expanduser().resolve()
        candidate = original if name == ORIGINAL else original.with_name(f"{ORACLE}.pt")
        if name == ORIGINAL:
            load_checkpoint(candidate)  # raises a clear error for a missing or broken file
            if session.cfg.reads_round_history:
                RoundHistory.open(history_folder(candidate))  # raises a clear error when it has none
            return candidate
        if candidate.is_file() and load_checkpoint(candidate)[1].get("fingerprint") == key:
            return candidate
    if session.cache_dir is not None:
        cached = session.cache_dir / key / f"{name}.pt"
        if cached.is_file() and (not wants_history or _history_beside(cached, key)):
            return cached
    return None


def _history_beside(checkpoint: Path, key: str) -> bool:
    try:
        RoundHistory.open(history_folder(checkpoint), key)
    except HistoryError:
        return False
    return True


def _load_trained(path: Path, sites: list[str], with_history: bool = False) -> TrainedModel:
    state, meta = load_checkpoint(path)
    updates = {}
    updates_path = path.with_name(f"{path.stem}-site-updates.pt")
    if updates_path.is_file():
        updates = torch.load(updates_path, map_location="cpu", weights_only=False)
    history = None
    if with_history and (history_folder(path) / HISTORY_INDEX).is_file():
        history = RoundHistory.open(history_folder(path), meta.get("fingerprint"))
    return TrainedModel(state=state, sites=list(meta.get("trained_on", sites)), rounds=int(meta.get("rounds", 0)),
                        steps=int(meta.get("steps", 0)), wall_seconds=float(meta.get("wall_seconds", 0.0)),
                        bytes_communicated=int(meta.get("bytes", 0)), site_updates=updates,
                        history=list(meta.get("history", [])), round_history=history)


def _save_trained(path: Path, trained: TrainedModel, key: str, name: str) -> None:
    save_checkpoint(path, trained.state, {"model": name, "fingerprint": key, "trained_on": trained.sites,
                                          "rounds": trained.rounds, "steps": trained.steps,
                                          "wall_seconds": trained.wall_seconds, "bytes": trained.bytes_communicated,
                                          "history": trained.history})
    if trained.site_updates:
        atomic_torch_save(path.with_name(f"{path.stem}-site-updates.pt"), trained.site_updates, temp=".{name}.tmp")


@dataclass
class TrainingHooks:
    """Per-round work of a training phase: score the round (saved with it), then log it."""

    session: Session
    tag: str

    def score(self, report: RoundReport, state: State) -> dict[str, Any]:
        fed = self.session.cfg.federation
        if report.round % fed.eval_every == 0 or report.round == fed.rounds:
            return score_sites(self.session, state, self.tag, report.round, tolerate=True)
        return {}

    def completed(self, report: RoundReport, scores: dict[str, Any]) -> None:
        session, tag = self.session, self.tag
        for site, reason in report.failures.items():
            session.run.event("site_failed", phase=tag, round=report.round, site=site, reason=reason)
            session.boards.text(site, f"{tag}/failure", f"round {report.round}: {reason}", report.round)
            session.boards.site_metrics(tag, report.round, {site: {"failed": 1.0}})
        session.boards.site_metrics(tag, report.round, {s: {"fit_loss": v} for s, v in report.losses.items()})
        session.boards.server_metric(f"{tag}/round_seconds", report.seconds, report.round)
        session.boards.server_metric(f"{tag}/sites_answered", float(len(report.losses)), report.round)
        if scores:
            log_scores(session, tag, report.round, scores)
        session.boards.flush()
        session.run.progress.step(tag, report.round, scores, seconds=round(report.seconds, 3))
        if tag == TRAINING_PHASES[ORIGINAL] and report.round == session.cfg.federation.fault.server_exit_after_round:
            session.run.event("server_killed", phase=tag, after_round=report.round, reason="federation.fault")
            os._exit(3)  # the resume drill: die like a killed process, right after the round was saved


def _train(session: Session, name: str, sites: list[str], key: str) -> TrainedModel:
    cfg, tag = session.cfg, TRAINING_PHASES[name]
    progress = Progress(session.run.checkpoints / "progress" / f"{name}.pt", key)
    saved = progress.load()
    if saved is not None:
        session.run.event("resumed", phase=tag, after_round=int(saved["round"]))
    initial = initial_state(cfg.model, cfg.seed)
    session.run.progress.phase_started(tag, cfg.federation.rounds, "round", int(saved["round"]) if saved else 0)
    if saved is None:
        # Round 0: the curves' starting point; it also warms every site process up before the clock runs.
        session.run.progress.evaluation(tag, 0, evaluate_at_sites(session, initial, tag, 0, tolerate=True))
    # The oracle of a poisoned federation is retrained on every site without any poisoned slice.
    exclude = name == ORACLE and cfg.poison.active
    history = None
    if _history_settings(session, name) is not None:
        joined = {j + 1 for j in cfg.joins.values() if j > 0}  # a rollback resumes these rounds' starts
        history = RoundHistory.create(history_folder(session.run.checkpoints / f"{name}.pt"),
                                      cfg.federation.history.every, cfg.federation.history.dtype, key, joined)
    trained = train_federated(session.link, sites, initial, cfg.federation, tag, progress,
                              TrainingHooks(session, tag), exclude, cfg.joins, history)
    trained.round_history = history
    session.run.progress.phase_finished(tag, seconds=round(trained.wall_seconds, 3))
    return trained


def zero_filled_record() -> ModelRecord:
    """The baseline's record: nothing trained, nothing moved; its scores come from :func:`final_scores`."""
    return ModelRecord(wall_seconds=0.0, steps=0, retain_fraction=None, bytes_communicated=0, trained_on=[],
                       details={"baseline": "RSS of the undersampled k-space, centre-cropped (no model)",
                                "cost": cost_record(0, 0.0, 0, 0)})


def trained_record(session: Session, trained: TrainedModel) -> ModelRecord:
    details: dict[str, Any] = {"rounds": trained.rounds}
    history_bytes = 0
    if trained.round_history is not None:
        details["history"] = trained.round_history.describe()
        history_bytes = details["history"]["bytes"]
    details["cost"] = cost_record(trained.site_steps, trained.server_seconds, trained.messages,
                                  trained.bytes_communicated, history_bytes)
    return ModelRecord(wall_seconds=trained.wall_seconds, steps=trained.steps, retain_fraction=None,
                       bytes_communicated=trained.bytes_communicated, trained_on=trained.sites,
                       sha256=state_sha256(trained.state), details=details)


def cost_record(site_steps: int, server_seconds: float, messages: int, bytes_: int, history_bytes: int = 0
                ) -> dict[str, Any]:
    """``models.<m>.cost``: what a model cost, in the units a consortium pays."""
    return {"site_steps": int(site_steps), "server_seconds": round(float(server_seconds), 4),
            "messages": int(messages), "bytes": int(bytes_), "history_bytes": int(history_bytes)}


def _batches_per_pass(session: Session) -> dict[str, int]:
    u = session.cfg.unlearning
    forget = session.sites[session.forget_site].train_slices
    retain = [subset_size(session.sites[s].train_slices, u.retain_fraction) for s in session.cfg.retain_sites]
    return {FORGET: batches_per_pass(forget, u.batch_size),
            RETAIN: max(batches_per_pass(n, u.batch_size) for n in retain)}


def _reference(session: Session, original: TrainedModel) -> State:
    updates = original.site_updates
    if session.forget_site not in updates:
        raise SiteError(session.forget_site, "pga needs the forget site's last-round update, which the original "
                                             "model's checkpoint does not hold (retrain or use a newer checkpoint)")
    total = sum(n for _, n in updates.values())
    forget_state, forget_n = updates[session.forget_site]
    return reference_model(original.state, forget_state, total, forget_n)


def run_method(session: Session, name: str, original: TrainedModel,
               server_retain: Any = None) -> tuple[ModelRecord, State]:
    """Remove the forget site with method ``name``, starting from the original model."""
    cfg = session.cfg
    method = get_method(name, cfg.unlearning)
    tag = unlearn_phase(name)
    model = session.new_model()
    model.load_state_dict(original.state)
    worker = FederatedWorker(session.link, method, session.forget_site, cfg.retain_sites,
                             _batches_per_pass(session), tag, original=original.state,
                             server_retain=server_retain(method) if server_retain else None,
                             retries=cfg.unlearning.round_retries, on_failure=round_failure_recorder(session, name))
    budget = cfg.unlearning.budget_steps(cfg.federation.training_steps)
    reference = _reference(session, original) if method.needs_reference else None
    starting_curves(session, tag)

    evaluated = [0]

    def on_step(step: int, current: nn.Module, record: dict[str, float]) -> None:
        for key, value in record.items():
            session.boards.server_metric(f"{tag}/{key}", value, step)
        # A local round covers several steps: evaluate when it passed a multiple of eval_every.
        every = cfg.unlearning.eval_every
        scores = None
        if step // every > evaluated[0] // every or step == budget or DAMPENED in record:
            scores = evaluate_at_sites(session, {k: v.detach() for k, v in current.state_dict().items()}, tag,
                                       max(step, 1))
        evaluated[0] = step
        session.boards.flush()
        session.run.progress.step(tag, scores=scores)

    session.run.progress.phase_started(tag, planned_callbacks(method, budget, cfg.unlearning.local_steps), "step")
    report = run_unlearning(method, model, worker, budget, cfg.unlearning.lr, reference=reference, on_step=on_step,
                            local_steps=cfg.unlearning.local_steps)
    session.run.progress.phase_finished(tag, seconds=round(report.wall_seconds, 3))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    sha = save_checkpoint(session.run.checkpoints / f"{name}.pt", state,
                          {"model": name, "budget": budget, "steps": report.steps})
    retain_sites = 0 if cfg.unlearning.retain_access == "server" else len(cfg.retain_sites)
    site_steps = report.evaluations[FORGET] + report.evaluations[RETAIN] * retain_sites
    messages = session.link.ledger.messages_in(tag)
    details = {"budget": budget, "evaluations": report.evaluations,
               "passes": {FORGET: report.evaluations[FORGET] * cfg.unlearning.batch_size
                          / max(1, session.sites[session.forget_site].train_slices)},
               "dampened_elements": report.dampened_elements, "retain_access": cfg.unlearning.retain_access,
               "local_steps": report.local_steps, "rounds": report.rounds, "messages": messages,
               "cost": cost_record(site_steps, max(0.0, report.wall_seconds - worker.sender.seconds), messages,
                                   report.bytes_communicated)}
    return ModelRecord(wall_seconds=report.wall_seconds, steps=report.steps,
                       retain_fraction=cfg.unlearning.retain_fraction, bytes_communicated=report.bytes_communicated,
                       trained_on=session.link.ledger.trained_on(tag), sha256=sha, details=details), state


def starting_curves(session: Session, tag: str) -> None:
    """Every unlearning curve starts from the original's scores at step 0."""
    if ORIGINAL in session.scores:
        session.boards.site_metrics(tag, 0, {s: _board_values(v) for s, v in session.scores[ORIGINAL].items()})


def round_failure_recorder(session: Session, method: str):
    """Record a site that failed an unlearning round, and whether the round is sent again."""

    def record(site: str, reason: str, step: int, retried: bool) -> None:
        session.run.event("unlearn_round_failed", method=method, site=site, step=step, reason=reason,
                          retried=retried)
        session.boards.text(site, f"{unlearn_phase(method)}/failure", f"step {step}: {reason}", step)

    return record


def final_scores(session: Session, name: str, state: State | None) -> SiteScores:
    """Every model x every site, once (also the membership audit, calibrated against the oracle)."""
    scores = evaluate_at_sites(session, state, final_phase(name), 0, reference=session.reference)
    session.scores[name] = scores
    return scores


def fill_record(record: ModelRecord, scores: SiteScores, forget_site: str) -> ModelRecord:
    """A model's final scores into its record: per site and split, and the forget site's membership audit."""
    record.sites = {site: {split: {k: v[k] for k in RESULT_KEYS if k in v}
                           for split, v in s.items() if split in EVAL_SPLITS}
                    for site, s in scores.items()}
    audit = scores[forget_site]["audit"]
    record.audit = {"mia_auc": audit.get("mia_auc", math.nan)}
    if "mia_auc_ci_low" in audit:
        record.audit["mia_auc_uncalibrated_ci"] = [audit["mia_auc_ci_low"], audit["mia_auc_ci_high"]]
    if "mia_auc_calibrated" in audit:
        record.audit["mia_auc_calibrated"] = audit["mia_auc_calibrated"]
        record.audit["mia_auc_ci"] = [audit["mia_auc_calibrated_ci_low"], audit["mia_auc_calibrated_ci_high"]]
    return record
