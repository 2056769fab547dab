"""Running fedforget as a user would (the real CLI in a subprocess), for the end-to-end tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class CompletedRun:
    """A finished ``fedforget run`` subprocess and its run folder."""

    returncode: int
    output: str
    folder: Path

    @property
    def results(self) -> dict:
        return json.loads((self.folder / "results.json").read_text())

    @property
    def status(self) -> dict:
        return json.loads((self.folder / "status.json").read_text())


def fedforget_run(args: list[str], folder: Path, timeout: float = 600) -> CompletedRun:
    """Run the real CLI (``fedforget run``) in a subprocess, as a user would."""
    command = [sys.executable, "-m", "fedforget.cli", "run", *args, "--output-dir", str(folder)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return CompletedRun(done.returncode, done.stdout + done.stderr, folder)


def fedforget_report(folder: Path) -> subprocess.CompletedProcess[str]:
    """``fedforget report FOLDER`` (a run or a multirun folder)."""
    return subprocess.run([sys.executable, "-m", "fedforget.cli", "report", str(folder)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
