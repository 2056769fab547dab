"""The federated client-removal protocol, through real Flower simulations."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from run_helpers import CompletedRun, fedforget_report, fedforget_run

from fedforget.configs import load_experiment
from fedforget.configs.schema import METHOD_NAMES
from fedforget.data.batches import unlearning_source
from fedforget.data.sites import open_site_split
from fedforget.learning.checkpoints import load_checkpoint
from fedforget.recon.losses import ReconLoss
from fedforget.recon.models import PRESETS, build_varnet
from fedforget.unlearning import unlearn

pytestmark = pytest.mark.slow

EQUIVALENCE_METHODS = ["ga_l1_ft", "nl_ft", "ssd", "grad_surgery"]
# Every record a site sends may hold only these metrics, each a single number.
SITE_METRICS = re.compile(r"num-examples|loss|mia-auc|(train|test)-(slices|volumes|psnr|ssim|nmse|loss|artifact_score)")


@pytest.fixture(scope="module")
def equivalence_run(tmp_path_factory: pytest.TempPathFactory, data_root: Path, cache_root: Path,
                    smoke_run: CompletedRun) -> CompletedRun:
    """The smoke federation (one retain, one forget site) running every method, reusing cached models.

    Curves are evaluated only at each method's last step: the tests read weights and the ledger.
    """
    folder = tmp_path_factory.mktemp("equivalence") / "run"
    run = fedforget_run(["experiment=smoke", f"data.root={data_root}", f"cache_dir={cache_root}",
                         "unlearning.methods=[all]", "unlearning.steps=3", "unlearning.eval_every=3"], folder)
    assert run.returncode == 0, run.output[-4000:]
    return run


@pytest.mark.parametrize("name", EQUIVALENCE_METHODS)
def test_federated_protocol_equals_the_flower_free_method(equivalence_run: CompletedRun, data_root: Path,
                                                          name: str) -> None:
    torch.set_num_threads(1)  # the simulated sites compute with one thread each
    cfg = load_experiment("smoke", [f"data.root={data_root}", f"unlearning.methods=[{name}]", "unlearning.steps=3"])
    train = {site: open_site_split(cfg, site, "train") for site in cfg.sites}
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


def _replies(run: CompletedRun) -> list[dict]:
    """Every answer a site sent (the ledger records each one's arrays by shape and records by key)."""
    ledger = json.loads((run.folder / "ledger.json").read_text())
    return [e for e in ledger if e["records_up"]]


def _model_shapes() -> set[tuple[int, ...]]:
    return {tuple(p.shape) for p in build_varnet(PRESETS["tiny"]).parameters()}


def _weights_bytes(ledger: list[dict]) -> int:
    """Bytes of one copy of the model's weights, as the ledger counts them (what an evaluation sends)."""
    sizes = {e["bytes_down"] for e in ledger if e["message_type"] == "evaluate"}
    assert len(sizes) == 1, sizes
    return sizes.pop()


def test_no_record_leaving_a_site_carries_data(equivalence_run: CompletedRun) -> None:
    """Every ArrayRecord, MetricRecord and ConfigRecord any site sent, in every phase and every method."""
    replies = _replies(equivalence_run)
    phases = {e["phase"] for e in replies}
    assert {f"unlearn/{m}" for m in METHOD_NAMES} <= phases and {"discover", "evaluate/final/original"} <= phases
    model_shapes, sites = _model_shapes(), equivalence_run.results["sites"]
    assert {e["site"] for e in replies if e["phase"] == "discover"} == set(sites), "every site answered the query"
    for entry in replies:
        where = (entry["phase"], entry["step"], entry["site"])
        assert set(map(tuple, entry["shapes_up"])) <= model_shapes, f"a non-parameter array left a site: {where}"
        for name, record in entry["records_up"].items():
            if record["kind"] == "ArrayRecord":
                continue
            for key, (kind, length) in record["keys"].items():
                if record["kind"] == "MetricRecord":
                    assert SITE_METRICS.fullmatch(key) and kind in ("int", "float") and length == 1, (where, key)
                elif kind.startswith("list"):
                    # Lists travel only in the site query: one entry per file the site uses (audit.json).
                    split = key.split("-", 1)[0]
                    assert entry["phase"] == "discover" and name == "data", (where, name, key)
                    assert kind != "list[float]" and length == sites[entry["site"]][f"{split}_volumes"], (where, key)


def test_forget_data_stays_at_the_forget_site(equivalence_run: CompletedRun) -> None:
    """What the forget site sends is parameter-shaped or one number; what the others receive is only the model."""
    ledger = json.loads((equivalence_run.folder / "ledger.json").read_text())
    model_bytes = _weights_bytes(ledger)
    forget = [e for e in ledger if e["site"] == "knee-0" and e["status"] == "ok"]
    assert {f"unlearn/{m}" for m in METHOD_NAMES} - {"unlearn/ft"} <= {e["phase"] for e in forget}
    assert "unlearn/ft" not in {e["phase"] for e in forget}, "ft never asks the forget site"
    for entry in forget:
        if entry["phase"].startswith("unlearn/"):
            assert entry["bytes_up"] == model_bytes, "one gradient (or importance) per answer, nothing else"
        elif entry["message_type"] == "evaluate":
            metrics = entry["records_up"]["metrics"]["keys"]
            assert entry["bytes_up"] == 0 and all(length == 1 for _, length in metrics.values())
            assert "mia-auc" in metrics, "the membership statistic is computed at the site; its losses stay there"
    retain_unlearning = [e for e in ledger if e["site"] == "brain-0" and e["phase"].startswith("unlearn/")]
    assert retain_unlearning
    for entry in retain_unlearning:  # the model (and the original, for bad teacher): never a forget-site gradient
        assert entry["bytes_down"] in (model_bytes, 2 * model_bytes), entry


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
