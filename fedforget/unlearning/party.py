"""What a party computes on its own data: gradients of its term, local rounds, importances.

The forget site (on its own data) and the retain party (the retain fraction of the retain
data, at the sites or at the server) run these functions for the engine; a Flower site
calls them from its message handlers, and :class:`LocalWorker` calls them in-process (the
Flower-free form of every method), so both compute the same thing from the same batches.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from fedforget.data.batches import BatchSource
from fedforget.data.datasets import Batch
from fedforget.unlearning.method import Method, Phase, RoundInputs, Tensors, TermContext, trainable


@dataclass
class Gradients:
    """One party's gradient of its term on one batch (sites may average several)."""

    grads: Tensors
    loss: float
    examples: int


@dataclass
class LocalUpdate:
    """One party's local round: the change of its weights, its mean term, the examples behind it."""

    delta: Tensors
    loss: float
    examples: int


def term_gradients(method: Method, role: str, phase: Phase, model: nn.Module, batch: Batch, index: int,
                   ctx: TermContext) -> Gradients:
    """Gradient of ``role``'s term on one batch: the computation a site performs."""
    model.train()
    model.zero_grad(set_to_none=True)
    loss = method.term(role, phase, model, batch, index, ctx)
    loss.backward()
    grads = {name: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
             for name, p in trainable(model).items()}
    model.zero_grad(set_to_none=True)
    return Gradients(grads=grads, loss=float(loss.detach()), examples=batch.size)


def mean_term_gradient(method: Method, role: str, phase: Phase, model: nn.Module, source: BatchSource, first: int,
                       steps: int, ctx: TermContext, device: torch.device) -> Gradients:
    """Mean gradient of ``role``'s term over batches ``first .. first + steps - 1`` at fixed weights (a guide)."""
    total: Tensors = {}
    loss, examples = 0.0, 0
    for index in range(first, first + steps):
        batch = source.batch(index).to(device)
        reply = term_gradients(method, role, phase, model, batch, index, ctx)
        total = reply.grads if not total else {k: total[k] + g for k, g in reply.grads.items()}
        loss += reply.loss
        examples += reply.examples
    return Gradients(grads={k: g / steps for k, g in total.items()}, loss=loss / steps, examples=examples)


def local_update(method: Method, role: str, phase: Phase, model: nn.Module, source: BatchSource, first: int,
                 steps: int, ctx: TermContext, lr: float, inputs: RoundInputs, device: torch.device) -> LocalUpdate:
    """``steps`` Adam steps of ``role``'s local term on batches ``first ..``: a party's work in a local round.

    The optimizer is fresh each round (as in FedAvg training): a party keeps no state
    between rounds, so a deployed site, which starts a new process per message, does
    exactly what a simulated one does. ``model`` is moved in place.
    """
    model.train()
    ctx.inputs = inputs
    params = trainable(model)
    start = {name: p.detach().clone() for name, p in params.items()}
    optimizer = torch.optim.Adam(params.values(), lr=lr)
    loss, examples = torch.zeros((), device=device), 0
    for index in range(first, first + steps):
        batch = source.batch(index).to(device)
        optimizer.zero_grad(set_to_none=True)
        objective, term = method.local_term(role, phase, model, batch, index, ctx)
        objective.backward()
        grads = {name: (p.grad if p.grad is not None else torch.zeros_like(p)) for name, p in params.items()}
        followed = method.local_gradient(role, phase, grads, inputs)
        for name, p in params.items():
            p.grad = followed[name]
        optimizer.step()
        with torch.no_grad():
            method.after_local_step(role, phase, model, inputs)
        loss += term.detach()
        examples += batch.size
    model.zero_grad(set_to_none=True)
    delta = {name: p.detach() - start[name] for name, p in params.items()}
    return LocalUpdate(delta=delta, loss=float(loss) / steps, examples=examples)  # one host sync per round


def squared_gradient_mean(method: Method, model: nn.Module, source: BatchSource, batches: int,
                          ctx: TermContext, device: torch.device) -> Tensors:
    """Per-element importance: mean over batches of the squared gradient of the batch loss (SSD)."""
    model.train()
    total = {name: torch.zeros_like(p) for name, p in trainable(model).items()}
    for k in range(batches):
        batch = source.batch(k).to(device)
        model.zero_grad(set_to_none=True)
        method.importance_term(model, batch, ctx).backward()
        for name, p in trainable(model).items():
            if p.grad is not None:
                total[name] += p.grad.detach() ** 2
    model.zero_grad(set_to_none=True)
    return {name: value / max(batches, 1) for name, value in total.items()}


class LocalWorker:
    """Both parties in one process: the Flower-free form of every method."""

    def __init__(self, method: Method, sources: Mapping[str, BatchSource], ctx: TermContext,
                 device: torch.device | str = "cpu") -> None:
        self.method = method
        self.sources = dict(sources)
        self.ctx = ctx
        self.device = torch.device(device)
        self._prepared: set[str] = set()

    def _context(self, role: str, model: nn.Module) -> TermContext:
        if role not in self._prepared:
            self.method.prepare(role, self.ctx, model)
            self._prepared.add(role)
        return self.ctx

    def gradients(self, phase: Phase, indices: Mapping[str, int], model: nn.Module,
                  inputs: Mapping[str, RoundInputs] | None = None) -> dict[str, Gradients]:
        replies = {}
        for role, index in indices.items():
            ctx = self._context(role, model)
            ctx.inputs = (inputs or {}).get(role, RoundInputs()).to(self.device)
            batch = self.sources[role].batch(index).to(self.device)
            replies[role] = term_gradients(self.method, role, phase, model, batch, index, ctx)
        return replies

    def importances(self, phase: Phase, batches: Mapping[str, int], model: nn.Module) -> dict[str, Tensors]:
        return {role: self.method.importance(role, model, self.sources[role], count, self._context(role, model),
                                             self.device)
                for role, count in batches.items()}

    def mean_gradients(self, phase: Phase, starts: Mapping[str, int], steps: int,
                       model: nn.Module) -> dict[str, Gradients]:
        return {role: mean_term_gradient(self.method, role, phase, model, self.sources[role], first, steps,
                                         self._context(role, model), self.device)
                for role, first in starts.items()}

    def local_updates(self, phase: Phase, starts: Mapping[str, int], steps: int, model: nn.Module,
                      inputs: RoundInputs, lr: float) -> dict[str, LocalUpdate]:
        # Each party starts from the round's weights: a copy each, as a site loads them from its message.
        return {role: local_update(self.method, role, phase, copy.deepcopy(model), self.sources[role], first,
                                   steps, self._context(role, model), lr, inputs, self.device)
                for role, first in starts.items()}

    def available_batches(self, role: str) -> int:
        return self.sources[role].batches_per_pass

    def bytes_communicated(self) -> int:
        return 0
