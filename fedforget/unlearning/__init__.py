"""Flower-free unlearning methods: one module each, one registry, one signature.

Every method runs through :func:`unlearn` (in-process) or the federated
client-removal protocol (``fedforget.strategies.removal``); both drive the same
engine (:func:`fedforget.unlearning.base.run_unlearning`).
"""

from __future__ import annotations

from torch import nn

from fedforget.configs.schema import UnlearningConfig
from fedforget.data.batches import BatchSource
from fedforget.recon.losses import ReconLoss
from fedforget.unlearning.bad_teacher import BadTeacher
from fedforget.unlearning.base import (
    FORGET,
    RETAIN,
    LocalWorker,
    Method,
    StepCallback,
    Tensors,
    TermContext,
    UnlearnReport,
    frozen_copy,
    run_unlearning,
)
from fedforget.unlearning.ft import FineTune
from fedforget.unlearning.ga import GradientAscent
from fedforget.unlearning.ga_l1 import GAL1, GAL1FT
from fedforget.unlearning.grad_surgery import GradSurgery
from fedforget.unlearning.nl import NLFT, NoisyLabels
from fedforget.unlearning.pga import PGA
from fedforget.unlearning.ssd import LFSSD, SSD

REGISTRY: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (FineTune, GradientAscent, GAL1, GAL1FT, NoisyLabels, NLFT, SSD, LFSSD, BadTeacher, GradSurgery, PGA)
}


def get_method(name: str, cfg: UnlearningConfig) -> Method:
    """Instantiate a registered method.

    Raises:
        ValueError: unknown name; the message lists the registered ones.
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown unlearning method {name!r}: expected one of {sorted(REGISTRY)}")
    return REGISTRY[name](cfg)


def unlearn(
    name: str,
    model: nn.Module,
    forget: BatchSource,
    retain: BatchSource,
    cfg: UnlearningConfig,
    budget: int,
    seed: int,
    loss: ReconLoss,
    reference: Tensors | None = None,
    device: str = "cpu",
    on_step: StepCallback | None = None,
) -> UnlearnReport:
    """Run method ``name`` on ``model`` in place, Flower-free: the uniform signature of every method.

    ``cfg.local_steps`` chooses the per-step form (1) or local rounds, as in the federation.
    """
    method = get_method(name, cfg)
    original = frozen_copy(model) if method.needs_original else None
    ctx = TermContext(loss=loss, seed=seed, original=original)
    worker = LocalWorker(method, {FORGET: forget, RETAIN: retain}, ctx, device)
    return run_unlearning(method, model, worker, budget, cfg.lr, reference=reference, on_step=on_step,
                          local_steps=cfg.local_steps)


__all__ = ["FORGET", "REGISTRY", "RETAIN", "Method", "UnlearnReport", "get_method", "unlearn"]
