"""Flower-free unlearning methods: one module each, two registries, one signature per family.

Centralised methods (:data:`REGISTRY`) run through :func:`unlearn` (in-process) or the federated
client-removal protocol (``fedforget.strategies.removal``); both drive the same engine
(:func:`fedforget.unlearning.base.run_unlearning`). History-based methods
(:data:`HISTORY_REGISTRY`) run through :func:`unlearn_from_history` with a
:class:`~fedforget.unlearning.history_base.LocalRoundWorker` (in-process) or the federated round
worker (``fedforget.strategies.replay``); both drive
:func:`fedforget.unlearning.history_base.run_history_method`.
"""

from __future__ import annotations

from torch import nn

from fedforget.configs.schema import UnlearningConfig
from fedforget.data.batches import BatchSource
from fedforget.recon.losses import ReconLoss
from fedforget.unlearning.activation_pruning import ActivationPruning
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
from fedforget.unlearning.boundary_relabel import BoundaryRelabel
from fedforget.unlearning.federaser import FedEraser
from fedforget.unlearning.fedrecover import FedRecover
from fedforget.unlearning.ft import FineTune
from fedforget.unlearning.fukd import FUKD
from fedforget.unlearning.ga import GradientAscent
from fedforget.unlearning.ga_l1 import GAL1, GAL1FT
from fedforget.unlearning.grad_surgery import GradSurgery
from fedforget.unlearning.history_base import HistoryMethod, HistoryReport, HistoryRun, run_history_method
from fedforget.unlearning.nl import NLFT, NoisyLabels
from fedforget.unlearning.pga import PGA
from fedforget.unlearning.puf import PUF
from fedforget.unlearning.retrain_budget import RetrainBudget
from fedforget.unlearning.rollback import Rollback
from fedforget.unlearning.sifu import SIFU
from fedforget.unlearning.soft_relabel import SoftRelabel
from fedforget.unlearning.ssd import LFSSD, SSD

REGISTRY: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (FineTune, GradientAscent, GAL1, GAL1FT, NoisyLabels, NLFT, SSD, LFSSD, BadTeacher, GradSurgery, PGA,
                ActivationPruning, SoftRelabel, BoundaryRelabel)
}


HISTORY_REGISTRY: dict[str, type[HistoryMethod]] = {
    cls.name: cls for cls in (FedEraser, SIFU, FedRecover, FUKD, PUF, RetrainBudget, Rollback)
}
# ``retrain_budget@<fraction>``: retraining with that fraction of the oracle's site compute.
VARIANT = "@"


def is_history_method(name: str) -> bool:
    """Whether ``name`` (a registry name, or ``retrain_budget@...``) is a history-based method."""
    return name.partition(VARIANT)[0] in HISTORY_REGISTRY


def get_history_method(name: str, cfg: UnlearningConfig, fraction: float | None = None) -> HistoryMethod:
    """Instantiate a history-based method; ``retrain_budget@0.1`` (or ``fraction``) sets retraining's budget.

    Raises:
        ValueError: unknown name, or a variant that is not a fraction in (0, 1].
    """
    base, _, variant = name.partition(VARIANT)
    if base not in HISTORY_REGISTRY:
        raise ValueError(f"unknown history-based method {name!r}: expected one of {sorted(HISTORY_REGISTRY)}")
    if base != RetrainBudget.name:
        if variant:
            raise ValueError(f"method {base!r} takes no @variant (only retrain_budget@<fraction> does)")
        return HISTORY_REGISTRY[base](cfg)
    if variant and fraction is None:
        try:
            fraction = float(variant)
        except ValueError:
            raise ValueError(f"{name!r}: expected retrain_budget@<fraction of retraining's compute>") from None
    return RetrainBudget(cfg, fraction)


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


def unlearn_from_history(name: str, run: HistoryRun, fraction: float | None = None) -> tuple[Tensors, HistoryReport]:
    """Run history-based method ``name`` on ``run`` (Flower-free with a ``LocalRoundWorker``): the
    unlearned weights and what the removal cost."""
    return run_history_method(get_history_method(name, run.unlearning, fraction), run)


__all__ = ["FORGET", "HISTORY_REGISTRY", "REGISTRY", "RETAIN", "HistoryRun", "Method", "UnlearnReport",
           "get_history_method", "get_method", "is_history_method", "unlearn", "unlearn_from_history"]
