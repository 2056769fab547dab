"""Faults in a real Flower simulation: failing sites, a killed server, a removal request on a trained federation.

A real process crash (``federation.fault.mode=exit``) is drilled in the deployment tests:
in Flower 1.42's simulation a dead Ray actor is not restarted, so a simulated site that
crashes cannot come back; here sites fail by raising, and the node survives.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from run_helpers import CompletedRun, fedforget_run
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fedforget.learning.checkpoints import load_checkpoint

pytestmark = pytest.mark.slow


def _ledger(run: CompletedRun) -> list[dict]:
    return json.loads((run.folder / "ledger.json").read_text())


def _steps(board: Path, tag: str) -> list[int]:
    events = EventAccumulator(str(board))
    events.Reload()
    return [e.step for e in events.Scalars(tag)]


def test_killed_server_resumes_and_a_failing_site_rejoins(tmp_path: Path, data_root: Path) -> None:
    """The server dies after round 1; the same command resumes; knee-0 then fails round 2 and rejoins in 3."""
    args = ["experiment=smoke", f"data.root={data_root}", f"cache_dir={tmp_path / 'cache'}", "federation.rounds=3",
            "federation.fault.server_exit_after_round=1", "federation.fault.site=knee-0", "federation.fault.round=2",
            "federation.fault.mode=error", "unlearning.methods=[ft]"]
    first = fedforget_run(args, tmp_path / "run")
    assert first.returncode == 1 and "run FAILED" in first.output
    assert first.status["status"] != "completed" and not (first.folder / "results.json").exists()
    _, saved = load_checkpoint(first.folder / "checkpoints" / "progress" / "original.pt")
    assert saved["round"] == 1

    second = fedforget_run(args, tmp_path / "run")  # the same command again
    assert second.returncode == 0, second.output[-3000:]
    kinds = [(e["kind"], e.get("after_round")) for e in second.results["events"]]
    assert ("server_killed", 1) in kinds and ("resumed", 1) in kinds
    _, progress = load_checkpoint(second.folder / "checkpoints" / "progress" / "original.pt")
    assert [h["round"] for h in progress["history"]] == [1, 2, 3]
    assert _steps(second.folder / "tensorboard" / "brain-0", "federated/psnr") == [0, 1, 2, 3]
    training = {(e["step"], e["site"]): e["status"] for e in _ledger(second) if e["phase"] == "federated"}
    assert sorted({step for step, _ in training}) == [2, 3], "round 1 was not trained again"
    assert training[(2, "knee-0")] == "failed" and training[(2, "brain-0")] == "ok"
    assert training[(3, "knee-0")] == "ok", "the failed site rejoins the next round"
    failures = [e for e in second.results["events"] if e["kind"] == "site_failed"]
    assert [(e["site"], e["round"]) for e in failures] == [("knee-0", 2)]
    assert "injected failure" in failures[0]["reason"]
    assert _steps(second.folder / "tensorboard" / "knee-0", "federated/failed") == [2]


def test_removal_on_a_trained_federation_with_the_forget_site_failing_one_method(
        tmp_path: Path, data_root: Path, smoke_run: CompletedRun) -> None:
    """from_checkpoint skips all training; nl_ft loses its forget site and stops; ft's result is kept."""
    original = smoke_run.folder / "checkpoints" / "original.pt"
    run = fedforget_run(["experiment=smoke", f"data.root={data_root}", f"cache_dir={tmp_path / 'empty-cache'}",
                         f"unlearning.from_checkpoint={original}", "unlearning.methods=[nl_ft,ft]",
                         "federation.fault.site=knee-0", "federation.fault.phase=unlearn/nl_ft",
                         "federation.fault.round=1", "federation.fault.rounds=100", "federation.fault.mode=error"],
                        tmp_path / "run")
    assert run.returncode == 0, run.output[-3000:]
    phases = {e["phase"] for e in _ledger(run)}
    assert not phases & {"federated", "oracle"}, "nothing was retrained"
    loaded = {e["model"]: e["source"] for e in run.results["events"] if e["kind"] == "loaded"}
    assert loaded == {"original": str(original), "oracle": str(original.with_name("oracle.pt"))}
    assert run.results["models"]["original"]["sha256"] == smoke_run.results["models"]["original"]["sha256"]
    assert set(run.results["models"]) == {"original", "oracle", "ft"}
    stopped = [e for e in run.results["events"] if e["kind"] == "method_stopped"]
    assert [(e["method"], e["site"]) for e in stopped] == [("nl_ft", "knee-0")]
    assert "injected failure" in stopped[0]["reason"]
    assert "method_stopped" in (run.folder / "report.md").read_text()


def test_missing_checkpoint_fails_naming_it_before_anything_starts(tmp_path: Path, data_root: Path) -> None:
    missing = tmp_path / "nowhere" / "original.pt"
    run = fedforget_run(["experiment=smoke", f"data.root={data_root}", f"unlearning.from_checkpoint={missing}"],
                        tmp_path / "run")
    assert run.returncode == 1 and str(missing) in run.output and "does not exist" in run.output
    assert "Starting local SuperLink" not in run.output and "Successfully started run" not in run.output
