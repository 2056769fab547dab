"""The federated client-removal protocol: who computes which part of an unlearning step.

The server holds the model and the optimizer. For every step it sends the
current weights to the parties of the step's phase:

- the **forget site** evaluates the method's forget term (ascent loss, noisy-label
  loss, random-teacher match, or SSD importances) on its own data;
- the **retain side** evaluates the retain term on the retain fraction ``p``: either
  each retain site on ``p`` of its own slices (``retain_access=sites``; the server
  averages their gradients weighted by batch size), or the server itself on the
  ``p`` of the retain data it holds (``retain_access=server``);
- the server combines the returned gradients with the method's ``combine`` and
  takes one Adam step (or dampens weights from the importances).

Only parameter-shaped arrays travel. The engine is the Flower-free one
(:func:`fedforget.unlearning.base.run_unlearning`), so with one retain and one
forget site this protocol produces the same weights as :func:`fedforget.unlearning.unlearn`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from flwr.app import ConfigRecord, RecordDict
from torch import nn

from fedforget.strategies.link import SiteLink
from fedforget.strategies.protocol import (
    ARRAYS,
    CONFIG,
    METRICS,
    ORIGINAL,
    UNLEARN,
    arrays_from_state,
    state_from_arrays,
)
from fedforget.unlearning.base import FORGET, RETAIN, Gradients, LocalWorker, Method, Phase, Tensors


class FederatedWorker:
    """Parties reached through Flower; the retain party may instead be the server's own data."""

    def __init__(self, link: SiteLink, method: Method, forget_site: str, retain_sites: list[str],
                 batches_per_pass: Mapping[str, int], phase_label: str, original: Tensors | None = None,
                 server_retain: LocalWorker | None = None) -> None:
        self.link = link
        self.method = method
        self.forget_site = forget_site
        self.retain_sites = list(retain_sites)
        self.batches_per_pass = dict(batches_per_pass)
        self.label = phase_label
        self.original = original
        self.server_retain = server_retain
        self.step = 0

    def _sites(self, role: str) -> list[str]:
        if role == FORGET:
            return [self.forget_site]
        return [] if self.server_retain is not None else self.retain_sites

    def _content(self, role: str, phase: Phase, model: nn.Module, **extra: int) -> RecordDict:
        config = ConfigRecord({"method": self.method.name, "role": role, "phase": phase.name,
                               "kind": phase.kind, "steps": phase.steps, **extra})
        records = {ARRAYS: arrays_from_state(model.state_dict()), CONFIG: config}
        if role in self.method.needs_original and self.original is not None:
            records[ORIGINAL] = arrays_from_state(self.original)
        return RecordDict(records)

    def _exchange(self, contents: dict[str, RecordDict]) -> dict[str, RecordDict]:
        self.step += 1
        return self.link.send(UNLEARN, contents, self.label, self.step).require_all() if contents else {}

    def gradients(self, phase: Phase, indices: Mapping[str, int], model: nn.Module) -> dict[str, Gradients]:
        contents = {site: self._content(role, phase, model, index=index)
                    for role, index in indices.items() for site in self._sites(role)}
        replies = self._exchange(contents)
        result = {role: self._gather([replies[s] for s in self._sites(role)])
                  for role in indices if self._sites(role)}
        if RETAIN in indices and self.server_retain is not None:
            result.update(self.server_retain.gradients(phase, {RETAIN: indices[RETAIN]}, model))
        return result

    def importances(self, phase: Phase, batches: Mapping[str, int], model: nn.Module) -> dict[str, Tensors]:
        contents = {site: self._content(role, phase, model, batches=count)
                    for role, count in batches.items() for site in self._sites(role)}
        replies = self._exchange(contents)
        result = {role: self._gather([replies[s] for s in self._sites(role)]).grads
                  for role in batches if self._sites(role)}
        if RETAIN in batches and self.server_retain is not None:
            result.update(self.server_retain.importances(phase, {RETAIN: batches[RETAIN]}, model))
        return result

    @staticmethod
    def _gather(replies: list[RecordDict]) -> Gradients:
        """Average several sites' arrays weighted by the examples behind them."""
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
