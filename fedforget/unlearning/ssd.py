"""SSD (Foster et al. 2023) for reconstruction, and its label-free variant LF-SSD.

Importance of a weight element = mean over batches of the squared gradient of the
batch loss, on the forget data (I_f) and on the reachable retain data (I_r).
Elements with ``I_f > alpha * I_r`` are multiplied by ``min(lam * I_r / I_f, 1)``;
nothing else changes, and no |weight| grows. alpha and lam are ratios, so the
loss scale cancels. LF-SSD (Foster et al. 2024) replaces the loss by the squared
l2 norm of the model output, needing no targets.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from fedforget.configs.schema import SSDConfig
from fedforget.data.datasets import Batch
from fedforget.unlearning.base import (
    FORGET,
    IMPORTANCE,
    RETAIN,
    Method,
    Phase,
    Tensors,
    TermContext,
    output_of,
    trainable,
)


def dampen_weights(model: nn.Module, forget: Tensors, retain: Tensors, alpha: float, lam: float) -> int:
    """Apply SSD's selection and dampening in place; returns the number of dampened elements."""
    changed = 0
    for name, p in trainable(model).items():
        i_f, i_r = forget[name].to(p.device), retain[name].to(p.device)
        selected = i_f > alpha * i_r
        beta = torch.clamp(lam * i_r / torch.where(selected, i_f, torch.ones_like(i_f)), max=1.0)
        p.mul_(torch.where(selected, beta, torch.ones_like(beta)))
        changed += int(selected.sum())
    return changed


class SSD(Method):
    name = "ssd"

    @property
    def settings(self) -> SSDConfig:
        return self.cfg.ssd

    def phases(self, budget: int) -> list[Phase]:
        return [Phase("dampen", IMPORTANCE, budget, (FORGET, RETAIN))]

    def dampen(self, model: nn.Module, importances: Mapping[str, Tensors]) -> int:
        return dampen_weights(model, importances[FORGET], importances[RETAIN], self.settings.alpha, self.settings.lam)


class LFSSD(SSD):
    name = "lfssd"

    @property
    def settings(self) -> SSDConfig:
        return self.cfg.lfssd

    def importance_term(self, model: nn.Module, batch: Batch, ctx: TermContext) -> torch.Tensor:
        output = output_of(model, batch).float()
        return (output / batch.max_value.view(-1, 1, 1)).pow(2).mean()
