"""Gradient surgery (paper 004, eq. 3): ascend the part of the forget gradient orthogonal to
the retain gradient, then fine-tune on retain data.

The projection is over the whole flattened parameter vector (one Gram-Schmidt step).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fedforget.unlearning.base import FORGET, RETAIN, Method, Phase, Tensors


def orthogonal_to(vector: Tensors, basis: Tensors) -> Tensors:
    """``vector - (vector . basis / basis . basis) basis`` over all entries."""
    dot = sum(torch.sum(vector[k] * basis[k]) for k in vector)
    norm = sum(torch.sum(basis[k] * basis[k]) for k in basis)
    if float(norm) == 0.0:
        return {k: v.clone() for k, v in vector.items()}
    coefficient = dot / norm
    return {k: vector[k] - coefficient * basis[k] for k in vector}


class GradSurgery(Method):
    name = "grad_surgery"

    def phases(self, budget: int) -> list[Phase]:
        ascent = max(1, round(budget * self.cfg.grad_surgery.ascent_share)) if budget > 1 else 1
        phases = [Phase("orthogonal_ascent", "gradient", ascent, (FORGET, RETAIN))]
        if budget > ascent:
            phases.append(Phase("repair", "gradient", budget - ascent, (RETAIN,)))
        return phases

    def combine(self, phase: Phase, params: Tensors, grads: Mapping[str, Tensors]) -> Tensors:
        if phase.name == "repair":
            return {k: g.clone() for k, g in grads[RETAIN].items()}
        return {k: -g for k, g in orthogonal_to(grads[FORGET], grads[RETAIN]).items()}
