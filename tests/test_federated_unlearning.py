"""The federated client-removal protocol, through real Flower simulations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from run_helpers import CompletedRun, fedforget_report, fedforget_run

from fedforget.configs import load_experiment
from fedforget.data.batches import unlearning_source
from fedforget.data.datasets import open_split
from fedforget.learning.checkpoints import load_checkpoint
from fedforget.recon.losses import ReconLoss
from fedforget.recon.masks import make_mask_func
from fedforget.recon.models import PRESETS, build_varnet
from fedforget.unlearning import unlearn

pytestmark = pytest.mark.slow

EQUIVALENCE_METHODS = ["ga_l1_ft", "nl_ft", "ssd", "grad_surgery"]


@pytest.fixture(scope="module")
def equivalence_run(tmp_path_factory: pytest.TempPathFactory, data_root: Path, cache_root: Path,
                    smoke_run: CompletedRun) -> CompletedRun:
    """The smoke federation (one retain, one forget site) running several methods, reusing cached models."""
    folder = tmp_path_factory.mktemp("equivalence") / "run"
    methods = ",".join(EQUIVALENCE_METHODS)
    run = fedforget_run(["experiment=smoke", f"data.root={data_root}", f"cache_dir={cache_root}",
                         f"unlearning.methods=[{methods}]", "unlearning.steps=3"], folder)
    assert run.returncode == 0, run.output[-4000:]
    return run


@pytest.mark.parametrize("name", EQUIVALENCE_METHODS)
def test_federated_protocol_equals_the_flower_free_method(equivalence_run: CompletedRun, data_root: Path,
                                                          name: str) -> None:
    torch.set_num_threads(1)  # the simulated sites compute with one thread each
    cfg = load_experiment("smoke", [f"data.root={data_root}", f"unlearning.methods=[{name}]", "unlearning.steps=3"])
    mask = make_mask_func(cfg.data.mask_type, cfg.data.acceleration, cfg.data.center_fraction)
    train = {site: open_split(data_root / site / "train", mask, True) for site in cfg.sites}
    forget = unlearning_source(cfg, "knee-0", train["knee-0"], "forget")
    retain = unlearning_source(cfg, "brain-0", train["brain-0"], "retain")
    original, _ = load_checkpoint(equivalence_run.folder / "checkpoints" / "original.pt")
    model = build_varnet(PRESETS["tiny"])
    model.load_state_dict(original)
    budget = cfg.unlearning.budget_steps(cfg.federation.training_steps)
    unlearn(name, model, forget, retain, cfg.unlearning, budget, cfg.seed, ReconLoss(cfg.federation.l1_weight))
    federated, _ = load_checkpoint(equivalence_run.folder / "checkpoints" / f"{name}.pt")
    moved = max(float((federated[k] - original[k]).abs().max()) for k in original)
    assert moved > 1e-6, "the federated method did not change the model"
    for key, value in model.state_dict().items():
        assert torch.allclose(value, federated[key], rtol=1e-4, atol=1e-6), key


def test_no_message_leaving_a_site_carries_data(equivalence_run: CompletedRun) -> None:
    cfg = load_experiment("smoke")
    size = cfg.data.size
    ledger = json.loads((equivalence_run.folder / "ledger.json").read_text())
    shapes = [tuple(shape) for entry in ledger for shape in entry["shapes_up"]]
    assert shapes, "sites sent no arrays at all"
    for shape in shapes:
        assert shape[-2:] != (size, size) and shape[-3:-1] != (size, size), f"data-shaped array {shape}"
    model_shapes = {tuple(p.shape) for p in build_varnet(PRESETS["tiny"]).parameters()}
    assert set(shapes) <= model_shapes, "every array a site sends has the shape of a model parameter"


def test_forget_data_stays_at_the_forget_site(equivalence_run: CompletedRun) -> None:
    ledger = json.loads((equivalence_run.folder / "ledger.json").read_text())
    unlearning = [e for e in ledger if e["phase"].startswith("unlearn/")]
    assert {e["site"] for e in unlearning} == {"brain-0", "knee-0"}
    results = equivalence_run.results
    for name in EQUIVALENCE_METHODS:
        record = results["models"][name]
        assert record["steps"] <= results["budget_steps"]
        assert 0 <= record["audit"]["mia_auc"] <= 1


def test_cached_original_and_oracle_are_reused(equivalence_run: CompletedRun) -> None:
    ledger = json.loads((equivalence_run.folder / "ledger.json").read_text())
    assert not [e for e in ledger if e["phase"] in ("federated", "oracle")], "a cached model was retrained"
    loaded = [e for e in equivalence_run.results["events"] if e["kind"] == "loaded"]
    assert {e["model"] for e in loaded} == {"original", "oracle"}


def test_retain_fraction_sweep_is_one_multirun_with_server_held_retain_data(
        tmp_path: Path, data_root: Path, cache_root: Path, smoke_run: CompletedRun) -> None:
    base = tmp_path / "sweep"
    run = fedforget_run(["-m", "experiment=smoke", f"data.root={data_root}", f"cache_dir={cache_root}",
                         "unlearning.methods=[nl_ft]", "unlearning.retain_access=server",
                         "unlearning.retain_fraction=0.5,1.0"], base)
    assert run.returncode == 0, run.output[-4000:]
    jobs = json.loads((base / "multirun.json").read_text())
    assert [job["overrides"][-1] for job in jobs] == ["unlearning.retain_fraction=0.5",
                                                      "unlearning.retain_fraction=1.0"]
    for job, fraction in zip(jobs, (0.5, 1.0)):
        folder = Path(job["run"])
        results = json.loads((folder / "results.json").read_text())
        assert results["models"]["nl_ft"]["retain_fraction"] == fraction
        assert results["models"]["nl_ft"]["retain_access"] == "server"
        assert {e["model"] for e in results["events"] if e["kind"] == "loaded"} == {"original", "oracle"}
        ledger = json.loads((folder / "ledger.json").read_text())
        unlearning = [e for e in ledger if e["phase"] == "unlearn/nl_ft"]
        assert unlearning and {e["site"] for e in unlearning} == {"knee-0"}, "retain sites are never asked"
    report = fedforget_report(base)
    assert report.returncode == 0 and (base / "summary.md").is_file() and (base / "figures" / "sweep.png").is_file()
