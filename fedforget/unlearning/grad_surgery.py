"""Gradient surgery (paper 004, eq. 3): ascend the part of the forget gradient orthogonal to
the retain gradient, then fine-tune on retain data.

The projection is over the whole flattened parameter vector (one Gram-Schmidt step).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fedforget.unlearning.base import FORGET, RETAIN, AscentThenRepair, Tensors


def orthogonal_to(vector: Tensors, basis: Tensors) -> Tensors:
    """``vector - (vector . basis / basis . basis) basis`` over all entries."""
    dot = sum(torch.sum(vector[k] * basis[k]) for k in vector)
    norm = sum(torch.sum(basis[k] * basis[k]) for k in basis)
    if float(norm) == 0.0:
        return {k: v.clone() for k, v in vector.items()}
    coefficient = dot / norm
    return {k: vector[k] - coefficient * basis[k] for k in vector}


class GradSurgery(AscentThenRepair):
    name = "grad_surgery"
    ascent_name = "orthogonal_ascent"
    ascent_roles = (FORGET, RETAIN)

    @property
    def share(self) -> float:
        return self.cfg.grad_surgery.ascent_share

    def ascent_direction(self, grads: Mapping[str, Tensors]) -> Tensors:
        return {k: -g for k, g in orthogonal_to(grads[FORGET], grads[RETAIN]).items()}
