"""Shared fixtures: synthetic data written once per session, and one real smoke run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from run_helpers import CompletedRun, fedforget_run


@pytest.fixture(scope="session", autouse=True)
def private_caches(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the per-machine caches (validation memo) of this test session out of the user's home."""
    os.environ["FEDFORGET_CACHE"] = str(tmp_path_factory.mktemp("fedforget-cache"))


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
