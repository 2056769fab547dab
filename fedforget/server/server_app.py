"""The ServerApp: one run, read top to bottom as its phases.

connect (discover the sites) -> train (original, oracle) -> evaluate the references -> unlearn (one
removal per method, each evaluated) -> retraining controls -> keep the example reconstructions ->
write the result files. Each phase returns what the next needs; all of them report to one
:class:`~fedforget.server.recorder.Recorder`, which alone writes TensorBoard, ``progress.jsonl``,
``status.json`` and the result files.

``results.json`` is written last and atomically, after ``report.md`` and ``audit.json``;
``status.json`` says ``completed`` only then. A failure anywhere marks the run ``failed`` with its
reason and re-raises, so Flower records the run as failed too (``fedforget run`` checks both).
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable
from functools import partial
from logging import INFO
from pathlib import Path
from typing import Any, NamedTuple

from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from fedforget.configs.compose import experiment_from_run_config, to_plain
from fedforget.configs.schema import ORACLE, ORIGINAL, ZERO_FILLED, ExperimentConfig
from fedforget.configs.workspace import outputs_dir
from fedforget.data.preparation import prepare_inside_run
from fedforget.learning.checkpoints import State
from fedforget.reporting.results import ModelRecord
from fedforget.server.examples import keep_examples
from fedforget.server.federation import Federation, connect
from fedforget.server.history_methods import (
    RETRAIN_BUDGET,
    full_schedule,
    retrain_controls,
    run_history,
    same_schedule,
)
from fedforget.server.recorder import Recorder, RunOutcome
from fedforget.server.records import trained_record, zero_filled_record
from fedforget.server.removal import run_method
from fedforget.server.retain_pool import server_retain_files, server_retain_source, server_retain_worker
from fedforget.server.run_folder import RunFolder
from fedforget.server.scoring import fill_record, final_scores
from fedforget.server.training import References, train_references
from fedforget.strategies.protocol import SiteError
from fedforget.unlearning import is_history_method

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_config = dict(context.run_config)
    run = RunFolder(_output_dir(run_config, context.run_id))
    try:
        cfg = experiment_from_run_config(run_config)
        prepare_inside_run(cfg, log=lambda line: log(INFO, line))
        run.events = run.previous_events()
        run.set_status("running")
        run.write_config(to_plain(cfg))
        run.progress.run_started(cfg)
        execute(grid, cfg, run)
    except BaseException as err:
        run.fail(err)
        raise


def execute(grid: Grid, cfg: ExperimentConfig, run: RunFolder) -> None:
    """All phases of one run, in order."""
    fed = connect(grid, cfg)
    with Recorder(run, list(fed.sites)) as recorder:
        references = train_references(fed, recorder)
        recorder.evaluation_started(_models_to_evaluate(cfg))
        models = evaluate_references(fed, recorder, references)
        retain = server_retain(fed, references.original.state)
        unlearn(fed, recorder, references, retain, models)
        retrain_to_budgets(fed, recorder, references, retain, models)
        recorder.evaluation_finished()
        if cfg.report.figures:
            keep_examples(cfg, run.root, list(fed.sites), models.weights(), fed.mode)
        data = {"sites": {name: info.data for name, info in fed.sites.items()}, "server_retain": retain.files}
        recorder.write_results(cfg, RunOutcome(fed.sites, models.records, fed.link.ledger, fed.mode, data,
                                               references.cache_keys))


class Models:
    """Every model of the run in results.json's order: its record and its weights (None: zero-filled)."""

    def __init__(self) -> None:
        self.records: dict[str, ModelRecord] = {}
        self.states: dict[str, State | None] = {}

    def add(self, name: str, record: ModelRecord, state: State | None) -> None:
        self.records[name], self.states[name] = record, state

    def weights(self) -> dict[str, State]:
        """The models that have weights (zero-filled has none)."""
        return {name: state for name, state in self.states.items() if state is not None}


def _output_dir(run_config: dict[str, Any], run_id: int) -> Path:
    """The run folder: the run config's ``output-dir``, else ``<workspace>/outputs/<experiment>-<time>-run<id>``."""
    raw = str(run_config.get("output-dir", "")).strip()
    if raw:
        return Path(raw).expanduser()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = outputs_dir() / f"{run_config.get('experiment', 'run')}-{stamp}-run{run_id}"
    log(INFO, "fedforget: run folder %s (set it with --run-config 'output-dir=\"/absolute/path\"')", folder)
    return folder


def evaluate_references(fed: Federation, recorder: Recorder, references: References) -> Models:
    """Zero-filled, the original and the oracle, scored at every site (the unlearning curves start here)."""
    models = Models()
    for name, record, state in ((ZERO_FILLED, zero_filled_record(), None),
                                (ORIGINAL, trained_record(references.original), references.original.state),
                                (ORACLE, trained_record(references.oracle), references.oracle.state)):
        _evaluate(fed, recorder, models, references, name, record, state)
    return models


def _evaluate(fed: Federation, recorder: Recorder, models: Models, references: References, name: str,
              record: ModelRecord, state: State | None) -> None:
    """A model's final scores at every site (the membership audit calibrated against the oracle), kept."""
    fill_record(record, final_scores(fed, recorder, name, state, references.oracle.state), fed.forget_site)
    models.add(name, record, state)


class ServerRetain(NamedTuple):
    """The server's retain pool when ``retain_access=server``: its batches, a worker factory, its files."""

    source: Any = None
    worker: Any = None
    files: dict[str, Any] | None = None


def server_retain(fed: Federation, original_state: State) -> ServerRetain:
    if fed.cfg.unlearning.retain_access != "server":
        return ServerRetain()
    source = server_retain_source(fed.cfg)
    worker = server_retain_worker(fed.cfg, source, original_state, fed.new_model())
    return ServerRetain(source, worker, server_retain_files(fed.cfg))


def unlearn(fed: Federation, recorder: Recorder, references: References, retain: ServerRetain,
            models: Models) -> None:
    """One removal per configured method, from the original model, each evaluated at every site."""
    original = references.original
    for name in fed.cfg.unlearning.methods:
        if is_history_method(name):
            removal = partial(run_history, fed, recorder, name, original, retain.source)
        else:
            removal = partial(run_method, fed, recorder, name, original, retain.worker)
        _remove(fed, recorder, references, models, name, removal)


def _remove(fed: Federation, recorder: Recorder, references: References, models: Models, name: str,
            removal: Callable[[], tuple[ModelRecord, State]]) -> None:
    """One method's removal and final scores; a site fault stops the method (recorded), not the run."""
    try:
        record, state = removal()
    except SiteError as err:
        recorder.phase_stopped(name, err.site, err.reason)
        return
    _evaluate(fed, recorder, models, references, name, record, state)


def retrain_to_budgets(fed: Federation, recorder: Recorder, references: References, retain: ServerRetain,
                       models: Models) -> None:
    """``retrain_budget@...``: retraining at each history-based method's site compute, and on the curve."""
    cfg, original = fed.cfg, references.original
    trained = {name: record.details for name, record in models.records.items() if name.startswith(RETRAIN_BUDGET)}
    # Retraining on the whole schedule is the oracle, bit for bit (tested against a Flower-free run).
    trained[ORACLE] = {"schedule": full_schedule(cfg)}
    for name, fraction in list(retrain_controls(cfg, models.records)):
        twin = same_schedule(cfg, fraction, trained)
        if twin is not None:  # the same schedule gives the same model: record it again, train nothing
            record = copy.deepcopy(models.records[twin])
            record.details["same_as"] = twin
            _evaluate(fed, recorder, models, references, name, record, models.states[twin])
            continue
        _remove(fed, recorder, references, models, name,
                partial(run_history, fed, recorder, name, original, retain.source, fraction))
        if name in models.records:
            trained[name] = models.records[name].details


def _models_to_evaluate(cfg: ExperimentConfig) -> int:
    """Zero-filled, original, oracle, every method, and the retraining controls ``retrain_budget`` adds."""
    u = cfg.unlearning
    controls = 0
    if RETRAIN_BUDGET in u.methods:
        matched = [m for m in u.methods if is_history_method(m) and not m.startswith(RETRAIN_BUDGET)]
        controls = (len(matched) if u.retrain_budget.match else 0) + len(u.retrain_budget.curve)
    return 3 + len(u.methods) + controls
