"""NL and NL-FT: noisy labels on the forget data (paper 000, eq. 3 and Algorithm 2).

Forget targets become ``y + lam * N(0, I)``. Zero-mean noise makes this a Noise2Noise
objective whose optimum is still the clean target, so on its own it keeps learning the
forget data; the original code's half-normal noise (``distribution=half_normal``) adds
a bias that does push the model away from it. With ``relative=True`` the noise is
scaled by each slice's max value, so ``lam`` means the same for any intensity scale
(the paper's absolute 1e-5 is negligible next to synthetic images of max ~1). The
noise is drawn from a generator seeded by (seed, batch index): a site and a
Flower-free run add the same noise.
"""

from __future__ import annotations

import torch
from torch import nn

from fedforget.data.datasets import Batch
from fedforget.learning.training import reconstruct
from fedforget.unlearning.base import FORGET, GRADIENT, RETAIN, Method, Phase, TermContext


def noisy_targets(target: torch.Tensor, max_value: torch.Tensor, lam: float, relative: bool, seed: int,
                  index: int, distribution: str = "gaussian") -> torch.Tensor:
    """``target + lam * N(0, I)`` (times each slice's max when ``relative``), reproducible per batch.

    ``distribution="half_normal"`` uses ``|N(0, I)|``, the Erase-to-Enhance code's variant.
    """
    generator = torch.Generator().manual_seed(seed * 7919 + index)
    noise = torch.randn(target.shape, generator=generator).to(target.device)
    if distribution == "half_normal":
        noise = noise.abs()
    scale = max_value.view(-1, 1, 1) if relative else 1.0
    return target + lam * scale * noise


class NoisyLabels(Method):
    name = "nl"
    roles: tuple[str, ...] = (FORGET,)

    def phases(self, budget: int) -> list[Phase]:
        return [Phase("noisy_labels", GRADIENT, budget, self.roles)]

    def term(self, role: str, phase: Phase, model: nn.Module, batch: Batch, index: int,
             ctx: TermContext) -> torch.Tensor:
        if role != FORGET:
            return super().term(role, phase, model, batch, index, ctx)
        nl = self.cfg.nl
        output, target = reconstruct(model, batch)
        noisy = noisy_targets(target, batch.max_value, nl.lam, nl.relative, ctx.seed, index, nl.distribution)
        return ctx.loss(output.float(), noisy, batch.max_value)


class NLFT(NoisyLabels):
    name = "nl_ft"
    roles = (FORGET, RETAIN)
