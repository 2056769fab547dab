"""SIFU (Fraboni, Vidal, Kameni and Lorenzi, AISTATS 2024): roll back to a bounded round, add noise, go on.

The server bounds how far each site could have moved the global model. After round n its bound for
site i grows by the distance between FedAvg's increment with and without the site,

    psi(n + 1, i) = (1 - lr x weight_decay)^K psi(n, i) + p_i / (1 - p_i) ||w_(n+1) - w_i,(n+1)||,

where ``w_i,(n+1)`` is the site's local model of round n + 1, ``w_(n+1)`` the new global model and
``p_i`` the site's FedAvg weight (as in the authors' code, Accenture Labs-Federated-Learning, SIFU
branch, ``FL/server.py`` ``compute_metric``; they weight with 1/M, the aggregation here weights with
``n_i / n``). To remove site f, SIFU resumes the global model ``w_T`` of the last round T whose bound
is at most ``psi* = epsilon sigma / sqrt(2 ln(1.25 / delta))`` (the Gaussian mechanism's sensitivity for
noise of std ``sigma``), adds that noise to every weight, and continues FedAvg without f.

What the bound means here: it is derived for SGD with weight decay, whose steps contract the distance
between two trajectories by ``(1 - lr x weight_decay)`` per step. Training here uses Adam without weight
decay, whose per-coordinate step sizes do not contract that distance, so ``psi`` is the first-order
(linearised) sum of the site's leave-one-out increments, a measure of influence rather than a proven
bound; the (epsilon, delta) guarantee does not carry over. The forget site is never contacted. The
rollback round and ``psi`` per round are recorded in the method's details.
"""

from __future__ import annotations

import math

import torch

from fedforget.configs.schema import FederationConfig
from fedforget.learning.checkpoints import State
from fedforget.learning.history import RoundHistory
from fedforget.unlearning.history_base import HistoryMethod, HistoryRun, difference, weights_of
from fedforget.unlearning.rollback import retrain_rounds


def psi_threshold(epsilon: float, sigma: float, delta: float) -> float:
    """``psi* = epsilon sigma / sqrt(2 ln(1.25 / delta))``: the largest sensitivity noise of std sigma hides."""
    return epsilon * sigma / math.sqrt(2 * math.log(1.25 / delta))


def sensitivity_bounds(history: RoundHistory, final: State, site: str, contraction: float) -> list[float]:
    """``psi(n, site)`` for n = 0 .. R (``psi(0) = 0``) from the history, which must keep every round.

    ``contraction`` is ``(1 - lr x weight_decay)^K``; the global model after round n is the start of
    round n + 1 (``final`` after the last).
    """
    if history.every != 1:
        raise ValueError(f"SIFU's bound needs every round; this history keeps every {history.every}-th "
                         "(set federation.history.every=1)")
    rounds = history.rounds
    bounds = [0.0]
    for position, server_round in enumerate(rounds):
        entry = history.entry(server_round)
        after = history.entry(rounds[position + 1]).start if position + 1 < len(rounds) else final
        growth = 0.0
        if site in entry.updates:
            weight = weights_of(entry.examples, list(entry.examples))[site]
            local = {k: entry.start[k] + entry.updates[site][k].float() for k in entry.start}
            gap = difference(after, local)
            growth = weight / (1 - weight) * math.sqrt(sum(float(v.pow(2).sum()) for v in gap.values()))
        bounds.append(contraction * bounds[-1] + growth)
    return bounds


def rollback_round(bounds: list[float], threshold: float) -> int:
    """The last round T whose bound is at most ``threshold`` (bounds only grow when weight decay is 0)."""
    for n, value in enumerate(bounds):
        if value > threshold:
            return n - 1
    return len(bounds) - 1


def noised(state: State, sigma: float, seed: int) -> State:
    """``state`` plus i.i.d. N(0, sigma^2) on every floating-point element, from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    return {k: (v + sigma * torch.randn(v.shape, generator=generator, dtype=torch.float32).to(v.dtype))
            if v.is_floating_point() else v for k, v in state.items()}


class SIFU(HistoryMethod):
    name = "sifu"

    def plan(self, fed: FederationConfig, retain_sites: int) -> list[tuple[int, int]]:
        """The most expensive rollback: to the initial model, then every round (or ``continue_rounds``)."""
        rounds = self.cfg.sifu.continue_rounds or fed.rounds
        return [(retain_sites, fed.local_steps)] * rounds

    def remove(self, run: HistoryRun) -> State:
        knobs, fed = self.cfg.sifu, run.fed
        delta = knobs.delta or 1.0 / (len(run.retain_sites) + 1)
        contraction = (1 - fed.lr * knobs.weight_decay) ** fed.local_steps
        bounds = sensitivity_bounds(run.history, run.original, run.forget_site, contraction)
        threshold = psi_threshold(knobs.epsilon, knobs.sigma, delta)
        rolled_to = rollback_round(bounds, threshold)
        run.details.update({"psi": bounds, "psi_threshold": threshold, "delta": delta, "rollback_round": rolled_to})
        start = run.history.entry(rolled_to + 1).start if rolled_to < fed.rounds else run.original
        state = noised(start, knobs.sigma, run.seed * 1_000_003 + 7) if knobs.sigma else start
        run.advanced(state, 0, {"rollback_round": float(rolled_to)})
        if knobs.continue_rounds:
            return _fedavg_continuation(run, state, rolled_to, knobs.continue_rounds)
        return retrain_rounds(run, state, rolled_to + 1)


def _fedavg_continuation(run: HistoryRun, state: State, rolled_to: int, rounds: int) -> State:
    """``rounds`` FedAvg rounds over the retain sites after round ``rolled_to``, on the original schedule
    (clamped at its last round's learning rate)."""
    fed = run.fed
    for index in range(rounds):
        server_round = rolled_to + 1 + index
        state = run.fedavg_round(run.participants(min(server_round, fed.rounds)), state,
                                 (server_round - 1) * fed.local_steps, fed.local_steps,
                                 fed.round_lr(min(server_round, fed.rounds)))
        run.advanced(state, fed.local_steps)
    return state



