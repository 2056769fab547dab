"""The round history and the history-based methods, Flower-free: against numpy on a toy federation.

The toy federation is linear regression: each site takes full-batch gradient steps on its own
(X, y). The methods run through their real engine (``HistoryRun`` with a toy ``RoundWorker``); the
references recompute each method's rule in numpy, in float64, from the same data.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fedforget.configs import load_experiment
from fedforget.configs.schema import FederationConfig, UnlearningConfig
from fedforget.data.synthetic import prepare_synthetic_data
from fedforget.learning.history import HistoryError, RoundHistory
from fedforget.learning.plain_loop import plain_fedavg
from fedforget.learning.training import initial_state, model_from_config
from fedforget.unlearning import HISTORY_REGISTRY, get_history_method, unlearn_from_history
from fedforget.unlearning.fedrecover import lbfgs_hessian_product
from fedforget.unlearning.history_base import FORGET_DATA, HistoryRun, SiteUpdate, local_round_worker
from fedforget.unlearning.retrain_budget import budget_schedule
from fedforget.unlearning.sifu import psi_threshold, rollback_round

SITES = ("a", "b", "f")  # f is removed
ROUNDS, STEPS, LR = 6, 3, 0.05
rng = np.random.default_rng(0)
DATA = {site: (rng.normal(size=(n, 3)), rng.normal(size=n)) for site, n in (("a", 20), ("b", 30), ("f", 25))}
FORGET_SET = (DATA["f"][0][:10], DATA["f"][1][:10])


def _state(w: np.ndarray) -> dict[str, torch.Tensor]:
    return {"w": torch.tensor(w[:2], dtype=torch.float32), "b": torch.tensor(w[2:], dtype=torch.float32)}


def _vector(state: dict[str, torch.Tensor]) -> np.ndarray:
    return np.concatenate([state["w"].double().numpy(), state["b"].double().numpy()])


def _gd(w: np.ndarray, data: tuple[np.ndarray, np.ndarray], steps: int, lr: float) -> np.ndarray:
    """``steps`` full-batch gradient steps of the mean squared error of ``y ~ x0 w0 + x1 w1 + b``."""
    x, y = data
    design = np.column_stack([x[:, :2], np.ones(len(y))])
    w = w.copy()
    for _ in range(steps):
        w -= lr * design.T @ (design @ w - y) / len(y)
    return w


class ToyWorker:
    """Sites of the toy federation in-process: the same gradient steps in float32 torch."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], int]] = []

    def local_round(self, sites, state, first_batch, steps, lr, data="train"):
        self.calls.append((tuple(sites), steps))
        updates = {}
        for site in sites:
            chosen = FORGET_SET if data == FORGET_DATA else DATA[site]
            w = _gd(_vector(state), chosen, steps, lr)
            updates[site] = SiteUpdate(_state(w), len(chosen[1]), 0.0)
        return updates


def _numpy_fedavg(sites: tuple[str, ...], start: np.ndarray, rounds: range) -> tuple[np.ndarray, list]:
    """FedAvg in numpy; returns the final model and, per round, (start, {site: update}, {site: n})."""
    w, log = start.copy(), []
    for _ in rounds:
        local = {s: _gd(w, DATA[s], STEPS, LR) for s in sites}
        examples = {s: len(DATA[s][1]) for s in sites}
        total = sum(examples.values())
        log.append((w.copy(), {s: local[s] - w for s in sites}, examples))
        w = sum(examples[s] / total * local[s] for s in sites)
    return w, log


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The toy original (all three sites), its history, and the numpy log of the same training."""
    folder = tmp_path_factory.mktemp("toy") / "history"
    history = RoundHistory.create(folder, 1, "fp32", "toy")
    initial = np.array([0.3, -0.2, 0.1])
    state = _state(initial)
    worker = ToyWorker()
    for server_round in range(1, ROUNDS + 1):
        updates = worker.local_round(SITES, state, 0, STEPS, LR)
        start = state
        total = sum(u.examples for u in updates.values())
        state = {k: sum(u.examples / total * u.state[k] for u in updates.values()) for k in start}
        history.add(server_round, start, {s: (u.state, u.examples) for s, u in updates.items()})
    final, log = _numpy_fedavg(SITES, initial, range(ROUNDS))
    assert np.allclose(_vector(state), final, atol=1e-5)
    return {"history": history, "original": state, "initial": _state(initial), "log": log, "final": final,
            "initial_vector": initial}


def _run(toy: dict, **knobs) -> tuple[HistoryRun, ToyWorker]:
    unlearning = UnlearningConfig(forget_site="f")
    for section, values in knobs.items():
        for key, value in values.items():
            setattr(getattr(unlearning, section), key, value)
    worker = ToyWorker()
    run = HistoryRun(history=toy["history"], original=toy["original"], initial=toy["initial"],
                     fed=FederationConfig(rounds=ROUNDS, local_steps=STEPS, lr=LR), unlearning=unlearning,
                     forget_site="f", retain_sites=["a", "b"], worker=worker, new_model=lambda: None)
    return run, worker


# The history store.

def test_the_history_round_trips_bit_for_bit(tmp_path: Path) -> None:
    torch.manual_seed(0)
    start = {"x": torch.randn(5, 3), "y": torch.randn(7)}
    site = {k: v + 1e-3 * torch.randn_like(v) for k, v in start.items()}
    for dtype, storage in (("fp32", torch.float32), ("fp16", torch.float16)):
        history = RoundHistory.create(tmp_path / dtype, 1, dtype, "key")
        assert history.add(1, start, {"s": (site, 12)})
        again = RoundHistory.open(tmp_path / dtype, "key").entry(1)
        assert all(torch.equal(again.start[k], start[k]) for k in start), "the global model is kept in fp32"
        for k in start:
            assert again.updates["s"][k].dtype == storage
            assert torch.equal(again.updates["s"][k], (site[k] - start[k]).to(storage))
        assert again.examples == {"s": 12}
    assert RoundHistory.open(tmp_path / "fp16").bytes < RoundHistory.open(tmp_path / "fp32").bytes


def test_thinning_keeps_exactly_the_rounds_it_names(tmp_path: Path) -> None:
    history = RoundHistory.create(tmp_path / "h", 3, "fp32", "key", extra_rounds=[5])
    state = {"x": torch.zeros(2)}
    kept = [r for r in range(1, 11) if history.add(r, state, {"s": (state, 1)})]
    assert kept == history.rounds == [1, 4, 5, 7, 10]
    assert sorted(p.name for p in (tmp_path / "h").glob("round-*.pt")) == [f"round-{r:04d}.pt" for r in kept]
    with pytest.raises(HistoryError, match=r"round 2 is not in the round history .* federation.history.every=3"):
        history.entry(2)


def test_truncate_copy_and_the_fingerprint_guard(tmp_path: Path) -> None:
    history = RoundHistory.create(tmp_path / "h", 1, "fp32", "key")
    state = {"x": torch.arange(3.0)}
    for server_round in range(1, 5):
        history.add(server_round, {"x": state["x"] + server_round}, {"s": (state, 2)})
    history.truncate(2)
    assert history.rounds == [1, 2] and not (tmp_path / "h" / "round-0003.pt").exists()
    copy = history.copy_to(tmp_path / "cache" / "h")
    assert copy.rounds == [1, 2] and torch.equal(copy.entry(2).start["x"], state["x"] + 2)
    with pytest.raises(HistoryError, match="belongs to another model"):
        RoundHistory.open(tmp_path / "cache" / "h", "other-key")
    with pytest.raises(HistoryError, match="federation.history.every"):
        RoundHistory.open(tmp_path / "nothing")
    # The same settings continue the history (a resumed run); other settings start it afresh.
    assert RoundHistory.create(tmp_path / "h", 1, "fp32", "key").rounds == [1, 2]
    assert RoundHistory.create(tmp_path / "h", 1, "fp16", "key").rounds == []


# The methods against numpy.

def test_federaser_calibration_equals_numpy(toy: dict) -> None:
    for calibrate in ("site", "aggregate"):
        run, worker = _run(toy, federaser={"interval": 2, "ratio": 0.5, "calibrate": calibrate})
        state, report = unlearn_from_history("federaser", run)
        cal = math.ceil(0.5 * STEPS)
        w = toy["initial_vector"].copy()
        for server_round in range(1, ROUNDS + 1, 2):
            start, updates, examples = toy["log"][server_round - 1]
            total = examples["a"] + examples["b"]
            weights = {s: examples[s] / total for s in "ab"}
            if server_round == 1:  # replayed as stored: it started from the initial model
                w = w + sum(weights[s] * updates[s] for s in "ab")
                continue
            fresh = {s: _gd(w, DATA[s], cal, LR) - w for s in "ab"}
            tensors = (slice(0, 2), slice(2, 3))  # "w" and "b": the norm is taken per tensor
            step = np.zeros(3)
            if calibrate == "site":
                for s in "ab":
                    for part in tensors:
                        step[part] += weights[s] * np.linalg.norm(updates[s][part]) * fresh[s][part] \
                            / np.linalg.norm(fresh[s][part])
            else:
                old = sum(weights[s] * updates[s] for s in "ab")
                new = sum(weights[s] * fresh[s] for s in "ab")
                for part in tensors:
                    step[part] = np.linalg.norm(old[part]) * new[part] / np.linalg.norm(new[part])
            w = w + step
        assert np.allclose(_vector(state), w, atol=1e-5), calibrate
        assert report.site_steps == 2 * cal * 2, "rounds 3 and 5, two retain sites"
        assert all("f" not in sites for sites, _ in worker.calls)


def test_fukd_subtraction_equals_numpy(toy: dict) -> None:
    run, worker = _run(toy, fukd={"repair_rounds": 0})
    state, report = unlearn_from_history("fukd", run)
    expected = toy["final"].copy()
    for _, updates, examples in toy["log"]:
        expected -= examples["f"] / sum(examples.values()) * updates["f"]
    assert np.allclose(_vector(state), expected, atol=1e-5)
    assert report.site_steps == 0 and not worker.calls


def test_sifu_bound_equals_numpy_and_sets_the_rollback(toy: dict) -> None:
    run, _ = _run(toy)
    unlearn_from_history("sifu", run)
    expected = [0.0]
    starts = [entry[0] for entry in toy["log"]] + [toy["final"]]
    for n, (start, updates, examples) in enumerate(toy["log"]):
        p = examples["f"] / sum(examples.values())
        expected.append(expected[-1] + p / (1 - p) * np.linalg.norm(starts[n + 1] - (start + updates["f"])))
    assert np.allclose(run.details["psi"], expected, rtol=1e-5)
    assert all(b > a for a, b in zip(expected, expected[1:])), "without weight decay the bound only grows"
    threshold = psi_threshold(10.0, 0.05, 1 / 3)
    assert run.details["psi_threshold"] == pytest.approx(0.5 / math.sqrt(2 * math.log(3.75)))
    assert run.details["rollback_round"] == rollback_round(expected, threshold)


def test_sifu_rolls_back_to_the_last_round_under_the_threshold() -> None:
    assert rollback_round([0.0, 0.1, 0.2, 0.5], 0.25) == 2
    assert rollback_round([0.0, 0.3, 0.6], 0.25) == 0
    assert rollback_round([0.0, 0.1], 0.25) == 1


def test_fedrecover_with_a_correction_every_round_is_retraining(toy: dict) -> None:
    run, worker = _run(toy, fedrecover={"correction_period": 1})
    state, report = unlearn_from_history("fedrecover", run)
    retrained, _ = _numpy_fedavg(("a", "b"), toy["initial_vector"], range(ROUNDS))
    assert np.allclose(_vector(state), retrained, atol=1e-5)
    assert report.site_steps == ROUNDS * STEPS * 2


def test_fedrecover_estimates_the_rounds_between_corrections(toy: dict) -> None:
    run, worker = _run(toy, fedrecover={"warmup_rounds": 2, "correction_period": 3, "final_rounds": 1,
                                        "abnormality_tolerance": 0.0})
    state, report = unlearn_from_history("fedrecover", run)
    exact = {int(r): n for r, n in run.details["exact_sites_per_round"].items()}
    assert exact == {1: 2, 2: 2, 3: 0, 4: 0, 5: 2, 6: 2}, "warm-up 1-2, correction 5, final 6"
    retrained, _ = _numpy_fedavg(("a", "b"), toy["initial_vector"], range(ROUNDS))
    # On a quadratic the estimates are close: the recovered model lands near retraining, far from the original.
    assert np.linalg.norm(_vector(state) - retrained) < 0.1 * np.linalg.norm(toy["final"] - retrained)


def test_fedrecover_abnormality_fixing_asks_for_the_exact_update(toy: dict) -> None:
    """With tau at the 0.1 % quantile of the stored updates' elements, estimates above it become exact rounds."""
    knobs = {"warmup_rounds": 2, "correction_period": 3, "final_rounds": 1}
    counts = {}
    for tolerance in (0.0, 0.999):
        run, _ = _run(toy, fedrecover={**knobs, "abnormality_tolerance": tolerance})
        _, report = unlearn_from_history("fedrecover", run)
        counts[tolerance] = {int(r): n for r, n in run.details["exact_sites_per_round"].items()}
        assert report.site_steps == sum(counts[tolerance].values()) * STEPS
    assert all(counts[0.999][r] >= n for r, n in counts[0.0].items())
    assert sum(counts[0.999].values()) > sum(counts[0.0].values()), "an abnormal estimate was replaced"
    stored = np.concatenate([np.abs(entry[1][s]) for entry in toy["log"] for s in "ab"])
    assert run.details["abnormality_bound"] <= np.max(stored)


def test_lbfgs_product_equals_the_compact_formula_in_numpy() -> None:
    generator = np.random.default_rng(1)
    a = generator.normal(size=(6, 6))
    hessian = a @ a.T + 6 * np.eye(6)
    steps = [generator.normal(size=6) for _ in range(3)]
    changes = [hessian @ s for s in steps]
    v = generator.normal(size=6)
    s, y = np.column_stack(steps), np.column_stack(changes)
    sigma = changes[-1] @ steps[-1] / (steps[-1] @ steps[-1])
    sy = s.T @ y
    lower = np.tril(sy, -1)
    middle = np.block([[sigma * s.T @ s, lower], [lower.T, -np.diag(np.diag(sy))]])
    expected = sigma * v - np.column_stack([sigma * s, y]) @ np.linalg.solve(middle, np.concatenate(
        [sigma * s.T @ v, y.T @ v]))
    torch_args = ([torch.tensor(x) for x in steps], [torch.tensor(x) for x in changes], torch.tensor(v))
    assert np.allclose(lbfgs_hessian_product(*torch_args).numpy(), expected)
    secant = lbfgs_hessian_product(torch_args[0], torch_args[1], torch.tensor(steps[-1])).numpy()
    assert np.allclose(secant, changes[-1]), "the secant equation H s = y for the newest pair"


def test_puf_negates_the_forget_sites_round_then_recovers(toy: dict) -> None:
    run, worker = _run(toy, puf={"scale": 2.0, "recovery_rounds": 1})
    state, report = unlearn_from_history("puf", run)
    lr = FederationConfig(rounds=ROUNDS, local_steps=STEPS, lr=LR).round_lr(ROUNDS)
    w = toy["final"] - 2.0 * (_gd(toy["final"], FORGET_SET, STEPS, lr) - toy["final"])
    local = {s: _gd(w, DATA[s], STEPS, lr) for s in "ab"}
    total = len(DATA["a"][1]) + len(DATA["b"][1])
    expected = sum(len(DATA[s][1]) / total * local[s] for s in "ab")
    assert np.allclose(_vector(state), expected, atol=1e-5)
    assert worker.calls == [(("f",), STEPS), (("a", "b"), STEPS)], "one round at the forget site, then recovery"


def test_rollback_and_full_budget_retraining_are_retraining(toy: dict) -> None:
    retrained, _ = _numpy_fedavg(("a", "b"), toy["initial_vector"], range(ROUNDS))
    for name, fraction in (("rollback", None), ("retrain_budget", 1.0)):
        run, worker = _run(toy)
        state, report = unlearn_from_history(name, run, fraction)
        assert np.allclose(_vector(state), retrained, atol=1e-5), name
        assert report.site_steps == ROUNDS * STEPS * 2 and all("f" not in s for s, _ in worker.calls)


def test_methods_that_must_not_contact_the_forget_site_cannot(toy: dict) -> None:
    run, _ = _run(toy)
    run.contacts_forget_site = False
    with pytest.raises(RuntimeError, match="must not contact the forget site f"):
        run.local_round(["a", "f"], toy["original"], 0, 1, LR)
    assert [name for name, cls in HISTORY_REGISTRY.items() if cls.contacts_forget_site] == ["puf"]


@pytest.mark.parametrize(("fraction", "rounds", "steps"), [(0.25, 30, 8), (0.1, 30, 8), (1.0, 30, 8), (0.33, 7, 3),
                                                           (1.5, 4, 2), (0.01, 30, 8)])
def test_retraining_budget_schedule(fraction: float, rounds: int, steps: int) -> None:
    schedule = budget_schedule(fraction, rounds, steps)
    assert sum(schedule) == max(1, round(fraction * rounds * steps))
    assert len(schedule) == max(1, min(round(fraction * rounds), sum(schedule)))
    assert max(schedule) - min(schedule) <= 1
    if fraction == 1.0:
        assert schedule == [steps] * rounds


def test_rollback_of_a_late_joiner_is_the_oracle_at_a_fraction_of_its_compute(tmp_path: Path, data_root: Path) -> None:
    """The knee joins after 2 of 4 rounds: rolling back to round 3's start and retraining 3-4 without it
    gives the oracle's weights bit for bit, for half of the oracle's site steps (Flower-free, real VarNet)."""
    torch.set_num_threads(1)
    cfg = load_experiment("smoke", [f"data.root={data_root}", "sites=brain2_knee1", "federation.rounds=4",
                                    "sites.knee-0.joins_at_round=2", "unlearning.methods=[rollback]"])
    prepare_synthetic_data(cfg)
    history = RoundHistory.create(tmp_path / "history", 1, "fp32", "key", extra_rounds=[3])
    original = plain_fedavg(cfg, cfg.site_names, round_history=history)
    oracle = plain_fedavg(cfg, cfg.retain_sites)
    assert history.examples(2).keys() == {"brain-0", "brain-1"} and "knee-0" in history.examples(3)
    run = HistoryRun(history=history, original=original.state, initial=initial_state(cfg.model, cfg.seed),
                     fed=cfg.federation, unlearning=cfg.unlearning, forget_site="knee-0",
                     retain_sites=cfg.retain_sites, worker=local_round_worker(cfg),
                     new_model=lambda: model_from_config(cfg.model), joins=cfg.joins)
    state, report = unlearn_from_history("rollback", run)
    assert any(not torch.equal(original.state[k], oracle.state[k]) for k in state), "the knee shaped the original"
    assert all(torch.equal(state[k], oracle.state[k]) for k in state)
    oracle_steps = cfg.federation.rounds * cfg.federation.local_steps * len(cfg.retain_sites)
    assert (run.details["resumed_from_round"], report.site_steps) == (2, oracle_steps // 2)


@pytest.mark.parametrize("name", [n for n in HISTORY_REGISTRY if n != "sifu"])
def test_each_methods_plan_is_what_it_does(toy: dict, name: str) -> None:
    """The projection's plan (bench.history_projection) matches the exchanges a run makes."""
    run, worker = _run(toy, fedrecover={"correction_period": 2, "abnormality_tolerance": 0.0})
    fraction = 0.5 if name == "retrain_budget" else None
    _, report = unlearn_from_history(name, run, fraction)
    plan = get_history_method(name, run.unlearning, fraction).plan(run.fed, len(run.retain_sites))
    assert [(len(sites), steps) for sites, steps in worker.calls] == plan
    assert sum(sites * steps for sites, steps in plan) == report.site_steps
