"""Local unlearning rounds (``unlearning.local_steps``), Flower-free: k = 1 is the per-step protocol, k > 1
is reproducible, draws the same batches, and keeps each method's constraint at every local step."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch

from fedforget.configs import load_experiment
from fedforget.configs.schema import ExperimentConfig
from fedforget.strategies.removal import message_plan
from fedforget.unlearning import REGISTRY, get_method, unlearn
from fedforget.unlearning.base import (
    FORGET,
    RETAIN,
    ROLES,
    LocalWorker,
    MethodState,
    RoundInputs,
    TermContext,
    frozen_copy,
    run_unlearning,
    term_gradients,
    trainable,
)
from fedforget.unlearning.grad_surgery import dot
from fedforget.unlearning.pga import PGA

BUDGET = 4
GRADIENT_METHODS = [name for name in REGISTRY if name not in ("ssd", "lfssd")]


def _config(local_steps: int, *overrides: str) -> ExperimentConfig:
    return load_experiment("smoke", [f"unlearning.local_steps={local_steps}", *overrides])


def _reference(setting: dict) -> dict:
    return {k: v.clone() + 0.01 for k, v in setting["model"].state_dict().items()}


def _unlearned(setting: dict, name: str, cfg: ExperimentConfig):
    model = copy.deepcopy(setting["model"])
    report = unlearn(name, model, setting["forget"], setting["retain"], cfg.unlearning, BUDGET, cfg.seed,
                     setting["loss"], reference=_reference(setting))
    return model, report


_PER_STEP: dict[str, tuple] = {}


def _per_step(setting: dict, name: str):
    """``local_steps = 1`` results, computed once per method for this module."""
    if name not in _PER_STEP:
        _PER_STEP[name] = _unlearned(setting, name, _config(1))
    return _PER_STEP[name]


def per_step_protocol(setting: dict, name: str, cfg: ExperimentConfig) -> torch.nn.Module:
    """The protocol before local rounds, written out: every step each party's term gradient on its next batch,
    the method's combine and one server Adam step (importance phases: one dampening)."""
    model = copy.deepcopy(setting["model"])
    method = get_method(name, cfg.unlearning)
    ctx = TermContext(loss=setting["loss"], seed=cfg.seed,
                      original=frozen_copy(model) if method.needs_original else None)
    for role in ROLES:
        method.prepare(role, ctx, model)
    sources = {FORGET: setting["forget"], RETAIN: setting["retain"]}
    state = MethodState(original={k: v.clone() for k, v in model.state_dict().items()}, reference=_reference(setting))
    optimizer = torch.optim.Adam(trainable(model).values(), lr=cfg.unlearning.lr)
    calls = {role: 0 for role in ROLES}
    for phase in method.phases(BUDGET):
        if phase.kind == "importance":
            importances = {role: method.importance(role, model, sources[role],
                                                   min(phase.steps, sources[role].batches_per_pass), ctx,
                                                   torch.device("cpu")) for role in phase.roles}
            with torch.no_grad():
                method.dampen(model, importances)
            continue
        for _ in range(phase.steps):
            inputs = {role: method.step_inputs(role, phase, model, state) for role in phase.roles}
            grads = {role: term_gradients(method, role, phase, model, sources[role].batch(calls[role]), calls[role],
                                          replace(ctx, inputs=inputs[role])).grads for role in phase.roles}
            for role in phase.roles:
                calls[role] += 1
            params = trainable(model)
            direction = method.combine(phase, {k: p.detach() for k, p in params.items()}, grads)
            optimizer.zero_grad(set_to_none=True)
            for k, p in params.items():
                p.grad = direction[k]
            optimizer.step()
            with torch.no_grad():
                method.after_step(phase, model, state)
    return model


@pytest.mark.parametrize("name", list(REGISTRY))
def test_one_local_step_gives_the_weights_of_the_per_step_protocol(setting: dict, name: str) -> None:
    model, report = _per_step(setting, name)
    expected = per_step_protocol(setting, name, _config(1))
    assert report.local_steps == 1
    for (key, value), reference in zip(model.state_dict().items(), expected.state_dict().values()):
        assert torch.equal(value, reference), key


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_local_rounds_read_the_per_step_batches_and_move_the_model(setting: dict, name: str) -> None:
    # Reproducibility across processes: the federated runs equal these Flower-free ones (test_federated_unlearning).
    first, report = _unlearned(setting, name, _config(2))
    per_step, per_step_report = _per_step(setting, name)
    assert report.steps == per_step_report.steps == BUDGET
    assert report.evaluations == per_step_report.evaluations, "local rounds read other batches"
    phases = get_method(name, _config(2).unlearning).phases(BUDGET)
    assert report.rounds == sum(1 if p.dampens else math.ceil(p.steps / 2) for p in phases) < per_step_report.rounds
    assert any(not torch.equal(a, b) for a, b in zip(first.state_dict().values(), per_step.state_dict().values()))
    moved = max(float((a - b).abs().max()) for a, b in zip(first.state_dict().values(),
                                                          setting["model"].state_dict().values()))
    assert moved > 1e-4, f"{name} in local rounds left the model where it was"


@pytest.mark.parametrize("name", ["ssd", "lfssd"])
def test_dampening_methods_ignore_local_steps(setting: dict, name: str) -> None:
    one, _ = _per_step(setting, name)
    eight, report = _unlearned(setting, name, _config(8))
    assert report.rounds == 1
    for a, b in zip(one.state_dict().values(), eight.state_dict().values()):
        assert torch.equal(a, b)


class WatchedPGA(PGA):
    """PGA that records its distance from the ball's centre after every local step and every server update."""

    distances: list[float]

    def _distance(self, model: torch.nn.Module, centre: dict) -> float:
        return float(torch.sqrt(sum(torch.sum((p - centre[k]) ** 2) for k, p in trainable(model).items())))

    def after_local_step(self, role, phase, model, inputs: RoundInputs) -> None:
        super().after_local_step(role, phase, model, inputs)
        if phase.name == self.ascent_name:
            self.distances.append(self._distance(model, inputs.tensors["centre"]))

    def after_step(self, phase, model, state: MethodState) -> None:
        super().after_step(phase, model, state)
        if phase.name == self.ascent_name:
            self.distances.append(self._distance(model, state.reference))


@pytest.mark.parametrize("local_steps", [1, 2, 4])
def test_pga_stays_inside_its_ball_at_every_local_step(setting: dict, local_steps: int) -> None:
    cfg = _config(local_steps, "unlearning.pga.radius_fraction=0.001")
    method = WatchedPGA(cfg.unlearning)
    method.distances = []
    model = copy.deepcopy(setting["model"])
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    worker = LocalWorker(method, {FORGET: setting["forget"], RETAIN: setting["retain"]},
                         TermContext(loss=setting["loss"], seed=0))
    run_unlearning(method, model, worker, 8, cfg.unlearning.lr, reference=reference, local_steps=local_steps)
    radius = method.radius(model, MethodState(original={}, reference=reference))
    ascent = method.phases(8)[0].steps
    expected = ascent if local_steps == 1 else ascent + math.ceil(ascent / local_steps)
    assert len(method.distances) == expected
    assert max(method.distances) <= radius * (1 + 1e-5)
    assert max(method.distances) >= radius * 0.99, "the ball never bound, so the test proves nothing"


def test_local_surgery_steps_are_orthogonal_to_the_round_retain_direction() -> None:
    method = get_method("grad_surgery", _config(4).unlearning)
    ascent, repair = method.phases(BUDGET)
    generator = torch.Generator().manual_seed(3)
    retain = {"a": torch.randn(4, 3, generator=generator), "b": torch.randn(5, generator=generator)}
    local = {k: torch.randn(v.shape, generator=generator) for k, v in retain.items()}  # gradient of -J(forget)
    inputs = RoundInputs(tensors={RETAIN: retain})
    followed = method.local_gradient(FORGET, ascent, local, inputs)
    assert abs(float(dot(followed, retain))) < 1e-5
    assert float(dot(followed, local)) > 0, "the projected step must still ascend the forget loss"
    assert method.local_gradient(RETAIN, repair, local, inputs) is local
    assert method.guide_roles(ascent) == (RETAIN,) and method.guide_roles(repair) == ()


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_the_message_plan_sends_a_kth_of_the_messages(name: str) -> None:
    method = get_method(name, _config(1).unlearning)
    per_step = message_plan(method, 32, 1, retain_sites=3)  # phases of 16 steps: whole rounds of 8
    local = message_plan(method, 32, 8, retain_sites=3)
    stepped = {p.name for p in method.phases(32) if not p.dampens}  # a dampening is one exchange either way
    assert 8 * sum(e.messages for e in local if e.phase in stepped) == sum(e.messages for e in per_step
                                                                         if e.phase in stepped)
    assert [e for e in local if e.phase not in stepped] == [e for e in per_step if e.phase not in stepped]
