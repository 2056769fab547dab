"""Timestamps of one exchange's parts, for measuring deployments (``bench/deployment.py``).

Off unless ``$FEDFORGET_TRACE`` names a folder; then every process involved (the
ServerApp, each SuperNode, each ClientApp process) appends one JSON line per event to
``<folder>/<pid>.jsonl``. Only the standard library is imported here, so a ClientApp
process can record its first moments before any heavy import.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

TRACE_ENV = "FEDFORGET_TRACE"


def tracing() -> bool:
    """Whether this process records trace events."""
    return bool(os.environ.get(TRACE_ENV))


def trace(event: str, when: float | None = None, **fields: Any) -> None:
    """Record ``event`` (wall-clock seconds ``when``, default now) with JSON-able ``fields``; no-op when off."""
    folder = os.environ.get(TRACE_ENV)
    if not folder:
        return
    record = {"t": time.time() if when is None else when, "pid": os.getpid(), "event": event, **fields}
    try:
        with open(Path(folder) / f"{os.getpid()}.jsonl", "a") as out:
            out.write(json.dumps(record, default=str) + "\n")
    except OSError:  # measuring must never break a run
        pass


def process_started_at() -> float | None:
    """Wall-clock time at which this process was created (Linux ``/proc``; None elsewhere).

    Field 22 of ``/proc/self/stat`` is the start time in clock ticks after boot, so its
    age is the boot clock's reading minus it (10 ms resolution).
    """
    try:
        stat = Path("/proc/self/stat").read_text()
        ticks = int(stat[stat.rindex(")") + 2:].split()[19])
        since_boot = time.clock_gettime(time.CLOCK_BOOTTIME)
    except (OSError, ValueError, AttributeError):
        return None
    return time.time() - (since_boot - ticks / os.sysconf("SC_CLK_TCK"))


def read_traces(folder: Path) -> list[dict[str, Any]]:
    """Every event recorded under ``folder``, in time order."""
    events = []
    for path in sorted(Path(folder).glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                events.append(json.loads(line))
    return sorted(events, key=lambda e: e["t"])
