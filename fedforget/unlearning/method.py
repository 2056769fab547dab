"""What an unlearning method is: its phases, the loss terms each party evaluates, and how they combine.

A method (:class:`Method`) is written as *who computes what*: it splits a budget of
optimizer steps into phases (:class:`Phase`); in each phase the forget party and the
retain party each evaluate a loss term (:meth:`Method.term`) on one batch, and
:meth:`Method.combine` turns their gradients into one update direction; a dampening
method's importance phase exchanges per-element importances instead
(:meth:`Method.importance`, :meth:`Method.dampen`). The local form
(``local_steps > 1``) adds each party's local objective and how the server combines
weight changes. Nothing here runs a method: the engine (:mod:`.engine`) does, and the
parties' computations are in :mod:`.party`.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

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

    def term(self, role: str, phase: Phase, model: nn.Module, batch: Batch, index: int,
             ctx: TermContext) -> torch.Tensor:
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
        from fedforget.unlearning.party import squared_gradient_mean  # here: party builds on this module

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
