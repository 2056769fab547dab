"""A run's real outcome: ``flwr run``'s exit code, Flower's record and the run folder, combined once.

``flwr run`` exits 0 even when the run failed, so a run counts as completed only when
Flower says ``finished:completed`` *and* the run folder's ``status.json`` says ``completed``
*and* ``results.json`` exists *and* holds every requested method (a method stopped by a
site fault is recorded, but the run did not do what was asked). ``fedforget run``
(simulation) and ``deploy/submit.sh`` (deployment) both decide with :func:`read_outcome`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

COMPLETED = "finished:completed"


@dataclass
class RunOutcome:
    """What became of a submitted run, according to Flower *and* to the run folder."""

    run_id: str | None
    exit_code: int
    flower_status: str
    folder_status: str | None
    reason: str
    output_dir: Path
    error_kind: str = ""
    missing_methods: dict[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """Flower and the run folder both say completed (requested methods may still be missing)."""
        return (self.flower_status == COMPLETED and self.folder_status == "completed"
                and (self.output_dir / "results.json").is_file())

    @property
    def completed(self) -> bool:
        return self.finished and not self.missing_methods

    def describe(self) -> str:
        if self.completed:
            return f"run {self.run_id} completed: {self.output_dir}"
        if self.finished:
            return f"run {self.run_id} finished WITHOUT {describe_missing(self.missing_methods)}: {self.output_dir}"
        return (f"run {self.run_id or '(not started)'} FAILED (Flower: {self.flower_status}, run folder: "
                f"{self.folder_status or 'no status.json'}): {self.reason}")


def missing_methods(output_dir: Path) -> dict[str, str]:
    """Requested methods that ``results.json`` lacks, with the reason the run recorded for each."""
    try:
        config = yaml.safe_load((output_dir / "config.yaml").read_text())
        results = json.loads((output_dir / "results.json").read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    stopped = {e.get("method"): e.get("reason", "") for e in results.get("events", [])
               if e.get("kind") == "method_stopped"}
    return {name: stopped.get(name, "no result and no recorded reason")
            for name in config["unlearning"]["methods"] if name not in results.get("models", {})}


def describe_missing(missing: dict[str, str]) -> str:
    return "; ".join(f"method {name} ({reason})" for name, reason in missing.items())


def read_outcome(output_dir: Path, exit_code: int, run_id: str | None, flower: dict[str, str]) -> RunOutcome:
    """Combine ``flwr run``'s exit code, Flower's record and ``output_dir/status.json`` into one outcome."""
    status_path = output_dir / "status.json"
    try:
        status = json.loads(status_path.read_text()) if status_path.is_file() else {}
    except ValueError:
        status = {"status": "unreadable", "reason": f"{status_path} is not JSON"}
    flower_status = flower.get("status", "unknown")
    details = flower.get("status-details", "")
    reason = str(status.get("reason") or "")
    if not reason:
        if run_id is None:
            reason = (f"flwr run exited with code {exit_code} before the run started: "
                      f"{_flwr_error(output_dir / 'flwr.log')}")
        elif flower_status == COMPLETED and not status:
            reason = (f"{status_path} does not exist: the ServerApp writes the run folder on the SuperLink "
                      f"machine, so submit from there with an absolute OUTPUT_DIR")
        elif details and details != "N/A":
            reason = details
        else:
            reason = f"Flower reports {flower_status!r}"
    return RunOutcome(run_id, exit_code, flower_status, status.get("status"), reason, output_dir,
                      str(status.get("error_kind", "")), missing_methods(output_dir))


def _flwr_error(log_path: Path, lines: int = 4) -> str:
    """The last lines ``flwr`` printed, without its box drawing (the reason it gave up)."""
    text = log_path.read_text(errors="replace") if log_path.is_file() else ""
    kept = [line.strip(" \u2502\u256d\u256e\u2570\u256f\u2500") for line in text.splitlines()]
    kept = [line for line in kept if line]
    return " ".join(kept[-lines:]) or f"nothing in {log_path}"
