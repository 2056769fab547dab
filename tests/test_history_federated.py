"""History-based unlearning through a real Flower simulation, against the same methods run Flower-free.

One run: two retain sites and the knee, four rounds with the history kept, every history-based
method, FedEraser calibrating every round (interval 1), and brain-1 failing FedEraser's first
calibration round once (it is retried).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from leakage import assert_only_parameters_and_numbers_leave
from run_helpers import CompletedRun, fedforget_run

from fedforget.configs import load_experiment
from fedforget.learning.checkpoints import load_checkpoint
from fedforget.learning.history import RoundHistory, history_folder
from fedforget.learning.training import initial_state, model_from_config
from fedforget.unlearning import HISTORY_REGISTRY, unlearn_from_history
from fedforget.unlearning.history_base import HistoryRun, local_round_worker

pytestmark = pytest.mark.slow

OVERRIDES = ["sites=brain2_knee1", "federation.rounds=4", "unlearning.federaser.interval=1",
             "unlearning.fedrecover.correction_period=3", "unlearning.fedrecover.abnormality_tolerance=0",
             "unlearning.puf.recovery_rounds=1",
             "unlearning.fukd.repair_rounds=1", "unlearning.eval_every=2", "report.figures=false"]
FAULT = ["federation.fault.site=brain-1", "federation.fault.phase=unlearn/federaser", "federation.fault.round=1",
         "federation.fault.mode=error"]
# Methods that never contact the forget site (PUF sends it exactly one local round).
SILENT_TOWARD_FORGET = ["federaser", "sifu", "fedrecover", "fukd", "rollback", "retrain_budget"]
COST_KEYS = {"site_steps", "server_seconds", "messages", "bytes", "history_bytes"}


@pytest.fixture(scope="module")
def history_run(tmp_path_factory: pytest.TempPathFactory, data_root: Path, cache_root: Path) -> CompletedRun:
    folder = tmp_path_factory.mktemp("history") / "run"
    run = fedforget_run(["experiment=smoke", f"data.root={data_root}", f"cache_dir={cache_root}", *OVERRIDES,
                         "unlearning.methods=[history]", "unlearning.retrain_budget.curve=[1.0]", *FAULT], folder)
    assert run.returncode == 0, run.output[-4000:]
    return run


def _ledger(run: CompletedRun) -> list[dict]:
    return json.loads((run.folder / "ledger.json").read_text())


def _flower_free(run: CompletedRun, data_root: Path, name: str, fraction: float | None = None) -> dict[str, torch.Tensor]:
    """The same removal in-process, from the run's original model and the run's round history."""
    torch.set_num_threads(1)  # as each simulated site
    cfg = load_experiment("smoke", [f"data.root={data_root}", *OVERRIDES, f"unlearning.methods=[{name}]"])
    checkpoint = run.folder / "checkpoints" / "original.pt"
    original, meta = load_checkpoint(checkpoint)
    history = RoundHistory.open(history_folder(checkpoint), meta["fingerprint"])
    flower_free = HistoryRun(history=history, original=original, initial=initial_state(cfg.model, cfg.seed),
                             fed=cfg.federation, unlearning=cfg.unlearning, forget_site="knee-0",
                             retain_sites=cfg.retain_sites, worker=local_round_worker(cfg),
                             new_model=lambda: model_from_config(cfg.model), seed=cfg.seed, joins=cfg.joins)
    state, _ = unlearn_from_history(name, flower_free, fraction)
    return state


@pytest.mark.parametrize("name", list(HISTORY_REGISTRY))
def test_federated_history_method_equals_the_flower_free_one(history_run: CompletedRun, data_root: Path,
                                                            name: str) -> None:
    expected = _flower_free(history_run, data_root, name)
    federated, _ = load_checkpoint(history_run.folder / "checkpoints" / f"{name}.pt")
    original, _ = load_checkpoint(history_run.folder / "checkpoints" / "original.pt")
    assert any(not torch.equal(federated[k], original[k]) for k in original), f"{name} did not change the model"
    different = [k for k in expected if not torch.equal(expected[k], federated[k])]
    assert not different, f"{name}: {len(different)} tensors differ, e.g. {different[:3]}"


def test_rollback_and_full_budget_retraining_equal_the_oracle_bit_for_bit(history_run: CompletedRun) -> None:
    models = history_run.results["models"]
    assert models["rollback"]["sha256"] == models["oracle"]["sha256"]
    assert models["retrain_budget@1"]["sha256"] == models["oracle"]["sha256"]
    assert models["retrain_budget@1"]["cost"]["site_steps"] == models["oracle"]["cost"]["site_steps"] == 16


def test_retraining_with_the_whole_budget_is_the_oracle_so_the_run_reuses_it(history_run: CompletedRun,
                                                                           data_root: Path) -> None:
    retrained = _flower_free(history_run, data_root, "retrain_budget", fraction=1.0)
    oracle, _ = load_checkpoint(history_run.folder / "checkpoints" / "oracle.pt")
    assert all(torch.equal(retrained[k], oracle[k]) for k in oracle), "full-budget retraining left the oracle"
    models = history_run.results["models"]
    assert models["retrain_budget@rollback"]["same_as"] == models["retrain_budget@1"]["same_as"] == "oracle"


def test_the_forget_site_hears_only_pufs_one_round(history_run: CompletedRun) -> None:
    ledger = _ledger(history_run)
    for name in SILENT_TOWARD_FORGET:
        sites = {e["site"] for e in ledger if e["phase"] == f"unlearn/{name}"}
        assert sites and "knee-0" not in sites, name
    puf = [e for e in ledger if e["phase"] == "unlearn/puf" and e["site"] == "knee-0"]
    assert [(e["message_type"], e["status"]) for e in puf] == [("train", "ok")]


def test_no_record_leaving_a_site_carries_data(history_run: CompletedRun) -> None:
    assert_only_parameters_and_numbers_leave(history_run, [*HISTORY_REGISTRY, "retrain_budget@federaser"])


def test_a_failed_calibration_round_is_recorded_and_retried(history_run: CompletedRun) -> None:
    failed = [e for e in history_run.results["events"] if e["kind"] == "unlearn_round_failed"]
    assert [(e["method"], e["site"], e["step"], e["retried"]) for e in failed] == [("federaser", "brain-1", 1, True)]
    attempts = {(e["step"], e["site"], e["status"]) for e in _ledger(history_run) if e["phase"] == "unlearn/federaser"}
    assert {(1, "brain-0", "ok"), (1, "brain-1", "failed"), (2, "brain-1", "ok")} <= attempts
    assert not {a for a in attempts if a[0] == 2 and a[1] == "brain-0"}, "only the failed site is asked again"
    assert "federaser" in history_run.results["models"]


def test_every_model_reports_its_cost_and_the_history_its_size(history_run: CompletedRun) -> None:
    results = history_run.results
    for name, record in results["models"].items():
        assert set(record["cost"]) == COST_KEYS, name
    history = results["models"]["original"]["history"]
    files = sorted(history_folder(history_run.folder / "checkpoints" / "original.pt").glob("round-*.pt"))
    assert (history["rounds_kept"], history["every"], history["dtype"], len(files)) == (4, 1, "fp32", 4)
    assert history["bytes"] > sum(f.stat().st_size for f in files) > 0
    audit = json.loads((history_run.folder / "audit.json").read_text())
    assert audit["history"] == history
    for name in ("federaser", "sifu", "fedrecover", "fukd", "rollback"):
        assert results["models"][name]["cost"]["history_bytes"] == history["bytes"], name
    fedrecover = results["models"]["fedrecover"]
    assert fedrecover["cost"]["site_steps"] == 3 * 2 * 2, "rounds 1-2 warm up, round 3 is estimated, 4 corrects"
    assert results["models"]["sifu"]["psi"][0] == 0.0 and "rollback_round" in results["models"]["sifu"]


def test_each_history_method_is_compared_with_retraining_at_its_own_compute(history_run: CompletedRun) -> None:
    results = history_run.results
    for name in ("federaser", "fedrecover", "fukd", "puf"):
        control = results["models"][f"retrain_budget@{name}"]
        assert control["cost"]["site_steps"] == results["models"][name]["cost"]["site_steps"], name
        versus = results["summary"][name]["vs_retrain_budget"]
        assert versus["model"] == f"retrain_budget@{name}" and len(versus["BTA"]["psnr_ci"]) == 2
    assert results["models"]["retrain_budget@1"]["sha256"] == results["models"]["retrain_budget@rollback"]["sha256"]


def test_the_history_is_kept_in_the_model_cache(history_run: CompletedRun, cache_root: Path) -> None:
    key = json.loads((history_run.folder / "audit.json").read_text())["model_cache_keys"]["original"]
    cached = RoundHistory.open(history_folder(cache_root / key / "original.pt"), key)
    assert cached.rounds == [1, 2, 3, 4]


def test_a_history_method_without_history_exits_2_naming_the_option(tmp_path: Path, data_root: Path) -> None:
    run = fedforget_run(["experiment=smoke", f"data.root={data_root}", "federation.history.every=0",
                         "unlearning.methods=[ft,fedrecover]"], tmp_path / "run")
    assert run.returncode == 2, run.output[-2000:]
    assert "set federation.history.every=1" in run.output and "fedrecover" in run.output
    assert "Starting local SuperLink" not in run.output and not (tmp_path / "run" / "results.json").exists()
