"""``<run>/progress.jsonl``: what the ServerApp is doing, one JSON object a line, for ``fedforget run`` to show.

The ServerApp runs in another process (``flwr-simulation``, or on the SuperLink machine
in a deployment), so it cannot draw progress bars itself; it appends events to this
file and the launcher follows it. Every line is one complete event::

    {"event": "run_started", "time": 1767000000.0, "experiment": "smoke", "sites": [...],
     "forget_site": "knee-0", "methods": ["ft", "nl_ft"]}
    {"event": "phase_started", "phase": "federated", "total": 30, "unit": "round", "done": 0}
    {"event": "evaluation", "phase": "federated", "step": 0, "psnr": {"brain-0": 18.3, "knee-0": 15.0}}
    {"event": "step", "phase": "federated", "done": 1, "total": 30, "seconds": 4.1, "psnr": {...}}
    {"event": "phase_finished", "phase": "federated", "seconds": 131.0}
    {"event": "run_finished", "status": "completed"}   or   {"event": "run_failed", "reason": "..."}

Phases are the TensorBoard phase tags (``federated``, ``oracle``, ``unlearn/<method>``)
plus ``evaluation`` (every model at every site, once, at the end). ``psnr`` is each
site's test PSNR, present on a step only when that step was evaluated. A phase whose
model was loaded (cache or checkpoint) starts with ``done == total`` and carries
``loaded_from``; a method stopped by a failing site finishes with ``status: stopped``.
A resumed run appends to the same file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedforget.configs.schema import ExperimentConfig

PROGRESS_FILE = "progress.jsonl"
RUN_STARTED, RUN_FINISHED, RUN_FAILED = "run_started", "run_finished", "run_failed"
PHASE_STARTED, PHASE_FINISHED, STEP, EVALUATION = "phase_started", "phase_finished", "step", "evaluation"
FINAL_EVALUATION = "evaluation"
STOPPED = "stopped"


def psnr_by_site(scores: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Each site's test PSNR from a phase's site scores (``{site: {"test": {"psnr": ...}}}``), sites by name.

    Replies arrive in any order; sorting keeps the sites in the same columns on every line.
    """
    return {site: float(scores[site]["test"]["psnr"]) for site in sorted(scores)
            if "psnr" in scores[site].get("test", {})}


class ProgressLog:
    """Appends progress events to ``<run>/progress.jsonl`` (one ``write`` per line, flushed at once)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._done: dict[str, int] = {}
        self._totals: dict[str, int] = {}
        self._open: str | None = None

    def _write(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, "time": round(time.time(), 3), **fields})
        with open(self.path, "a") as handle:
            handle.write(line + "\n")

    def run_started(self, cfg: ExperimentConfig) -> None:
        self._write(RUN_STARTED, experiment=cfg.name, sites=list(cfg.sites), forget_site=cfg.unlearning.forget_site,
                    methods=list(cfg.unlearning.methods))

    def phase_started(self, phase: str, total: int, unit: str, done: int = 0, **details: Any) -> None:
        """A phase of ``total`` units (rounds, steps, models), ``done`` of them already (a resumed phase)."""
        self._done[phase], self._totals[phase], self._open = done, total, phase
        self._write(PHASE_STARTED, phase=phase, total=total, unit=unit, done=done, **details)

    def phase_loaded(self, phase: str, total: int, unit: str, source: str) -> None:
        """A phase whose model was loaded instead of trained: started and finished at once."""
        self.phase_started(phase, total, unit, done=total, loaded_from=source)
        self.phase_finished(phase, loaded_from=source)

    def step(self, phase: str, done: int | None = None, scores: Mapping[str, Any] | None = None,
             **details: Any) -> None:
        """One more unit of ``phase`` is done (or ``done`` of them); ``scores`` when it was evaluated."""
        self._done[phase] = self._done.get(phase, 0) + 1 if done is None else done
        fields: dict[str, Any] = {"phase": phase, "done": self._done[phase], "total": self._totals.get(phase)}
        if scores:
            fields["psnr"] = psnr_by_site(scores)
        self._write(STEP, **fields, **details)

    def evaluation(self, phase: str, step: int, scores: Mapping[str, Any]) -> None:
        """An evaluation that is not a step of its own (the round-0 scores before training)."""
        self._write(EVALUATION, phase=phase, step=step, psnr=psnr_by_site(scores))

    def phase_finished(self, phase: str, **details: Any) -> None:
        self._open = None if self._open == phase else self._open
        self._write(PHASE_FINISHED, phase=phase, **details)

    def stop_phase(self, reason: str) -> None:
        """The open phase ends early (a method stopped because a site failed it)."""
        if self._open is not None:
            self.phase_finished(self._open, status=STOPPED, reason=reason)

    def run_finished(self) -> None:
        self._write(RUN_FINISHED, status="completed")

    def run_failed(self, reason: str) -> None:
        self._write(RUN_FAILED, reason=reason)


def read_events(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The complete events after byte ``offset`` and the offset after them (a half-written line waits).

    Args:
        path: A ``progress.jsonl`` file (may not exist yet).
        offset: Where the previous read stopped.

    Returns:
        The events, and the offset to continue from.
    """
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return [], offset
    complete = data[:data.rfind(b"\n") + 1]
    events = []
    for line in complete.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue  # a line another writer mangled; progress display is best effort
    return events, offset + len(complete)
