"""GA-l1 and GA-l1-FT (paper 000, eq. 2 and Algorithm 1).

The loss is ``-J(forget) + gamma * ||theta||_1 / N`` (N = number of weights), plus
``J(retain)`` for the -FT form. The paper writes ``-J + gamma ||theta||_1``; its code
used ``-2J + ||theta||_1`` over all 30M weights, whose sign(theta) gradient dwarfs
the data term under Adam and shrinks every weight at the learning rate, the
collapse to PSNR 0 in its Table 2. Dividing by N makes gamma mean "penalty on the
mean absolute weight", comparable across model sizes.

In local rounds the forget site minimises ``-J(forget) + gamma * mean|theta|`` (the
penalty needs only the weights, and is counted once, at the forget party) and the
retain party ``J(retain)``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from fedforget.unlearning.base import FORGET, GRADIENT, RETAIN, Method, Phase, Tensors, trainable


def l1_gradient(params: Tensors, gamma: float) -> Tensors:
    """Gradient of ``gamma * mean|theta|`` over all trainable weights."""
    count = sum(p.numel() for p in params.values())
    return {name: torch.sign(p) * (gamma / count) for name, p in params.items()}


def l1_penalty(model: nn.Module, gamma: float) -> torch.Tensor:
    """``gamma * mean|theta|`` over all trainable weights (its gradient is :func:`l1_gradient`)."""
    params = trainable(model)
    count = sum(p.numel() for p in params.values())
    return sum(p.abs().sum() for p in params.values()) * (gamma / count)


class GAL1(Method):
    name = "ga_l1"
    roles: tuple[str, ...] = (FORGET,)

    def phases(self, budget: int) -> list[Phase]:
        return [Phase("ascent", GRADIENT, budget, self.roles)]

    def combine(self, phase: Phase, params: Tensors, grads: Mapping[str, Tensors]) -> Tensors:
        l1 = l1_gradient(params, self.cfg.ga_l1.gamma)
        direction = {name: l1[name] - g for name, g in grads[FORGET].items()}
        if RETAIN in grads:
            for name, g in grads[RETAIN].items():
                direction[name] += g
        return direction

    def local_sign(self, role: str, phase: Phase) -> float:
        return -1.0 if role == FORGET else 1.0

    def local_penalty(self, role: str, phase: Phase, model: nn.Module) -> torch.Tensor | None:
        return l1_penalty(model, self.cfg.ga_l1.gamma) if role == FORGET else None


class GAL1FT(GAL1):
    name = "ga_l1_ft"
    roles = (FORGET, RETAIN)
