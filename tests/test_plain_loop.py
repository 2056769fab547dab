"""The plain PyTorch FedAvg loop (the overhead benchmark's baseline) does exactly what the Flower run does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from run_helpers import CompletedRun

from fedforget.configs import load_experiment
from fedforget.learning.checkpoints import load_checkpoint
from fedforget.learning.plain_loop import plain_fedavg

pytestmark = pytest.mark.slow


def test_the_plain_loop_ends_with_the_flower_runs_weights(smoke_run: CompletedRun, data_root: Path) -> None:
    """Same seed, same data streams, one torch thread per site as in the simulation: bit-identical weights."""
    torch.set_num_threads(1)
    cfg = load_experiment("smoke", [f"data.root={data_root}"])
    plain = plain_fedavg(cfg, cfg.site_names)
    flower, _ = load_checkpoint(smoke_run.folder / "checkpoints" / "original.pt")
    assert len(plain.round_seconds) == cfg.federation.rounds and plain.seconds > 0
    assert set(plain.state) == set(flower)
    different = [k for k in flower if not torch.equal(plain.state[k], flower[k])]
    assert not different, f"{len(different)} of {len(flower)} tensors differ, e.g. {different[:3]}"
