"""Rollback: exact unlearning of a hospital that joined late.

A site with ``sites.<site>.joins_at_round = j`` shaped no global model before round j + 1. The
server resumes the global model it kept at the start of that round and trains rounds j + 1 .. R
again without the site, exactly as the oracle's FedAvg would: the same sites, batches, learning
rates and averaging. The result is the model retraining without the site would give, at
``(R - j) / R`` of retraining's site compute; for ``j = 0`` it is retraining itself. SIFU
approximates this rollback for sites that took part from the start.
"""

from __future__ import annotations

from fedforget.configs.schema import FederationConfig
from fedforget.learning.checkpoints import State
from fedforget.unlearning.history_base import HistoryMethod, HistoryRun


class Rollback(HistoryMethod):
    name = "rollback"

    def remove(self, run: HistoryRun) -> State:
        joined = run.joins.get(run.forget_site, 0)
        run.details["resumed_from_round"] = joined
        state = run.history.entry(joined + 1).start
        return retrain_rounds(run, state, joined + 1)

    def plan(self, fed: FederationConfig, retain_sites: int) -> list[tuple[int, int]]:
        """From the start (a site that took part in every round); a late joiner's rollback is shorter."""
        return [(retain_sites, fed.local_steps)] * fed.rounds


def retrain_rounds(run: HistoryRun, state: State, first_round: int) -> State:
    """FedAvg rounds ``first_round .. R`` over the retain sites, on the original schedule."""
    fed = run.fed
    for server_round in range(first_round, fed.rounds + 1):
        state = run.fedavg_round(run.participants(server_round), state, (server_round - 1) * fed.local_steps,
                                 fed.local_steps, fed.round_lr(server_round))
        run.advanced(state, fed.local_steps)
    return state
