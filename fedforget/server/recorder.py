"""The one object a run's phases report to: scores, events and progress in; TensorBoard, ``progress.jsonl``,
``status.json`` and, at the end, the run folder's result files out.

Phases return what they computed (models, records, scores) and tell the recorder what happened; none
of them writes a file of the output contract itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from fedforget.configs.schema import ORIGINAL, ExperimentConfig
from fedforget.recon.atomic import atomic_write_json
from fedforget.reporting.pictures import render_figures
from fedforget.reporting.progress import FINAL_EVALUATION
from fedforget.reporting.report import write_report
from fedforget.reporting.results import ModelRecord, build_audit, build_results
from fedforget.reporting.tensorboard import Boards, hparam_entries, write_hparams
from fedforget.server.run_folder import RunFolder, utc_now
from fedforget.strategies.fedavg import RoundReport
from fedforget.strategies.link import Ledger

SiteScores = dict[str, dict[str, Any]]


def board_values(site_scores: Mapping[str, Any]) -> dict[str, float]:
    """A site's scalar scores as TensorBoard metrics (the train split's prefixed ``train_``)."""
    values = {k: v for k, v in site_scores["test"].items() if isinstance(v, float)}
    values.update({f"train_{k}": v for k, v in site_scores.get("train", {}).items() if isinstance(v, float)})
    return values


class Recorder:
    """Receives what a run's phases report and writes it to the run folder (see the module docstring)."""

    def __init__(self, run: RunFolder, sites: list[str]) -> None:
        self.run = run
        self.boards = Boards(run.tensorboard, sites)
        self.final_scores: dict[str, SiteScores] = {}  # model -> its final scores at every site

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *_: Any) -> None:
        self.boards.close()

    # Events and progress (status.json, progress.jsonl).
    def event(self, kind: str, **details: Any) -> None:
        self.run.event(kind, **details)

    def phase_started(self, tag: str, total: int, unit: str, done: int = 0) -> None:
        self.run.progress.phase_started(tag, total, unit, done)

    def phase_loaded(self, tag: str, rounds: int, source: str) -> None:
        self.run.progress.phase_loaded(tag, rounds, "round", source)
        self.boards.text("server", f"{tag}/source", f"loaded from {source}", 0)

    def phase_finished(self, tag: str, seconds: float) -> None:
        self.run.progress.phase_finished(tag, seconds=round(seconds, 3))

    def evaluation_started(self, models: int) -> None:
        """The final evaluation: every model at every site, one model at a time."""
        self.run.progress.phase_started(FINAL_EVALUATION, total=models, unit="model")

    def evaluation_finished(self) -> None:
        self.run.progress.phase_finished(FINAL_EVALUATION)

    def phase_stopped(self, method: str, site: str, reason: str) -> None:
        """A site fault stopped one method's removal (the run goes on without it)."""
        self.event("method_stopped", method=method, site=site, reason=reason)
        self.run.progress.stop_phase(f"site {site}: {reason}")

    # Scores and curves (TensorBoard, progress.jsonl).
    def scores(self, tag: str, step: int, scores: SiteScores) -> None:
        self.boards.site_metrics(tag, step, {s: board_values(v) for s, v in scores.items()})

    def starting_point(self, tag: str, step: int, scores: SiteScores) -> None:
        """A training curve's round 0 (the initial model's scores)."""
        self.scores(tag, step, scores)
        self.run.progress.evaluation(tag, step, scores)

    def curve_point(self, tag: str, step: int, values: Mapping[str, float], scores: SiteScores | None) -> None:
        """One unlearning step or round: its server-side values, and the sites' scores when it was evaluated."""
        for key, value in values.items():
            self.boards.server_metric(f"{tag}/{key}", value, step)
        self.boards.flush()
        self.run.progress.step(tag, scores=scores)

    def unlearning_started(self, tag: str, total: int, unit: str) -> None:
        """Every unlearning curve starts from the original's final scores at step 0."""
        if ORIGINAL in self.final_scores:
            self.scores(tag, 0, self.final_scores[ORIGINAL])
        self.phase_started(tag, total, unit)

    def training_round(self, tag: str, report: RoundReport, scores: SiteScores) -> None:
        """One federated training round: failures, losses, timing, and the scores when it was evaluated."""
        for site, reason in report.failures.items():
            self.event("site_failed", phase=tag, round=report.round, site=site, reason=reason)
            self.boards.text(site, f"{tag}/failure", f"round {report.round}: {reason}", report.round)
            self.boards.site_metrics(tag, report.round, {site: {"failed": 1.0}})
        self.boards.site_metrics(tag, report.round, {s: {"fit_loss": v} for s, v in report.losses.items()})
        self.boards.server_metric(f"{tag}/round_seconds", report.seconds, report.round)
        self.boards.server_metric(f"{tag}/sites_answered", float(len(report.losses)), report.round)
        if scores:
            self.scores(tag, report.round, scores)
        self.boards.flush()
        self.run.progress.step(tag, report.round, scores, seconds=round(report.seconds, 3))

    def round_failed(self, method: str, tag: str, site: str, reason: str, step: int, retried: bool) -> None:
        """A site failed an unlearning round; whether the round is sent again."""
        self.event("unlearn_round_failed", method=method, site=site, step=step, reason=reason, retried=retried)
        self.boards.text(site, f"{tag}/failure", f"step {step}: {reason}", step)

    def final(self, name: str, scores: SiteScores) -> None:
        """A model's final scores at every site."""
        self.final_scores[name] = scores
        self.run.progress.step(FINAL_EVALUATION, scores=scores, model=name)

    # The run folder's result files, results.json last.
    def write_results(self, cfg: ExperimentConfig, outcome: RunOutcome) -> None:
        run, finished = self.run, utc_now()
        extra = {"ledger_summary": ledger_summary(outcome.ledger), "events": run.events,
                 "budget_steps": cfg.unlearning.budget_steps(cfg.federation.training_steps),
                 "training_steps": cfg.federation.training_steps, "mode": outcome.mode}
        results = build_results(cfg, outcome.sites, outcome.models, extra)
        if cfg.report.figures:  # drawn from the run folder: the examples the evaluation phase kept
            results["figure_notes"] = render_figures(cfg, run.root, results, self.boards)
        atomic_write_json(run.root / "audit.json", build_audit(cfg, outcome.models, run.started, finished,
                                                               run.events, outcome.data, outcome.cache_keys))
        atomic_write_json(run.root / "ledger.json", outcome.ledger.to_json())
        write_report(run.root, results)
        write_hparams(run.tensorboard, hparam_entries(cfg, results))
        atomic_write_json(run.root / "results.json", results)
        run.set_status("completed", finished=finished)
        run.progress.run_finished()


class RunOutcome(NamedTuple):
    """What the result files are built from."""

    sites: Mapping[str, Any]  # site -> SiteInfo, as discovery found it
    models: Mapping[str, ModelRecord]  # every model's record, in the order results.json lists them
    ledger: Ledger  # every message exchanged
    mode: str  # "simulation" or "deployment"
    data: Mapping[str, Any]  # audit.json "data": each site's files, the server's retain pool
    cache_keys: Mapping[str, str]  # original / oracle -> the model cache's key


def ledger_summary(ledger: Ledger) -> dict[str, Any]:
    """Messages, bytes and failures per phase."""
    phases: dict[str, dict[str, int]] = {}
    for entry in ledger.entries:
        row = phases.setdefault(entry.phase, {"messages": 0, "bytes": 0, "failed": 0})
        row["messages"] += 1
        row["bytes"] += entry.bytes_down + entry.bytes_up
        row["failed"] += entry.status != "ok"
    return phases


__all__ = ["Recorder", "RunOutcome", "SiteScores", "board_values", "ledger_summary"]
