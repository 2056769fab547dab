"""The one engine that runs every unlearning method, in-process or federated.

In each phase the engine asks a :class:`Worker` for the parties' gradients on their next
batches, turns them into one update with the method's ``combine`` and an Adam step, or,
for dampening methods, turns per-element importances into a weight scaling. A worker
supplies those gradients: :class:`~fedforget.unlearning.party.LocalWorker` computes them
in-process (the Flower-free function), the federated protocol (``strategies.removal``)
asks the sites over Flower. The engine is the same, so both give the same weights for the
same data and seed.

With ``local_steps = k > 1`` a gradient phase runs in local rounds: every moving
party takes k Adam steps of its *local term* (its share of the method's objective,
see :meth:`Method.local_term`) from the round's weights and returns the change of
its weights; the server combines the changes with :meth:`Method.combine_updates`.
k = 1 keeps the per-step protocol above (one gradient per party, the server's Adam).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from fedforget.unlearning.method import (
    DAMPENED,
    ROLES,
    Method,
    MethodState,
    Phase,
    RoundInputs,
    Tensors,
    trainable,
)
from fedforget.unlearning.party import Gradients, LocalUpdate


class Worker(Protocol):
    """Where the parties compute (in-process, or at Flower sites); one call serves every role of a step."""

    def gradients(self, phase: Phase, indices: Mapping[str, int], model: nn.Module,
                  inputs: Mapping[str, RoundInputs] | None = None) -> dict[str, Gradients]: ...

    def mean_gradients(self, phase: Phase, starts: Mapping[str, int], steps: int,
                       model: nn.Module) -> dict[str, Gradients]: ...

    def local_updates(self, phase: Phase, starts: Mapping[str, int], steps: int, model: nn.Module,
                      inputs: RoundInputs, lr: float) -> dict[str, LocalUpdate]: ...

    def importances(self, phase: Phase, batches: Mapping[str, int], model: nn.Module) -> dict[str, Tensors]: ...

    def available_batches(self, role: str) -> int: ...

    def bytes_communicated(self) -> int: ...


@dataclass
class UnlearnReport:
    """What a method did: steps, data passes, time and traffic (the RTE axis)."""

    method: str
    steps: int
    budget: int
    evaluations: dict[str, int]
    wall_seconds: float
    bytes_communicated: int
    dampened_elements: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    local_steps: int = 1
    rounds: int = 0


StepCallback = Callable[[int, nn.Module, dict[str, float]], None]


@dataclass
class _Run:
    """The engine's running state: optimizer, per-role batch counters, history and timing."""

    method: Method
    model: nn.Module
    worker: Worker
    state: MethodState
    optimizer: torch.optim.Optimizer
    on_step: StepCallback | None
    lr: float = 1e-3
    calls: dict[str, int] = field(default_factory=lambda: {role: 0 for role in ROLES})
    steps: int = 0
    rounds: int = 0
    dampened: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    monitoring: float = 0.0  # time spent in on_step (evaluation) is not the method's cost

    def record(self, values: dict[str, float]) -> None:
        self.history.append(values)
        if self.on_step:
            began = time.perf_counter()
            self.on_step(self.steps, self.model, values)
            self.monitoring += time.perf_counter() - began

    def dampen(self, phase: Phase) -> None:
        """One importance phase: each party's importances over at most one pass, then dampening."""
        batches = {role: min(phase.steps, self.worker.available_batches(role)) for role in phase.roles}
        importances = self.worker.importances(phase, batches, self.model)
        for role in phase.roles:
            self.calls[role] += batches[role]
        with torch.no_grad():
            self.dampened = self.method.dampen(self.model, importances)
        self.record({DAMPENED: float(self.dampened)})

    def step(self, phase: Phase) -> None:
        """One optimizer step from the parties' gradients on their next batches."""
        inputs = {role: self.method.step_inputs(role, phase, self.model, self.state) for role in phase.roles}
        replies = self.worker.gradients(phase, {role: self.calls[role] for role in phase.roles}, self.model,
                                        {role: i for role, i in inputs.items() if i.tensors or i.values})
        for role in phase.roles:
            self.calls[role] += 1
        params = trainable(self.model)
        direction = self.method.combine(phase, {k: p.detach() for k, p in params.items()},
                                        {role: r.grads for role, r in replies.items()})
        self.optimizer.zero_grad(set_to_none=True)
        for name, p in params.items():
            p.grad = direction[name].to(p.device, p.dtype)
        self.optimizer.step()
        with torch.no_grad():
            self.method.after_step(phase, self.model, self.state)
        self.steps += 1
        self.rounds += 1
        self.record({f"{role}_loss": r.loss for role, r in replies.items()})

    def local_round(self, phase: Phase, steps: int) -> None:
        """``steps`` local steps at every moving party from the current weights, combined into one update."""
        starts = {role: self.calls[role] for role in phase.roles}
        guides = self.method.guide_roles(phase)
        inputs = self.method.round_inputs(phase, self.model, self.state)
        losses = {}
        if guides:
            for role, reply in self.worker.mean_gradients(phase, {r: starts[r] for r in guides}, steps,
                                                          self.model).items():
                inputs.tensors[role] = reply.grads
                losses[role] = reply.loss
        movers = {role: first for role, first in starts.items() if role not in guides}
        updates = self.worker.local_updates(phase, movers, steps, self.model, inputs, self.lr)
        for role in phase.roles:
            self.calls[role] += steps
        delta = self.method.combine_updates(phase, {role: u.delta for role, u in updates.items()})
        with torch.no_grad():
            for name, p in trainable(self.model).items():
                p.add_(delta[name].to(p.device, p.dtype))
            self.method.after_step(phase, self.model, self.state)
        self.steps += steps
        self.rounds += 1
        losses.update({role: u.loss for role, u in updates.items()})
        self.record({f"{role}_loss": loss for role, loss in losses.items()})

    def gradient_phase(self, phase: Phase, local_steps: int) -> None:
        """A gradient phase: one step per round (k = 1), or rounds of up to ``local_steps`` local steps."""
        if local_steps == 1:
            for _ in range(phase.steps):
                self.step(phase)
            return
        for first in range(0, phase.steps, local_steps):
            self.local_round(phase, min(local_steps, phase.steps - first))


def run_unlearning(
    method: Method,
    model: nn.Module,
    worker: Worker,
    budget: int,
    lr: float,
    reference: Tensors | None = None,
    on_step: StepCallback | None = None,
    local_steps: int = 1,
) -> UnlearnReport:
    """Run ``method`` on ``model`` in place within ``budget`` optimizer steps.

    Every gradient phase draws batch ``k`` of each party's stream at its ``k``-th
    evaluation, so reruns and federated runs see the same batches. With
    ``local_steps > 1`` each round covers up to that many steps of every party
    (``on_step`` is then called once per round, with the steps taken so far).

    Raises:
        ValueError: a budget or ``local_steps`` below 1.
    """
    if budget < 1:
        raise ValueError(f"unlearning budget must be at least 1 step, got {budget}")
    if local_steps < 1:
        raise ValueError(f"local_steps must be at least 1, got {local_steps}")
    start = time.perf_counter()
    state = MethodState(original={k: v.detach().clone() for k, v in model.state_dict().items()}, reference=reference)
    run = _Run(method, model, worker, state, torch.optim.Adam(trainable(model).values(), lr=lr), on_step, lr)
    for phase in method.phases(budget):
        if phase.dampens:
            run.dampen(phase)
            run.rounds += 1
        else:
            run.gradient_phase(phase, local_steps)
    return UnlearnReport(
        method=method.name, steps=run.steps, budget=budget, evaluations=run.calls,
        wall_seconds=time.perf_counter() - start - run.monitoring, bytes_communicated=worker.bytes_communicated(),
        dampened_elements=run.dampened, history=run.history, local_steps=local_steps, rounds=run.rounds,
    )


def planned_callbacks(method: Method, budget: int, local_steps: int = 1) -> int:
    """How many times :func:`run_unlearning` calls ``on_step`` within ``budget``: once per round of
    ``local_steps`` steps (the last may be shorter), once per dampening."""
    return sum(1 if phase.dampens else -(-phase.steps // local_steps) for phase in method.phases(budget))
