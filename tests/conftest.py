"""Shared fixtures: synthetic data written once per session, and one real smoke run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from run_helpers import CompletedRun, fedforget_run

from fedforget.configs import load_experiment
from fedforget.data.batches import BatchSource
from fedforget.data.sites import open_site_split
from fedforget.data.synthetic import prepare_synthetic_data
from fedforget.learning.training import LocalTraining, train_steps
from fedforget.recon.losses import ReconLoss
from fedforget.recon.models import PRESETS, build_varnet


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


@pytest.fixture(scope="session")
def setting(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Tiny smoke data, a VarNet trained on brain and knee, and forget / retain streams (for the Flower-free
    unlearning tests; they copy the model before changing it)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("unlearning-data")
    cfg = load_experiment("smoke", [f"data.root={root}"])
    prepare_synthetic_data(cfg)
    forget_train = open_site_split(cfg, "knee-0", "train")
    retain_train = open_site_split(cfg, "brain-0", "train")
    torch.manual_seed(0)
    model = build_varnet(PRESETS["tiny"])
    loss = ReconLoss()
    for source in (BatchSource(retain_train, 2, 1), BatchSource(forget_train, 2, 2)) * 3:
        train_steps(model, source, 0, 5, LocalTraining(1e-3), loss, torch.device("cpu"))
    return {"cfg": cfg, "root": root, "model": model, "loss": loss, "forget": BatchSource(forget_train, 2, 11),
            "retain": BatchSource(retain_train, 2, 12), "forget_data": forget_train}
