"""Soft relabelling (paper 004, sec. 3.1), federated regression form.

The paper gives each forget sample a soft label: the labels of the retain samples weighted by
their similarity to it, i.e. what the retain data would teach about that input. Retain targets
cannot travel to the forget site, so here the retain data teaches through a model:

1. ``teacher_share`` of the budget fine-tunes the model on retain data only; the result, the
   *retain teacher*, is frozen and sent to the forget site with every later step.
2. At the forget site, each forget slice's new target is a similarity-weighted combination of
   the retain teacher's reconstruction ``T(x)`` and the zero-filled reconstruction ``Z(x)``, the
   answer of a model that learned nothing: ``a T(x) + (1 - a) Z(x)`` with ``a = exp(-e / temperature)``
   and ``e`` the normalised squared error of ``T(x)`` against the slice's own fully sampled target.
   ``e`` measures similarity to the retain data in the one feature space the forget site can
   compute without retain data: how well what the retain data taught explains this slice. A slice
   like the retain data keeps the teacher's answer; an unlike one is pushed towards knowing nothing,
   as a model retrained without the site would be.
3. The rest of the budget fine-tunes on those targets at the forget site and on retain data.

Kept: targets built only from retain knowledge, softened by similarity, then plain fine-tuning.
Changed: the weights run over two candidates (retain knowledge, no knowledge) instead of over retain
samples, and similarity is the teacher's fit instead of an embedding distance. ``temperature`` is the
trade-off knob: small values forget harder (targets near zero-filled), large ones approach distilling
the retain teacher.
"""

from __future__ import annotations

import torch
from torch import nn

from fedforget.data.datasets import Batch
from fedforget.learning.evaluation import zero_filled
from fedforget.unlearning.base import (
    FORGET,
    GRADIENT,
    RETAIN,
    Method,
    MethodState,
    Phase,
    RoundInputs,
    Tensors,
    TermContext,
    frozen_copy,
    output_of,
)

TEACHER = "teacher"
TEACHING, RELABELLED = "retain_teacher", "soft_relabel"


def similarity_weights(teacher: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """``exp(-e / temperature)`` per slice, ``e`` the teacher's squared error normalised by the target's energy."""
    error = (teacher - target).pow(2).flatten(1).sum(1) / target.pow(2).flatten(1).sum(1).clamp(min=1e-12)
    return torch.exp(-error / temperature)


def soft_targets(teacher: torch.Tensor, zero_filled_image: torch.Tensor, target: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    """Each slice's soft label: ``a T + (1 - a) Z`` with ``a`` from :func:`similarity_weights`."""
    a = similarity_weights(teacher, target, temperature).view(-1, 1, 1)
    return a * teacher + (1 - a) * zero_filled_image


class SoftRelabel(Method):
    name = "soft_relabel"
    tradeoff_knob = "soft_relabel.temperature"

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.teacher: Tensors | None = None

    def phases(self, budget: int) -> list[Phase]:
        if budget < 2:
            return [Phase(RELABELLED, GRADIENT, budget, (FORGET, RETAIN))]
        teaching = min(budget - 1, max(1, round(budget * self.cfg.soft_relabel.teacher_share)))
        return [Phase(TEACHING, GRADIENT, teaching, (RETAIN,)),
                Phase(RELABELLED, GRADIENT, budget - teaching, (FORGET, RETAIN))]

    def step_input_names(self, role: str, phase: Phase) -> tuple[str, ...]:
        return (TEACHER,) if role == FORGET and phase.name == RELABELLED else ()

    def step_inputs(self, role: str, phase: Phase, model: nn.Module, state: MethodState) -> RoundInputs:
        if not self.step_input_names(role, phase):
            return RoundInputs()
        return RoundInputs(tensors={TEACHER: self._teacher_of(model)})

    def round_input_names(self, phase: Phase) -> tuple[str, ...]:
        return (TEACHER,) if phase.name == RELABELLED else ()

    def round_inputs(self, phase: Phase, model: nn.Module, state: MethodState) -> RoundInputs:
        return RoundInputs(tensors={TEACHER: self._teacher_of(model)}) if phase.name == RELABELLED else RoundInputs()

    def _teacher_of(self, model: nn.Module) -> Tensors:
        """The retain teacher: the weights when relabelling begins, i.e. after the retain-only phase."""
        if self.teacher is None:
            self.teacher = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return self.teacher

    def prepare(self, role: str, ctx: TermContext, template: nn.Module) -> None:
        if role == FORGET and TEACHER not in ctx.extras:
            ctx.extras[TEACHER] = frozen_copy(template)

    def term(self, role: str, phase: Phase, model: nn.Module, batch: Batch, index: int,
             ctx: TermContext) -> torch.Tensor:
        if role == RETAIN:
            return super().term(role, phase, model, batch, index, ctx)
        if TEACHER not in ctx.inputs.tensors:
            raise ValueError("soft_relabel: the forget party received no retain teacher")
        teacher = ctx.extras[TEACHER].to(batch.target.device)
        teacher.load_state_dict(ctx.inputs.tensors[TEACHER])
        output = output_of(model, batch).float()
        with torch.no_grad():
            taught = output_of(teacher, batch).float()
            empty, target = zero_filled(batch)
            labels = soft_targets(taught, empty.float(), target.float(), self.cfg.soft_relabel.temperature)
        return ctx.loss(output, labels, batch.max_value)
