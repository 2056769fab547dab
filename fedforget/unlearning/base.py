"""The shape every unlearning method shares, and the one engine that runs them.

A method is written as *who computes what*: in each phase the forget party (the
forget site, on its own data) and the retain party (the retain fraction of the
retain data, at the sites or at the server) each evaluate a loss term on one
batch; the engine turns their gradients into one update with ``combine`` and an
Adam step, or, for dampening methods, turns per-element importances into a
weight scaling. A :class:`Worker` supplies those gradients: :class:`LocalWorker`
computes them in-process (the Flower-free function), the federated protocol
(``strategies.removal``) asks the sites over Flower. The engine is the same, so
both give the same weights for the same data and seed.

With ``local_steps = k > 1`` a gradient phase runs in local rounds: every moving
party takes k Adam steps of its *local term* (its share of the method's objective,
see :meth:`Method.local_term`) from the round's weights and returns the change of
its weights; the server combines the changes with :meth:`Method.combine_updates`.
k = 1 keeps the per-step protocol above (one gradient per party, the server's Adam).
"""

from __future__ import annotations

import copy
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from fedforget.configs.schema import FORGET, RETAIN, UnlearningConfig
from fedforget.data.batches import BatchSource
from fedforget.data.datasets import Batch
from fedforget.learning.checkpoints import State
from fedforget.learning.training import batch_loss, reconstruct
from fedforget.recon.losses import ReconLoss

ROLES = (FORGET, RETAIN)

# Parameter-shaped tensors by name: weights, gradients, importances (the checkpoints' State).
Tensors = State


GRADIENT, IMPORTANCE = "gradient", "importance"  # the kinds of phase
REPAIR = "repair"  # the retain-only phase after an ascent
DAMPENED = "dampened"  # the step record of a dampening (how many elements it changed)


@dataclass(frozen=True)
class Phase:
    """A stretch of a method: ``GRADIENT`` phases take optimizer steps, ``IMPORTANCE`` phases dampen once."""

    name: str
    kind: str
    steps: int
    roles: tuple[str, ...]

    @property
    def dampens(self) -> bool:
        """An importance phase: one exchange of importances, then one dampening (no optimizer steps)."""
        return self.kind == IMPORTANCE


@dataclass
class TermContext:
    """What a party needs besides the model and a batch to evaluate a method's loss term."""

    loss: ReconLoss
    seed: int
    original: nn.Module | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    inputs: RoundInputs = field(default_factory=lambda: RoundInputs())


@dataclass
class RoundInputs:
    """What the server sends with a local round besides the weights.

    ``tensors``: parameter-shaped inputs by name (PGA's ball centre; a guide role's
    direction under the role's name); ``values``: numbers (PGA's radius).
    """

    tensors: dict[str, Tensors] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)

    def to(self, device: torch.device) -> RoundInputs:
        """The same inputs with every tensor on ``device`` (where the party computes)."""
        moved = {name: {k: v.to(device) for k, v in tensors.items()} for name, tensors in self.tensors.items()}
        return RoundInputs(tensors=moved, values=dict(self.values))


class Method(ABC):
    """An unlearning method. Subclasses set ``name`` and implement ``phases`` plus their terms."""

    name: ClassVar[str]
    # The config key (under ``unlearning.``) that moves the method along the forget/retain trade-off.
    tradeoff_knob: ClassVar[str | None] = None
    needs_original: ClassVar[frozenset[str]] = frozenset()
    needs_reference: ClassVar[bool] = False

    def __init__(self, cfg: UnlearningConfig) -> None:
        self.cfg = cfg

    @abstractmethod
    def phases(self, budget: int) -> list[Phase]:
        """Split a budget of ``budget`` optimizer steps into phases."""

    def term(self, role: str, phase: Phase, model: nn.Module, batch: Batch, index: int, ctx: TermContext) -> torch.Tensor:
        """The differentiable loss whose gradient ``role`` contributes (default: reconstruction loss)."""
        return batch_loss(model, batch, ctx.loss)

    def combine(self, phase: Phase, params: Tensors, grads: Mapping[str, Tensors]) -> Tensors:
        """The update direction from the parties' gradients (default: their sum)."""
        return _sum(grads.values())

    def after_step(self, phase: Phase, model: nn.Module, state: MethodState) -> None:
        """A hook after each optimizer step (projections)."""

    def importance_term(self, model: nn.Module, batch: Batch, ctx: TermContext) -> torch.Tensor:
        """The loss whose squared gradient measures a weight's importance."""
        return batch_loss(model, batch, ctx.loss)

    def importance(self, role: str, model: nn.Module, source: BatchSource, batches: int, ctx: TermContext,
                   device: torch.device) -> Tensors:
        """What ``role`` sends in an importance phase: parameter-shaped, from at most one pass over its data
        (default: SSD's squared-gradient importances)."""
        return squared_gradient_mean(self, model, source, batches, ctx, device)

    def step_input_names(self, role: str, phase: Phase) -> tuple[str, ...]:
        """Names of the parameter-shaped inputs :meth:`step_inputs` sends ``role`` with each step's weights."""
        return ()

    def step_inputs(self, role: str, phase: Phase, model: nn.Module, state: MethodState) -> RoundInputs:
        """What ``role`` receives besides the weights in a one-step exchange (soft relabelling's teacher);
        the party's terms read it as ``ctx.inputs``."""
        return RoundInputs()

    def dampen(self, model: nn.Module, importances: Mapping[str, Tensors]) -> int:
        """Scale weights from per-element importances; returns how many elements changed."""
        raise NotImplementedError(f"{self.name} has no importance phase")

    def prepare(self, role: str, ctx: TermContext, template: nn.Module) -> None:
        """Build per-party helpers (a random teacher) into ``ctx.extras``; called once per party."""

    # The local form (``local_steps > 1``): what each party minimises between synchronisations.

    def local_sign(self, role: str, phase: Phase) -> float:
        """+1 where ``role`` descends its term, -1 where it ascends it (the sign ``combine`` gives it)."""
        return 1.0

    def local_penalty(self, role: str, phase: Phase, model: nn.Module) -> torch.Tensor | None:
        """A weights-only term ``role`` adds to its local objective (GA-l1's L1), or None."""
        return None

    def local_term(self, role: str, phase: Phase, model: nn.Module, batch: Batch, index: int,
                   ctx: TermContext) -> tuple[torch.Tensor, torch.Tensor]:
        """``role``'s local objective on one batch, and its term (what the history reports)."""
        term = self.term(role, phase, model, batch, index, ctx)
        objective = term if self.local_sign(role, phase) > 0 else -term
        penalty = self.local_penalty(role, phase, model)
        return (objective if penalty is None else objective + penalty), term

    def guide_roles(self, phase: Phase) -> tuple[str, ...]:
        """Roles that send their mean gradient at the round's weights instead of moving (grad surgery)."""
        return ()

    def round_input_names(self, phase: Phase) -> tuple[str, ...]:
        """Names of the parameter-shaped inputs of :meth:`round_inputs` (besides the guides' directions)."""
        return ()

    def round_inputs(self, phase: Phase, model: nn.Module, state: MethodState) -> RoundInputs:
        """What the movers of a local round receive besides the weights (PGA: its ball)."""
        return RoundInputs()

    def local_gradient(self, role: str, phase: Phase, grads: Tensors, inputs: RoundInputs) -> Tensors:
        """The gradient a local step follows (grad surgery projects it against the guide's direction)."""
        return grads

    def after_local_step(self, role: str, phase: Phase, model: nn.Module, inputs: RoundInputs) -> None:
        """A hook after each local optimizer step (PGA keeps the weights inside its ball)."""

    def combine_updates(self, phase: Phase, deltas: Mapping[str, Tensors]) -> Tensors:
        """The server's update from the moving parties' weight changes (default: their mean)."""
        return _mean(deltas.values())


class AscentThenRepair(Method):
    """Methods that spend ``share`` of the budget moving away from the forget data, then repair on retain data."""

    ascent_name: ClassVar[str]
    ascent_roles: ClassVar[tuple[str, ...]]

    @property
    @abstractmethod
    def share(self) -> float:
        """Fraction of the budget spent in the ascent phase."""

    @abstractmethod
    def ascent_direction(self, grads: Mapping[str, Tensors]) -> Tensors:
        """The update direction of an ascent step."""

    def phases(self, budget: int) -> list[Phase]:
        ascent = max(1, round(budget * self.share)) if budget > 1 else 1
        phases = [Phase(self.ascent_name, GRADIENT, ascent, self.ascent_roles)]
        if budget > ascent:
            phases.append(Phase(REPAIR, GRADIENT, budget - ascent, (RETAIN,)))
        return phases

    def combine(self, phase: Phase, params: Tensors, grads: Mapping[str, Tensors]) -> Tensors:
        if phase.name == REPAIR:
            return {k: g.clone() for k, g in grads[RETAIN].items()}
        return self.ascent_direction(grads)

    def local_sign(self, role: str, phase: Phase) -> float:
        return -1.0 if role == FORGET else 1.0


@dataclass
class MethodState:
    """Engine-side state a method may read in ``after_step``."""

    original: Tensors
    reference: Tensors | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class Gradients:
    """One party's gradient of its term on one batch (sites may average several)."""

    grads: Tensors
    loss: float
    examples: int


@dataclass
class LocalUpdate:
    """One party's local round: the change of its weights, its mean term, the examples behind it."""

    delta: Tensors
    loss: float
    examples: int


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


def trainable(model: nn.Module) -> Tensors:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _sum(parts: Any) -> Tensors:
    parts = list(parts)
    total = {k: v.clone() for k, v in parts[0].items()}
    for part in parts[1:]:
        for k, v in part.items():
            total[k] += v
    return total


def _mean(parts: Any) -> Tensors:
    parts = list(parts)
    if len(parts) == 1:
        return {k: v.clone() for k, v in parts[0].items()}
    return {k: v / len(parts) for k, v in _sum(parts).items()}


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


def term_gradients(method: Method, role: str, phase: Phase, model: nn.Module, batch: Batch, index: int,
                   ctx: TermContext) -> Gradients:
    """Gradient of ``role``'s term on one batch: the computation a site performs."""
    model.train()
    model.zero_grad(set_to_none=True)
    loss = method.term(role, phase, model, batch, index, ctx)
    loss.backward()
    grads = {name: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
             for name, p in trainable(model).items()}
    model.zero_grad(set_to_none=True)
    return Gradients(grads=grads, loss=float(loss.detach()), examples=batch.size)


def mean_term_gradient(method: Method, role: str, phase: Phase, model: nn.Module, source: BatchSource, first: int,
                       steps: int, ctx: TermContext, device: torch.device) -> Gradients:
    """Mean gradient of ``role``'s term over batches ``first .. first + steps - 1`` at fixed weights (a guide)."""
    total: Tensors = {}
    loss, examples = 0.0, 0
    for index in range(first, first + steps):
        batch = source.batch(index).to(device)
        reply = term_gradients(method, role, phase, model, batch, index, ctx)
        total = reply.grads if not total else {k: total[k] + g for k, g in reply.grads.items()}
        loss += reply.loss
        examples += reply.examples
    return Gradients(grads={k: g / steps for k, g in total.items()}, loss=loss / steps, examples=examples)


def local_update(method: Method, role: str, phase: Phase, model: nn.Module, source: BatchSource, first: int,
                 steps: int, ctx: TermContext, lr: float, inputs: RoundInputs, device: torch.device) -> LocalUpdate:
    """``steps`` Adam steps of ``role``'s local term on batches ``first ..``: a party's work in a local round.

    The optimizer is fresh each round (as in FedAvg training): a party keeps no state
    between rounds, so a deployed site, which starts a new process per message, does
    exactly what a simulated one does. ``model`` is moved in place.
    """
    model.train()
    ctx.inputs = inputs
    params = trainable(model)
    start = {name: p.detach().clone() for name, p in params.items()}
    optimizer = torch.optim.Adam(params.values(), lr=lr)
    loss, examples = torch.zeros((), device=device), 0
    for index in range(first, first + steps):
        batch = source.batch(index).to(device)
        optimizer.zero_grad(set_to_none=True)
        objective, term = method.local_term(role, phase, model, batch, index, ctx)
        objective.backward()
        grads = {name: (p.grad if p.grad is not None else torch.zeros_like(p)) for name, p in params.items()}
        followed = method.local_gradient(role, phase, grads, inputs)
        for name, p in params.items():
            p.grad = followed[name]
        optimizer.step()
        with torch.no_grad():
            method.after_local_step(role, phase, model, inputs)
        loss += term.detach()
        examples += batch.size
    model.zero_grad(set_to_none=True)
    delta = {name: p.detach() - start[name] for name, p in params.items()}
    return LocalUpdate(delta=delta, loss=float(loss) / steps, examples=examples)  # one host sync per round


def squared_gradient_mean(method: Method, model: nn.Module, source: BatchSource, batches: int,
                          ctx: TermContext, device: torch.device) -> Tensors:
    """Per-element importance: mean over batches of the squared gradient of the batch loss (SSD)."""
    model.train()
    total = {name: torch.zeros_like(p) for name, p in trainable(model).items()}
    for k in range(batches):
        batch = source.batch(k).to(device)
        model.zero_grad(set_to_none=True)
        method.importance_term(model, batch, ctx).backward()
        for name, p in trainable(model).items():
            if p.grad is not None:
                total[name] += p.grad.detach() ** 2
    model.zero_grad(set_to_none=True)
    return {name: value / max(batches, 1) for name, value in total.items()}


class LocalWorker:
    """Both parties in one process: the Flower-free form of every method."""

    def __init__(self, method: Method, sources: Mapping[str, BatchSource], ctx: TermContext,
                 device: torch.device | str = "cpu") -> None:
        self.method = method
        self.sources = dict(sources)
        self.ctx = ctx
        self.device = torch.device(device)
        self._prepared: set[str] = set()

    def _context(self, role: str, model: nn.Module) -> TermContext:
        if role not in self._prepared:
            self.method.prepare(role, self.ctx, model)
            self._prepared.add(role)
        return self.ctx

    def gradients(self, phase: Phase, indices: Mapping[str, int], model: nn.Module,
                  inputs: Mapping[str, RoundInputs] | None = None) -> dict[str, Gradients]:
        replies = {}
        for role, index in indices.items():
            ctx = self._context(role, model)
            ctx.inputs = (inputs or {}).get(role, RoundInputs()).to(self.device)
            batch = self.sources[role].batch(index).to(self.device)
            replies[role] = term_gradients(self.method, role, phase, model, batch, index, ctx)
        return replies

    def importances(self, phase: Phase, batches: Mapping[str, int], model: nn.Module) -> dict[str, Tensors]:
        return {role: self.method.importance(role, model, self.sources[role], count, self._context(role, model),
                                             self.device)
                for role, count in batches.items()}

    def mean_gradients(self, phase: Phase, starts: Mapping[str, int], steps: int,
                       model: nn.Module) -> dict[str, Gradients]:
        return {role: mean_term_gradient(self.method, role, phase, model, self.sources[role], first, steps,
                                         self._context(role, model), self.device)
                for role, first in starts.items()}

    def local_updates(self, phase: Phase, starts: Mapping[str, int], steps: int, model: nn.Module,
                      inputs: RoundInputs, lr: float) -> dict[str, LocalUpdate]:
        # Each party starts from the round's weights: a copy each, as a site loads them from its message.
        return {role: local_update(self.method, role, phase, copy.deepcopy(model), self.sources[role], first,
                                   steps, self._context(role, model), lr, inputs, self.device)
                for role, first in starts.items()}

    def available_batches(self, role: str) -> int:
        return self.sources[role].batches_per_pass

    def bytes_communicated(self) -> int:
        return 0


def frozen_copy(model: nn.Module) -> nn.Module:
    """A detached, frozen copy (the original model that bad-teacher distils from)."""
    twin = copy.deepcopy(model)
    twin.eval()
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


def output_of(model: nn.Module, batch: Batch) -> torch.Tensor:
    """The model's cropped reconstruction of a batch."""
    return reconstruct(model, batch)[0]
