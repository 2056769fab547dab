"""GA: gradient ascent on the forget loss (Halimi et al. 2022; paper 001 sec. 3.2)."""

from __future__ import annotations

from collections.abc import Mapping

from fedforget.unlearning.base import FORGET, GRADIENT, Method, Phase, Tensors


def negated(grads: Tensors) -> Tensors:
    return {name: -g for name, g in grads.items()}


class GradientAscent(Method):
    name = "ga"

    def phases(self, budget: int) -> list[Phase]:
        return [Phase("ascent", GRADIENT, budget, (FORGET,))]

    def combine(self, phase: Phase, params: Tensors, grads: Mapping[str, Tensors]) -> Tensors:
        return negated(grads[FORGET])

    def local_sign(self, role: str, phase: Phase) -> float:
        return -1.0
