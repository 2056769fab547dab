"""The run folder of the output contract, and the run's status and events."""

from __future__ import annotations

import datetime as dt
import json
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedforget.recon.atomic import atomic_write_bytes, atomic_write_json
from fedforget.reporting.progress import PROGRESS_FILE, ProgressLog

STATUS_FILE = "status.json"
INTERRUPTED = "interrupted"


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class RunFolder:
    """``config.yaml``, ``results.json``, ``report.md``, ``audit.json``, ``figures/``, ``tensorboard/``,
    ``checkpoints/`` under one absolute root, plus ``status.json`` (running / completed / failed) and
    ``progress.jsonl`` (what ``fedforget run`` shows while the run runs)."""

    root: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    started: str = field(default_factory=utc_now)
    progress: ProgressLog = field(init=False)

    def __post_init__(self) -> None:
        if not self.root.is_absolute():
            raise ValueError(f"run folder {self.root} must be an absolute path (Flower never changes directory)")
        for sub in ("checkpoints", "figures", "tensorboard"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.progress = ProgressLog(self.root / PROGRESS_FILE)

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    def write_config(self, plain: dict[str, Any]) -> None:
        atomic_write_bytes(self.root / "config.yaml", yaml.safe_dump(plain, sort_keys=False).encode())

    def event(self, kind: str, **details: Any) -> None:
        """Record something that happened to the run (a failed site, a skipped method, a resume)."""
        self.events.append({"time": utc_now(), "kind": kind, **details})
        self.set_status("running")

    def set_status(self, status: str, **details: Any) -> None:
        atomic_write_json(self.root / STATUS_FILE, {"status": status, "started": self.started, "updated": utc_now(),
                                                    "events": self.events, **details})

    def fail(self, err: BaseException) -> None:
        """Mark the run failed: the reason, the traceback, and what the error adds (a site's file and slice)."""
        reason = f"{type(err).__name__}: {err}"
        self.set_status("failed", reason=reason, traceback="".join(traceback.format_exception(err))[-4000:],
                        **dict(getattr(err, "status_details", {})))
        self.progress.run_failed(reason)

    def previous_events(self) -> list[dict[str, Any]]:
        """Events recorded by an earlier attempt of this run (kept across a resume)."""
        path = self.root / STATUS_FILE
        if not path.is_file():
            return []
        try:
            return list(json.loads(path.read_text()).get("events", []))
        except (ValueError, OSError):
            return []


def mark_interrupted(root: Path, reason: str) -> None:
    """Record that the run was stopped from outside (a signal): resumable, like a failed run."""
    path = root / STATUS_FILE
    try:
        status = json.loads(path.read_text()) if path.is_file() else {}
    except (ValueError, OSError):
        status = {}
    if status.get("status") == "completed":
        return
    atomic_write_json(path, {**status, "status": INTERRUPTED, "reason": reason, "updated": utc_now()})
