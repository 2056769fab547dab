"""GA-l1 and GA-l1-FT (paper 000, eq. 2 and Algorithm 1).

The loss is ``-J(forget) + gamma * ||theta||_1 / N`` (N = number of weights), plus
``J(retain)`` for the -FT form. The paper writes ``-J + gamma ||theta||_1``; its code
used ``-2J + ||theta||_1`` over all 30M weights, whose sign(theta) gradient dwarfs
the data term under Adam and shrinks every weight at the learning rate, the
collapse to PSNR 0 in its Table 2. Dividing by N makes gamma mean "penalty on the
mean absolute weight", comparable across model sizes.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fedforget.unlearning.base import FORGET, RETAIN, Method, Phase, Tensors


def l1_gradient(params: Tensors, gamma: float) -> Tensors:
    """Gradient of ``gamma * mean|theta|`` over all trainable weights."""
    count = sum(p.numel() for p in params.values())
    return {name: torch.sign(p) * (gamma / count) for name, p in params.items()}


class GAL1(Method):
    name = "ga_l1"
    roles: tuple[str, ...] = (FORGET,)

    def phases(self, budget: int) -> list[Phase]:
        return [Phase("ascent", "gradient", budget, self.roles)]

    def combine(self, phase: Phase, params: Tensors, grads: Mapping[str, Tensors]) -> Tensors:
        l1 = l1_gradient(params, self.cfg.ga_l1.gamma)
        direction = {name: l1[name] - g for name, g in grads[FORGET].items()}
        if RETAIN in grads:
            for name, g in grads[RETAIN].items():
                direction[name] += g
        return direction


class GAL1FT(GAL1):
    name = "ga_l1_ft"
    roles = (FORGET, RETAIN)
