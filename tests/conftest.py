"""Shared fixtures: synthetic data written once per session, and real fedforget runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide folder for synthetic site data (written on first use by each experiment)."""
    return tmp_path_factory.mktemp("synthetic-data")


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, data_root: Path, cache_root: Path) -> CompletedRun:
    """One real Flower simulation of the smoke experiment, shared by the tests that read its outputs."""
    folder = tmp_path_factory.mktemp("smoke-run") / "run"
    run = fedforget_run(["experiment=smoke", f"data.root={data_root}", f"cache_dir={cache_root}"], folder)
    assert run.returncode == 0, run.output[-4000:]
    return run
