"""The shape every unlearning method shares, and the one engine that runs them: the names in one place.

A method is written as *who computes what*: in each phase the forget party (the
forget site, on its own data) and the retain party (the retain fraction of the
retain data, at the sites or at the server) each evaluate a loss term on one
batch; the engine turns their gradients into one update with ``combine`` and an
Adam step, or, for dampening methods, turns per-element importances into a
weight scaling. A :class:`Worker` supplies those gradients: :class:`LocalWorker`
computes them in-process (the Flower-free function), the federated protocol
(``strategies.removal``) asks the sites over Flower. The engine is the same, so
both give the same weights for the same data and seed.

Three modules, re-exported here so that ``from fedforget.unlearning.base import X`` keeps working:

* :mod:`fedforget.unlearning.method`: what a method is (``Method``, ``AscentThenRepair``,
  ``Phase``, ``TermContext``, ``RoundInputs``, ``MethodState``, the helpers methods use);
* :mod:`fedforget.unlearning.engine`: the engine (``run_unlearning``, ``planned_callbacks``,
  ``UnlearnReport``, the ``Worker`` protocol);
* :mod:`fedforget.unlearning.party`: what a party computes on its own data (``term_gradients``,
  ``mean_term_gradient``, ``local_update``, ``squared_gradient_mean``, ``LocalWorker``).
"""

from __future__ import annotations

from fedforget.unlearning.engine import StepCallback, UnlearnReport, Worker, planned_callbacks, run_unlearning
from fedforget.unlearning.method import (
    DAMPENED,
    FORGET,
    GRADIENT,
    IMPORTANCE,
    REPAIR,
    RETAIN,
    ROLES,
    AscentThenRepair,
    Method,
    MethodState,
    Phase,
    RoundInputs,
    Tensors,
    TermContext,
    frozen_copy,
    output_of,
    trainable,
)
from fedforget.unlearning.party import (
    Gradients,
    LocalUpdate,
    LocalWorker,
    local_update,
    mean_term_gradient,
    squared_gradient_mean,
    term_gradients,
)

__all__ = [
    "FORGET", "RETAIN", "ROLES", "GRADIENT", "IMPORTANCE", "REPAIR", "DAMPENED", "Tensors",
    "Phase", "TermContext", "RoundInputs", "Method", "AscentThenRepair", "MethodState",
    "trainable", "frozen_copy", "output_of",
    "Worker", "UnlearnReport", "StepCallback", "run_unlearning", "planned_callbacks",
    "Gradients", "LocalUpdate", "term_gradients", "mean_term_gradient", "local_update", "squared_gradient_mean",
    "LocalWorker",
]
