"""PUF (Mora et al. 2025): negate the forget site's pseudo-gradient, then recover.

The forget site trains one local round (K steps, at ``puf.lr``, by default the schedule's last rate) on its forget
set from the original model; its update ``U_f`` is the pseudo-gradient of its data. The server moves
the model against it, ``w <- w - scale x U_f`` (the authors' "special" round, in which only the
forget client trains, with scale 2), then runs ``recovery_rounds`` FedAvg rounds over the retain
sites. The recovery is a fixed budget: the authors' code stops once the model's test accuracy
reaches the retrained model's, which uses the oracle. The only message to the forget site is its
one local round; it receives nothing else.
"""

from __future__ import annotations

from fedforget.configs.schema import FederationConfig
from fedforget.learning.checkpoints import State
from fedforget.unlearning.history_base import FORGET_DATA, HistoryMethod, HistoryRun, added, difference


class PUF(HistoryMethod):
    name = "puf"
    needs_history = False
    contacts_forget_site = True

    def remove(self, run: HistoryRun) -> State:
        knobs, fed = self.cfg.puf, run.fed
        lr = knobs.lr or fed.round_lr(fed.rounds)
        reply = run.local_round([run.forget_site], run.original, 0, fed.local_steps, lr, FORGET_DATA)
        state = added(run.original, difference(reply[run.forget_site].state, run.original), -knobs.scale)
        run.advanced(state, fed.local_steps, {"negated": 1.0})
        first = fed.rounds * fed.local_steps
        for index in range(knobs.recovery_rounds):
            state = run.fedavg_round(run.retain_sites, state, first + index * fed.local_steps, fed.local_steps, lr)
            run.advanced(state, fed.local_steps)
        return state

    def planned_rounds(self, fed: FederationConfig) -> int:
        return 1 + self.cfg.puf.recovery_rounds

    def plan(self, fed: FederationConfig, retain_sites: int) -> list[tuple[int, int]]:
        return [(1, fed.local_steps)] + [(retain_sites, fed.local_steps)] * self.cfg.puf.recovery_rounds
