"""The federated client-removal protocol, through real Flower simulations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from leakage import assert_only_parameters_and_numbers_leave
from run_helpers import CompletedRun, fedforget_report, fedforget_run

from fedforget.configs import load_experiment
from fedforget.configs.schema import CENTRALISED_METHODS
from fedforget.data.batches import unlearning_source
from fedforget.data.sites import open_site_split
from fedforget.learning.checkpoints import load_checkpoint
from fedforget.recon.losses import ReconLoss
from fedforget.recon.models import PRESETS, build_varnet
from fedforget.strategies.protocol import arrays_from_state
from fedforget.strategies.removal import message_plan
from fedforget.unlearning import REGISTRY, get_method, unlearn
from fedforget.unlearning.pga import reference_model

pytestmark = pytest.mark.slow

EQUIVALENCE_METHODS = list(REGISTRY)
# Every local form: parallel two-party rounds, guide + mover rounds, a ball, distillation, a pruning mask and a
# teacher travelling with the rounds (one-party ga / ga_l1 / nl run the code paths of the ascent and penalty terms
# here, and are covered Flower-free in test_local_unlearning).
LOCAL_METHODS = ["ft", "ga_l1_ft", "nl_ft", "bad_teacher", "grad_surgery", "pga", "activation_pruning",
                 "soft_relabel"]
STEPS, LOCAL_STEPS = 4, 2
# Fewer evaluations than the smoke default (every step): these runs test weights and messages, not curves.
RUN_ARGS = [f"unlearning.steps={STEPS}", f"unlearning.eval_every={STEPS}", "report.figures=false"]


@pytest.fixture(scope="module")
def equivalence_run(tmp_path_factory: pytest.TempPathFactory, data_root: Path, cache_root: Path,
                    smoke_run: CompletedRun) -> CompletedRun:
    """The smoke federation (one retain, one forget site) running every method, reusing cached models."""
    folder = tmp_path_factory.mktemp("equivalence") / "run"
    methods = ",".join(EQUIVALENCE_METHODS)
    run = fedforget_run(["experiment=smoke", f"data.root={data_root}", f"cache_dir={cache_root}",
                         f"unlearning.methods=[{methods}]", *RUN_ARGS], folder)
    assert run.returncode == 0, run.output[-4000:]
    return run


@pytest.fixture(scope="module")
def local_round_run(tmp_path_factory: pytest.TempPathFactory, data_root: Path, cache_root: Path,
                    smoke_run: CompletedRun) -> CompletedRun:
    """The same federation in local rounds of 2 steps; the forget site fails nl_ft's first round once."""
    folder = tmp_path_factory.mktemp("local-rounds") / "run"
    methods = ",".join(LOCAL_METHODS)
    run = fedforget_run(["experiment=smoke", f"data.root={data_root}", f"cache_dir={cache_root}",
                         f"unlearning.methods=[{methods}]", *RUN_ARGS, f"unlearning.local_steps={LOCAL_STEPS}",
                         "federation.fault.site=knee-0", "federation.fault.phase=unlearn/nl_ft",
                         "federation.fault.round=1", "federation.fault.mode=error"], folder)
    assert run.returncode == 0, run.output[-4000:]
    return run


def _flower_free(run: CompletedRun, data_root: Path, name: str, local_steps: int) -> dict[str, torch.Tensor]:
    """The same removal without Flower, from the run's original model (PGA: the reference from its site updates)."""
    torch.set_num_threads(1)  # the simulated sites compute with one thread each
    cfg = load_experiment("smoke", [f"data.root={data_root}", f"unlearning.methods=[{name}]", *RUN_ARGS,
                                    f"unlearning.local_steps={local_steps}"])
    train = {site: open_site_split(cfg, site, "train") for site in cfg.sites}
    forget = unlearning_source(cfg, "knee-0", train["knee-0"], "forget")
    retain = unlearning_source(cfg, "brain-0", train["brain-0"], "retain")
    original, _ = load_checkpoint(run.folder / "checkpoints" / "original.pt")
    reference = None
    if get_method(name, cfg.unlearning).needs_reference:
        updates = torch.load(run.folder / "checkpoints" / "original-site-updates.pt", weights_only=False)
        forget_state, forget_examples = updates["knee-0"]
        reference = reference_model(original, forget_state, sum(n for _, n in updates.values()), forget_examples)
    model = build_varnet(PRESETS["tiny"])
    model.load_state_dict(original)
    budget = cfg.unlearning.budget_steps(cfg.federation.training_steps)
    unlearn(name, model, forget, retain, cfg.unlearning, budget, cfg.seed, ReconLoss(cfg.federation.l1_weight),
            reference=reference)
    return model.state_dict()


def _assert_same_weights(run: CompletedRun, name: str, expected: dict[str, torch.Tensor]) -> None:
    original, _ = load_checkpoint(run.folder / "checkpoints" / "original.pt")
    federated, _ = load_checkpoint(run.folder / "checkpoints" / f"{name}.pt")
    moved = max(float((federated[k] - original[k]).abs().max()) for k in original)
    assert moved > 1e-6, "the federated method did not change the model"
    for key, value in expected.items():
        assert torch.allclose(value, federated[key], rtol=1e-4, atol=1e-6), key


@pytest.mark.parametrize("name", EQUIVALENCE_METHODS)
def test_federated_protocol_equals_the_flower_free_method(equivalence_run: CompletedRun, data_root: Path,
                                                          name: str) -> None:
    _assert_same_weights(equivalence_run, name, _flower_free(equivalence_run, data_root, name, 1))


@pytest.mark.parametrize("name", LOCAL_METHODS)
def test_federated_local_rounds_equal_the_flower_free_local_rounds(local_round_run: CompletedRun, data_root: Path,
                                                                   name: str) -> None:
    _assert_same_weights(local_round_run, name, _flower_free(local_round_run, data_root, name, LOCAL_STEPS))
    record = local_round_run.results["models"][name]
    assert record["local_steps"] == LOCAL_STEPS and record["steps"] == STEPS


def _messages(run: CompletedRun, name: str) -> list[dict]:
    return [e for e in json.loads((run.folder / "ledger.json").read_text()) if e["phase"] == f"unlearn/{name}"]


@pytest.mark.parametrize("name", LOCAL_METHODS)
def test_local_rounds_send_a_kth_of_the_messages(equivalence_run: CompletedRun, local_round_run: CompletedRun,
                                                 name: str) -> None:
    per_step = [e for e in _messages(equivalence_run, name) if e["status"] == "ok"]
    local = [e for e in _messages(local_round_run, name) if e["status"] == "ok"]
    method = get_method(name, load_experiment("smoke").unlearning)
    dampening = {p.name for p in method.phases(STEPS) if p.dampens}  # one exchange at every k (a pruning mask)
    once = sum(e.messages for e in message_plan(method, STEPS, 1, retain_sites=1) if e.phase in dampening)
    assert per_step and LOCAL_STEPS * (len(local) - once) == len(per_step) - once
    recorded = {run.results["models"][name]["messages"] for run in (equivalence_run, local_round_run)}
    assert recorded == {len(_messages(equivalence_run, name)), len(_messages(local_round_run, name))}


@pytest.mark.parametrize("name", EQUIVALENCE_METHODS)
def test_the_message_plan_matches_the_ledger(equivalence_run: CompletedRun, local_round_run: CompletedRun,
                                             name: str) -> None:
    """The plan behind the paper-scale projection counts exactly what the protocol sent (messages and bytes)."""
    original, _ = load_checkpoint(equivalence_run.folder / "checkpoints" / "original.pt")
    record_bytes = arrays_from_state(original).count_bytes()
    method = get_method(name, load_experiment("smoke").unlearning)
    runs = [(equivalence_run, 1)] + ([(local_round_run, LOCAL_STEPS)] if name in LOCAL_METHODS else [])
    for run, local_steps in runs:
        sent = [e for e in _messages(run, name) if e["status"] == "ok"]
        plan = message_plan(method, STEPS, local_steps, retain_sites=1)
        assert sum(e.messages for e in plan) == len(sent), local_steps
        assert sum(e.arrays_down for e in plan) * record_bytes == sum(e["bytes_down"] for e in sent), local_steps
        assert sum(e.arrays_up for e in plan) * record_bytes == sum(e["bytes_up"] for e in sent), local_steps
        assert run.results["models"][name]["bytes_communicated"] == sum(e["bytes_down"] + e["bytes_up"]
                                                                        for e in _messages(run, name))


def test_a_site_failing_a_local_round_is_recorded_and_the_round_retried(local_round_run: CompletedRun) -> None:
    nl_ft = _messages(local_round_run, "nl_ft")
    failed = [e for e in nl_ft if e["status"] == "failed"]
    assert [(e["site"], e["step"]) for e in failed] == [("knee-0", 1)]
    assert "injected failure" in failed[0]["reason"]
    assert [e["step"] for e in nl_ft if e["site"] == "knee-0" and e["status"] == "ok"] == [2, 3], "retried as step 2"
    events = [e for e in local_round_run.results["events"] if e["kind"] == "unlearn_round_failed"]
    assert [(e["method"], e["site"], e["step"], e["retried"]) for e in events] == [("nl_ft", "knee-0", 1, True)]
    assert "nl_ft" in local_round_run.results["models"], "the retried method was kept"
    assert not [e for e in local_round_run.results["events"] if e["kind"] == "method_stopped"]


def _weights_bytes(ledger: list[dict]) -> int:
    """Bytes of one copy of the model's weights, as the ledger counts them (what an evaluation sends)."""
    # Zero-filled evaluations carry no model; final evaluations carry the oracle too (the membership reference).
    sizes = sorted({e["bytes_down"] for e in ledger if e["message_type"] == "evaluate"} - {0})
    assert len(sizes) == 2 and sizes[1] == 2 * sizes[0], sizes
    return sizes[0]


def test_no_record_leaving_a_site_carries_data(equivalence_run: CompletedRun) -> None:
    """Every ArrayRecord, MetricRecord and ConfigRecord any site sent, in every phase and every method."""
    assert_only_parameters_and_numbers_leave(equivalence_run, CENTRALISED_METHODS)


def test_forget_data_stays_at_the_forget_site(equivalence_run: CompletedRun) -> None:
    """What the forget site sends is parameter-shaped or one number; what the others receive is only the model."""
    ledger = json.loads((equivalence_run.folder / "ledger.json").read_text())
    model_bytes = _weights_bytes(ledger)
    forget = [e for e in ledger if e["site"] == "knee-0" and e["status"] == "ok"]
    assert {f"unlearn/{m}" for m in CENTRALISED_METHODS} - {"unlearn/ft"} <= {e["phase"] for e in forget}
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
