"""Faults in a real Flower simulation: failing sites, a killed server, a removal request on a trained federation.

A real process crash (``federation.fault.mode=exit``) is drilled in the deployment tests:
in Flower 1.42's simulation a dead Ray actor is not restarted, so a simulated site that
crashes cannot come back; here sites fail by raising, and the node survives.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from run_helpers import REPO, CompletedRun, fedforget_run
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fedforget.launch.flower import processes_of
from fedforget.launch.run_lock import LOCK_FILE
from fedforget.launch.runner import _is_resumable
from fedforget.learning.checkpoints import load_checkpoint
from fedforget.learning.history import RoundHistory, history_folder

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
    after_round_1, saved = load_checkpoint(first.folder / "checkpoints" / "progress" / "original.pt")
    assert saved["round"] == 1
    history_dir = history_folder(first.folder / "checkpoints" / "original.pt")
    assert RoundHistory.open(history_dir).rounds == [1]

    second = fedforget_run(args, tmp_path / "run")  # the same command again
    assert second.returncode == 0, second.output[-3000:]
    history = RoundHistory.open(history_dir)
    assert history.rounds == [1, 2, 3], "the resumed run continues the history"
    assert all(torch.equal(history.entry(2).start[k], after_round_1[k]) for k in after_round_1)
    assert history.examples(2).keys() == {"brain-0"} and history.examples(3).keys() == {"brain-0", "knee-0"}
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
    """from_checkpoint skips all training; nl_ft loses its forget site and stops; ft's result is kept,
    and the command exits 4: a requested method is missing from results.json."""
    original = smoke_run.folder / "checkpoints" / "original.pt"
    run = fedforget_run(["experiment=smoke", f"data.root={data_root}", f"cache_dir={tmp_path / 'empty-cache'}",
                         f"unlearning.from_checkpoint={original}", "unlearning.methods=[nl_ft,ft]",
                         "federation.fault.site=knee-0", "federation.fault.phase=unlearn/nl_ft",
                         "federation.fault.round=1", "federation.fault.rounds=100", "federation.fault.mode=error"],
                        tmp_path / "run")
    assert run.returncode == 4, run.output[-3000:]
    assert "run INCOMPLETE" in run.output and "method nl_ft" in run.output and "injected failure" in run.output
    assert run.status["status"] == "completed", "the run itself finished; it lacks what was asked"
    phases = {e["phase"] for e in _ledger(run)}
    assert not phases & {"federated", "oracle"}, "nothing was retrained"
    loaded = {e["model"]: e["source"] for e in run.results["events"] if e["kind"] == "loaded"}
    assert loaded == {"original": str(original), "oracle": str(original.with_name("oracle.pt"))}
    assert run.results["models"]["original"]["sha256"] == smoke_run.results["models"]["original"]["sha256"]
    assert set(run.results["models"]) == {"zero_filled", "original", "oracle", "ft"}
    stopped = [e for e in run.results["events"] if e["kind"] == "method_stopped"]
    assert [(e["method"], e["site"]) for e in stopped] == [("nl_ft", "knee-0")]
    assert "injected failure" in stopped[0]["reason"]
    assert "method_stopped" in (run.folder / "report.md").read_text()


def test_missing_checkpoint_fails_naming_it_before_anything_starts(tmp_path: Path, data_root: Path) -> None:
    missing = tmp_path / "nowhere" / "original.pt"
    run = fedforget_run(["experiment=smoke", f"data.root={data_root}", f"unlearning.from_checkpoint={missing}"],
                        tmp_path / "run")
    assert run.returncode == 3 and str(missing) in run.output and "does not exist" in run.output
    assert "Starting local SuperLink" not in run.output and "Successfully started run" not in run.output


def test_a_programming_error_at_a_site_fails_the_run_with_its_traceback(
        tmp_path: Path, data_root: Path, smoke_run: CompletedRun) -> None:
    """Only site faults are recorded and survived; an unexpected exception in the code a site runs stops the run."""
    original = smoke_run.folder / "checkpoints" / "original.pt"
    run = fedforget_run(["experiment=smoke", f"data.root={data_root}", f"cache_dir={tmp_path / 'cache'}",
                         f"unlearning.from_checkpoint={original}", "unlearning.methods=[ft]",
                         "federation.fault.site=brain-0", "federation.fault.phase=unlearn/ft",
                         "federation.fault.round=1", "federation.fault.mode=bug"], tmp_path / "run")
    assert run.returncode == 1 and "run FAILED" in run.output and "ZeroDivisionError" in run.output
    status = run.status
    assert status["status"] == "failed" and status["error_kind"] == "code" and status["site"] == "brain-0"
    assert "ZeroDivisionError: injected programming error" in status["site_traceback"]
    assert "_injected_fault" in status["site_traceback"], "the site's own traceback, not the server's"
    assert not [e for e in status["events"] if e["kind"] == "method_stopped"], "a bug is not a stopped method"
    assert not (run.folder / "results.json").exists()


def _start(args: list[str], folder: Path) -> subprocess.Popen[str]:
    """``fedforget run`` in the background, as a shell or a scheduler would start it."""
    command = [sys.executable, "-m", "fedforget.cli", "run", *args, "--output-dir", str(folder)]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_until(condition, process: subprocess.Popen[str], what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended before {what}:\n{process.communicate()[0][-3000:]}"
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.2)


def _status(folder: Path) -> dict:
    try:
        return json.loads((folder / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _stop_and_check(process: subprocess.Popen[str], sig: int, folder: Path) -> str:
    """Send ``sig`` to the run's PID alone; it must exit 128 + sig, leave no Flower process, say interrupted."""
    flwr_home = Path(json.loads((folder / LOCK_FILE).read_text())["flwr_home"])
    assert processes_of(flwr_home), "the run's SuperLink, simulation and sites are running"
    process.send_signal(sig)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 128 + sig, output[-3000:]
    assert processes_of(flwr_home) == [], "every process the run started is gone"
    status = _status(folder)
    assert status["status"] == "interrupted" and signal.Signals(sig).name in status["reason"]
    return output


def test_sigterm_stops_everything_the_run_started_and_leaves_it_resumable(tmp_path: Path, data_root: Path) -> None:
    """SIGTERM mid-training (a scheduler's time limit): every process stops, exit 143, the folder says interrupted
    and the same command would resume it; while the first run lives, a second writer is refused naming its PID."""
    args = ["experiment=smoke", f"data.root={data_root}", f"cache_dir={tmp_path / 'cache'}", "federation.rounds=60",
            "unlearning.methods=[ft]"]
    folder = tmp_path / "run"
    first = _start(args, folder)
    try:
        _wait_until(lambda: (folder / "checkpoints" / "progress" / "original.pt").is_file(), first, "round 1")
        assert json.loads((folder / LOCK_FILE).read_text())["pid"] == first.pid
        second = fedforget_run(args, folder, timeout=120)
        assert second.returncode == 1 and f"being written by PID {first.pid}" in second.output
        assert first.poll() is None, "the refused run left the first alone"
        _stop_and_check(first, signal.SIGTERM, folder)
    finally:
        if first.poll() is None:
            first.kill()
    assert _is_resumable(folder, yaml.safe_load((folder / "config.yaml").read_text()))
