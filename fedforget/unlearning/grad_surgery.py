"""Gradient surgery (paper 004, eq. 3): ascend the part of the forget gradient orthogonal to
the retain gradient, then fine-tune on retain data.

The projection is over the whole flattened parameter vector (one Gram-Schmidt step).
``grad_surgery.conditional`` projects only when the two gradients conflict, as in PCGrad
(Yu et al. 2020): ascending the forget loss along ``g_f`` changes the retain loss by
``g_f . g_r``, so a positive dot product means the ascent would also raise the retain loss.

Local form (``local_steps = k > 1``): each ascent round, the retain party sends its mean
gradient over the round's k batches at the round's weights; the server passes it to the
forget site, which takes k ascent steps, each along its own gradient projected against
that retain direction. The repair phase is retain fine-tuning in local rounds.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fedforget.unlearning.base import FORGET, RETAIN, AscentThenRepair, Phase, RoundInputs, Tensors


def dot(a: Tensors, b: Tensors) -> torch.Tensor:
    """The inner product of two parameter-shaped vectors over all entries."""
    return sum(torch.sum(a[k] * b[k]) for k in a)


def orthogonal_to(vector: Tensors, basis: Tensors) -> Tensors:
    """``vector - (vector . basis / basis . basis) basis`` over all entries."""
    norm = dot(basis, basis)
    if float(norm) == 0.0:
        return {k: v.clone() for k, v in vector.items()}
    coefficient = dot(vector, basis) / norm
    return {k: vector[k] - coefficient * basis[k] for k in vector}


def surgery(forget: Tensors, retain: Tensors, conditional: bool) -> Tensors:
    """The forget gradient to ascend: projected orthogonal to ``retain`` (always, or only on conflict)."""
    if conditional and float(dot(forget, retain)) <= 0.0:
        return {k: v.clone() for k, v in forget.items()}
    return orthogonal_to(forget, retain)


class GradSurgery(AscentThenRepair):
    name = "grad_surgery"
    tradeoff_knob = "grad_surgery.ascent_share"
    ascent_name = "orthogonal_ascent"
    ascent_roles = (FORGET, RETAIN)

    @property
    def share(self) -> float:
        return self.cfg.grad_surgery.ascent_share

    def ascent_direction(self, grads: Mapping[str, Tensors]) -> Tensors:
        projected = surgery(grads[FORGET], grads[RETAIN], self.cfg.grad_surgery.conditional)
        return {k: -g for k, g in projected.items()}

    def guide_roles(self, phase: Phase) -> tuple[str, ...]:
        return (RETAIN,) if phase.name == self.ascent_name else ()

    def local_gradient(self, role: str, phase: Phase, grads: Tensors, inputs: RoundInputs) -> Tensors:
        if role != FORGET or phase.name != self.ascent_name:
            return grads
        # The local objective is -J(forget): its gradient is -g_f, and surgery is linear in its first argument.
        ascent = surgery({k: -g for k, g in grads.items()}, inputs.tensors[RETAIN], self.cfg.grad_surgery.conditional)
        return {k: -g for k, g in ascent.items()}
