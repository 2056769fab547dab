"""The federated client-removal protocol: who computes which part of an unlearning step.

The server holds the model. With ``local_steps = 1`` it also holds the Adam optimizer,
and for every step it sends the current weights to the parties of the step's phase:

- the **forget site** evaluates the method's forget term (ascent loss, noisy-label
  loss, random-teacher match, or SSD importances) on its own data;
- the **retain side** evaluates the retain term on the retain fraction ``p``: either
  each retain site on ``p`` of its own slices (``retain_access=sites``; the server
  averages their gradients weighted by batch size), or the server itself on the
  ``p`` of the retain data it holds (``retain_access=server``);
- the server combines the returned gradients with the method's ``combine`` and
  takes one Adam step (or dampens weights from the importances).

With ``local_steps = k > 1`` one message round covers k steps: each moving party
runs k Adam steps of its local term from the round's weights and returns the change
of its weights (retain sites' changes are averaged weighted by examples); guide
parties (gradient surgery's retain side) return their mean gradient first, and it
travels to the movers with the round's other inputs (PGA's ball).

Only parameter-shaped arrays travel. The engine is the Flower-free one
(:func:`fedforget.unlearning.base.run_unlearning`), so with one retain and one
forget site this protocol produces the same weights as :func:`fedforget.unlearning.unlearn`.
A site that fails a round is asked again (``retries`` times) before the method stops.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import RecordDict
from torch import nn

from fedforget.strategies.link import SiteLink
from fedforget.strategies.messages import InputRecords, NumberedRequest, UnlearnMode, UnlearnRequest
from fedforget.strategies.protocol import (
    ARRAYS,
    METRICS,
    UNLEARN,
    SiteError,
    arrays_from_state,
    state_from_arrays,
)
from fedforget.unlearning.base import (
    FORGET,
    RETAIN,
    Gradients,
    LocalUpdate,
    LocalWorker,
    Method,
    Phase,
    RoundInputs,
    Tensors,
)

FailureHook = Callable[[str, str, int, bool], None]


class RetryingSender:
    """Rounds of messages of one phase; a site that fails a round is asked again, up to ``retries`` times.

    Every attempt is its own exchange (ledger step; ``exchange`` in the message config, which
    ``federation.fault.round`` counts), so the ledger shows the failed attempt and the retry. A
    round is deterministic, so a retry returns what the first attempt would have.
    """

    def __init__(self, link: SiteLink, label: str, retries: int = 0, on_failure: FailureHook | None = None) -> None:
        self.link = link
        self.label = label
        self.retries = retries
        self.on_failure = on_failure
        self.step = 0
        self.seconds = 0.0  # spent waiting for the sites (the rest of a method's time is the server's)

    def send(self, message_type: str, requests: Mapping[str, NumberedRequest]) -> dict[str, RecordDict]:
        """Every site's reply to its request, each attempt numbered as its exchange.

        Raises:
            SiteError: a site still failed after the last retry (its reason).
        """
        replies: dict[str, RecordDict] = {}
        pending = dict(requests)
        for attempt in range(self.retries + 1):
            self.step += 1
            began = time.perf_counter()
            contents = {site: request.numbered(self.step).to_record() for site, request in pending.items()}
            exchange = self.link.send(message_type, contents, self.label, self.step)
            self.seconds += time.perf_counter() - began
            replies.update(exchange.replies)
            if not exchange.failures:
                return replies
            for site, reason in exchange.failures.items():
                if self.on_failure is not None:
                    self.on_failure(site, reason, self.step, attempt < self.retries)
            pending = {site: pending[site] for site in exchange.failures}
        site, reason = next(iter(exchange.failures.items()))
        attempts = f" (failed {self.retries + 1} attempts)" if self.retries else ""
        raise SiteError(site, reason + attempts)


class FederatedWorker:
    """Parties reached through Flower; the retain party may instead be the server's own data."""

    def __init__(self, link: SiteLink, method: Method, forget_site: str, retain_sites: list[str],
                 batches_per_pass: Mapping[str, int], phase_label: str, original: Tensors | None = None,
                 server_retain: LocalWorker | None = None, retries: int = 0,
                 on_failure: FailureHook | None = None) -> None:
        self.link = link
        self.method = method
        self.forget_site = forget_site
        self.retain_sites = list(retain_sites)
        self.batches_per_pass = dict(batches_per_pass)
        self.label = phase_label
        self.original = original
        # Packed once: the original does not change while a method runs, and each of its messages carries it.
        self._original = (arrays_from_state(original) if original is not None and method.needs_original
                          else None)
        self.server_retain = server_retain
        self.sender = RetryingSender(link, phase_label, retries, on_failure)

    def _sites(self, role: str) -> list[str]:
        if role == FORGET:
            return [self.forget_site]
        return [] if self.server_retain is not None else self.retain_sites

    def _requests(self, mode: UnlearnMode, phase: Phase, model: nn.Module, fields: Mapping[str, dict[str, Any]],
                  inputs: Mapping[str, RoundInputs] | None = None) -> dict[str, UnlearnRequest]:
        """Every site's request of one exchange: to each role's sites, the role's ``fields`` and ``inputs``.

        The weights (and each role's inputs) are packed once per exchange and shared by its messages.
        """
        roles = [role for role in fields if self._sites(role)]
        if not roles:
            return {}  # the server's own retain data does the work: nothing to pack
        weights, inputs = arrays_from_state(model.state_dict()), inputs or {}
        requests = {}
        for role in roles:
            request = UnlearnRequest(mode=mode, model=weights, method=self.method.name, role=role, phase=phase.name,
                                     kind=phase.kind, steps=phase.steps, inputs=InputRecords.of(inputs.get(role)),
                                     original=self._original if role in self.method.needs_original else None,
                                     **fields[role])
            requests.update({site: request for site in self._sites(role)})
        return requests

    def _exchange(self, requests: dict[str, UnlearnRequest]) -> dict[str, RecordDict]:
        return self.sender.send(UNLEARN, requests)

    def _by_role(self, roles: Mapping[str, Any], replies: dict[str, RecordDict]) -> dict[str, Gradients]:
        return {role: self._gather([replies[s] for s in self._sites(role)]) for role in roles if self._sites(role)}

    def gradients(self, phase: Phase, indices: Mapping[str, int], model: nn.Module,
                  inputs: Mapping[str, RoundInputs] | None = None) -> dict[str, Gradients]:
        inputs = inputs or {}
        requests = self._requests(UnlearnMode.GRADIENT_STEP, phase, model,
                                  {role: {"index": index} for role, index in indices.items()}, inputs)
        result = self._by_role(indices, self._exchange(requests))
        if RETAIN in indices and self.server_retain is not None:
            result.update(self.server_retain.gradients(phase, {RETAIN: indices[RETAIN]}, model,
                                                       {RETAIN: inputs[RETAIN]} if RETAIN in inputs else None))
        return result

    def importances(self, phase: Phase, batches: Mapping[str, int], model: nn.Module) -> dict[str, Tensors]:
        requests = self._requests(UnlearnMode.IMPORTANCES, phase, model,
                                  {role: {"batches": count} for role, count in batches.items()})
        result = {role: g.grads for role, g in self._by_role(batches, self._exchange(requests)).items()}
        if RETAIN in batches and self.server_retain is not None:
            result.update(self.server_retain.importances(phase, {RETAIN: batches[RETAIN]}, model))
        return result

    def mean_gradients(self, phase: Phase, starts: Mapping[str, int], steps: int,
                       model: nn.Module) -> dict[str, Gradients]:
        requests = self._requests(UnlearnMode.DIRECTION, phase, model,
                                  {role: {"index": first, "local_steps": steps} for role, first in starts.items()})
        result = self._by_role(starts, self._exchange(requests))
        if RETAIN in starts and self.server_retain is not None:
            result.update(self.server_retain.mean_gradients(phase, {RETAIN: starts[RETAIN]}, steps, model))
        return result

    def local_updates(self, phase: Phase, starts: Mapping[str, int], steps: int, model: nn.Module,
                      inputs: RoundInputs, lr: float) -> dict[str, LocalUpdate]:
        fields = {role: {"index": first, "local_steps": steps, "lr": lr} for role, first in starts.items()}
        requests = self._requests(UnlearnMode.LOCAL_UPDATE, phase, model, fields, {role: inputs for role in starts})
        result = {role: LocalUpdate(g.grads, g.loss, g.examples)
                  for role, g in self._by_role(starts, self._exchange(requests)).items()}
        if RETAIN in starts and self.server_retain is not None:
            result.update(self.server_retain.local_updates(phase, {RETAIN: starts[RETAIN]}, steps, model, inputs, lr))
        return result

    @staticmethod
    def _gather(replies: list[RecordDict]) -> Gradients:
        """Average several sites' arrays (gradients, importances or weight changes) weighted by their examples."""
        weights = [float(r[METRICS]["num-examples"]) for r in replies]
        total = sum(weights)
        states = [state_from_arrays(r[ARRAYS]) for r in replies]
        merged = {k: sum(w / total * s[k] for w, s in zip(weights, states)) for k in states[0]}
        loss = sum(w / total * float(r[METRICS]["loss"]) for w, r in zip(weights, replies))
        return Gradients(grads={k: torch.as_tensor(v) for k, v in merged.items()}, loss=loss, examples=int(total))

    def available_batches(self, role: str) -> int:
        if role == RETAIN and self.server_retain is not None:
            return self.server_retain.available_batches(role)
        return self.batches_per_pass[role]

    def bytes_communicated(self) -> int:
        return self.link.ledger.bytes_in(self.label)


@dataclass(frozen=True)
class PlannedExchange:
    """One round of messages the protocol sends: to how many sites, with how many model-sized arrays."""

    phase: str
    messages: int
    arrays_down: int
    arrays_up: int


def message_plan(method: Method, budget: int, local_steps: int, retain_sites: int,
                 retain_at_server: bool = False) -> list[PlannedExchange]:
    """Every exchange a method's removal sends, without running it (for projections to other scales).

    Each array is one parameter-shaped record (weights, gradient, importances, weight
    change, or a round input), so bytes = arrays x the model's record size. Failed
    attempts and retries are not planned.

    Args:
        method: the method (its phases and local form decide the rounds).
        budget: the step budget.
        local_steps: ``unlearning.local_steps``.
        retain_sites: how many retain sites take part when the retain role is asked.
        retain_at_server: ``retain_access=server`` (retain work never leaves the server).

    Returns:
        The exchanges in order.
    """
    sites = {FORGET: 1, RETAIN: 0 if retain_at_server else retain_sites}

    def arrays_down(role: str, extra: int = 0) -> int:
        return 1 + (role in method.needs_original) + extra

    plan = []
    for phase in method.phases(budget):
        roles = [r for r in phase.roles if sites[r]]
        if phase.dampens:
            plan.append(_exchange_of(phase.name, roles, sites, arrays_down))
            continue
        if local_steps == 1:
            plan += [_exchange_of(phase.name, roles, sites,
                                  lambda r, p=phase: arrays_down(r, len(method.step_input_names(r, p))))] * phase.steps
            continue
        guides = [r for r in method.guide_roles(phase) if r in phase.roles]
        inputs = len(method.round_input_names(phase)) + len(guides)
        movers = [r for r in roles if r not in guides]
        for _ in range(math.ceil(phase.steps / local_steps)):
            if [r for r in guides if sites[r]]:
                plan.append(_exchange_of(phase.name, [r for r in guides if sites[r]], sites, arrays_down))
            plan.append(_exchange_of(phase.name, movers, sites, lambda r: arrays_down(r, inputs)))
    return [e for e in plan if e.messages]


def _exchange_of(phase: str, roles: list[str], sites: Mapping[str, int],
                 arrays_down: Callable[[str], int]) -> PlannedExchange:
    return PlannedExchange(phase, sum(sites[r] for r in roles), sum(sites[r] * arrays_down(r) for r in roles),
                           sum(sites[r] for r in roles))
