"""The ServerApp: compose the experiment, learn the sites, run every phase, write the run folder.

``results.json`` is written last and atomically, after ``report.md`` and
``audit.json``; ``status.json`` says ``completed`` only then. A failure anywhere
marks the run ``failed`` with its reason and re-raises, so Flower records the run
as failed too (``fedforget run`` checks both).
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable
from logging import INFO
from pathlib import Path
from typing import Any, NamedTuple

from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from fedforget.configs.compose import load_from_run_config, to_plain
from fedforget.configs.schema import ORACLE, ORIGINAL, ZERO_FILLED, ExperimentConfig
from fedforget.configs.workspace import outputs_dir
from fedforget.data.preparation import prepare_inside_run
from fedforget.recon.atomic import atomic_write_json
from fedforget.reporting.pictures import render_figures
from fedforget.reporting.progress import FINAL_EVALUATION
from fedforget.reporting.report import write_report
from fedforget.reporting.results import ModelRecord, build_audit, build_results
from fedforget.reporting.tensorboard import Boards, hparam_entries, write_hparams
from fedforget.server.history_methods import (
    RETRAIN_BUDGET,
    full_schedule,
    retrain_controls,
    run_history,
    same_schedule,
)
from fedforget.server.phases import (
    Session,
    fill_record,
    final_scores,
    obtain_trained,
    run_method,
    trained_record,
    zero_filled_record,
)
from fedforget.server.retain_pool import server_retain_files, server_retain_source, server_retain_worker
from fedforget.server.run_folder import RunFolder, utc_now
from fedforget.strategies.directory import discover_sites
from fedforget.strategies.fedavg import TrainedModel
from fedforget.strategies.link import Ledger, SiteLink
from fedforget.strategies.protocol import SiteError
from fedforget.unlearning import is_history_method

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_config = dict(context.run_config)
    run = RunFolder(_output_dir(run_config, context.run_id))
    try:
        cfg = load_from_run_config(run_config)
        prepare_inside_run(cfg, log=lambda line: log(INFO, line))
        run.events = run.previous_events()
        run.set_status("running")
        run.write_config(to_plain(cfg))
        run.progress.run_started(cfg)
        execute(grid, cfg, run, Path(cfg.cache_dir) if cfg.cache_dir else None)
    except BaseException as err:
        run.fail(err)
        raise


def _output_dir(run_config: dict[str, Any], run_id: int) -> Path:
    """The run folder: the run config's ``output-dir``, else ``<workspace>/outputs/<experiment>-<time>-run<id>``."""
    raw = str(run_config.get("output-dir", "")).strip()
    if raw:
        return Path(raw).expanduser()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = outputs_dir() / f"{run_config.get('experiment', 'run')}-{stamp}-run{run_id}"
    log(INFO, "fedforget: run folder %s (set it with --run-config 'output-dir=\"/absolute/path\"')", folder)
    return folder


def execute(grid: Grid, cfg: ExperimentConfig, run: RunFolder, cache_dir: Path | None) -> None:
    """All phases of one run, in order."""
    timeout = cfg.federation.timeout_s
    ledger = Ledger()
    sites = discover_sites(grid, cfg, timeout, ledger)
    boards = Boards(run.tensorboard, list(sites))
    session = Session(cfg, run, SiteLink(grid, {n: i.node_id for n, i in sites.items()}, ledger, timeout),
                      sites, boards, cache_dir)
    try:
        original, models, states = _trained_models(session)
        session.reference = states[ORACLE]
        # The references first: every unlearning curve starts from the original's scores at step 0.
        total = len(models) + len(cfg.unlearning.methods) + _planned_controls(cfg)
        run.progress.phase_started(FINAL_EVALUATION, total=total, unit="model")
        for name, record in models.items():
            _final(session, name, record, states[name])
        retain = _server_retain(session, original.state)
        for name in cfg.unlearning.methods:
            if is_history_method(name):
                _remove(session, models, states, name, lambda n=name: run_history(session, n, original, retain.source))
            else:
                _remove(session, models, states, name, lambda n=name: run_method(session, n, original, retain.worker))
        _retrain_controls(session, original, models, states, retain.source)
        run.progress.phase_finished(FINAL_EVALUATION)
        _write_outputs(session, models, states, retain.files)
    finally:
        boards.close()


def _remove(session: Session, models: dict[str, ModelRecord], states: dict[str, Any], name: str,
            removal: Callable[[], tuple[ModelRecord, Any]]) -> None:
    """One method's removal and final scores; a site fault stops the method (recorded), not the run."""
    try:
        record, state = removal()
    except SiteError as err:
        session.run.event("method_stopped", method=name, site=err.site, reason=err.reason)
        session.run.progress.stop_phase(f"site {err.site}: {err.reason}")
        return
    models[name] = _final(session, name, record, state)
    states[name] = state


def _retrain_controls(session: Session, original: TrainedModel, models: dict[str, ModelRecord],
                      states: dict[str, Any], source: Any) -> None:
    """``retrain_budget@...``: retraining at each history-based method's site compute, and on the curve."""
    trained = {name: record.details for name, record in models.items() if name.startswith(RETRAIN_BUDGET)}
    # Retraining on the whole schedule is the oracle, bit for bit (tested against a Flower-free run).
    trained[ORACLE] = {"schedule": full_schedule(session)}
    for name, fraction in list(retrain_controls(session, models)):
        twin = same_schedule(session, fraction, trained)
        if twin is not None:  # the same schedule gives the same model: record it again, train nothing
            record = copy.deepcopy(models[twin])
            record.details["same_as"] = twin
            models[name], states[name] = _final(session, name, record, states[twin]), states[twin]
            continue
        _remove(session, models, states, name, lambda n=name, f=fraction: run_history(session, n, original, source, f))
        if name in models:
            trained[name] = models[name].details


def _planned_controls(cfg: ExperimentConfig) -> int:
    u = cfg.unlearning
    if RETRAIN_BUDGET not in u.methods:
        return 0
    matched = [m for m in u.methods if is_history_method(m) and not m.startswith(RETRAIN_BUDGET)]
    return (len(matched) if u.retrain_budget.match else 0) + len(u.retrain_budget.curve)


def _final(session: Session, name: str, record: ModelRecord, state: Any) -> ModelRecord:
    """A model's final scores at every site, into its record and the progress log."""
    fill_record(record, final_scores(session, name, state), session.forget_site)
    session.run.progress.step(FINAL_EVALUATION, scores=session.scores[name], model=name)
    return record


def _trained_models(session: Session) -> tuple[TrainedModel, dict[str, ModelRecord], dict[str, Any]]:
    """The original and the oracle (trained, cached or loaded), as records and weights."""
    models, states = {ZERO_FILLED: zero_filled_record()}, {ZERO_FILLED: None}
    original = obtain_trained(session, ORIGINAL)
    oracle = obtain_trained(session, ORACLE)
    for name, trained in ((ORIGINAL, original), (ORACLE, oracle)):
        models[name], states[name] = trained_record(session, trained), trained.state
    return original, models, states


class ServerRetain(NamedTuple):
    """The server's retain pool when ``retain_access=server``: its batches, a worker factory, its files."""

    source: Any = None
    worker: Any = None
    files: dict[str, Any] | None = None


def _server_retain(session: Session, original_state: dict) -> ServerRetain:
    if session.cfg.unlearning.retain_access != "server":
        return ServerRetain()
    source = server_retain_source(session.cfg)
    worker = server_retain_worker(session.cfg, source, original_state, session.new_model())
    return ServerRetain(source, worker, server_retain_files(session.cfg))


def _write_outputs(session: Session, models: dict[str, ModelRecord], states: dict[str, Any],
                   retain_files: dict[str, Any] | None) -> None:
    cfg, run = session.cfg, session.run
    finished = utc_now()
    simulated = all(info.simulated for info in session.sites.values())
    extra = {"ledger_summary": _ledger_summary(session.link.ledger), "events": run.events,
             "budget_steps": cfg.unlearning.budget_steps(cfg.federation.training_steps),
             "training_steps": cfg.federation.training_steps, "mode": "simulation" if simulated else "deployment"}
    results = build_results(cfg, session.sites, models, extra)
    if cfg.report.figures:
        models_only = {name: state for name, state in states.items() if state is not None}  # zero-filled has none
        results["figure_notes"] = render_figures(cfg, run.figures, results, models_only, session.boards)
    data = {"sites": {name: info.data for name, info in session.sites.items()}, "server_retain": retain_files}
    atomic_write_json(run.root / "audit.json", build_audit(cfg, models, run.started, finished, run.events, data,
                                                           session.cache_keys))
    atomic_write_json(run.root / "ledger.json", session.link.ledger.to_json())
    write_report(run.root, results)
    write_hparams(run.tensorboard, hparam_entries(cfg, results))
    atomic_write_json(run.root / "results.json", results)
    run.set_status("completed", finished=finished)
    run.progress.run_finished()


def _ledger_summary(ledger: Ledger) -> dict[str, Any]:
    phases: dict[str, dict[str, int]] = {}
    for entry in ledger.entries:
        row = phases.setdefault(entry.phase, {"messages": 0, "bytes": 0, "failed": 0})
        row["messages"] += 1
        row["bytes"] += entry.bytes_down + entry.bytes_up
        row["failed"] += entry.status != "ok"
    return phases
