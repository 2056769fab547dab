"""A small trained VarNet and forget / retain streams, shared by the Flower-free unlearning tests."""

from __future__ import annotations

import pytest
import torch

from fedforget.configs import load_experiment
from fedforget.data.batches import BatchSource
from fedforget.data.datasets import open_split
from fedforget.data.synthetic import prepare_synthetic_data
from fedforget.learning.training import LocalTraining, train_steps
from fedforget.recon.losses import ReconLoss
from fedforget.recon.masks import make_mask_func
from fedforget.recon.models import PRESETS, build_varnet


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Tiny smoke data, a VarNet trained on brain and knee, and forget / retain streams."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("unlearning-data")
    cfg = load_experiment("smoke", [f"data.root={root}"])
    prepare_synthetic_data(cfg)
    mask = make_mask_func(cfg.data.mask_type, cfg.data.acceleration, cfg.data.center_fraction)
    forget_train = open_split(root / "knee-0" / "train", mask, True)
    retain_train = open_split(root / "brain-0" / "train", mask, True)
    torch.manual_seed(0)
    model = build_varnet(PRESETS["tiny"])
    loss = ReconLoss()
    for source in (BatchSource(retain_train, 2, 1), BatchSource(forget_train, 2, 2)) * 3:
        train_steps(model, source, 0, 5, LocalTraining(1e-3), loss, torch.device("cpu"))
    return {"cfg": cfg, "root": root, "model": model, "loss": loss, "forget": BatchSource(forget_train, 2, 11),
            "retain": BatchSource(retain_train, 2, 12), "forget_data": forget_train}
