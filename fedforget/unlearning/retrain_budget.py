"""Retraining on a budget: the control every removal method must beat.

FedAvg over the retain sites from the initial model, with a fraction ``f`` of the oracle's site
compute: ``round(f x R x K)`` local steps per site, spread as evenly as they go over
``round(f x R)`` rounds, on the federation's learning-rate schedule compressed to those rounds.
At ``f = 1`` it is the oracle's training, step for step; above 1 (a method that costs more than
retraining) the schedule is stretched over more rounds. A method that is not better than this
at its own site compute has not helped, whatever its distance to the oracle.
"""

from __future__ import annotations

from fedforget.configs.schema import FederationConfig, UnlearningConfig
from fedforget.learning.checkpoints import State
from fedforget.unlearning.history_base import HistoryMethod, HistoryRun


def budget_schedule(fraction: float, rounds: int, local_steps: int) -> list[int]:
    """Local steps per round of retraining with ``fraction`` of ``rounds x local_steps`` steps per site."""
    total = max(1, round(fraction * rounds * local_steps))
    count = max(1, min(round(fraction * rounds), total))
    base, extra = divmod(total, count)
    return [base + (i < extra) for i in range(count)]


class RetrainBudget(HistoryMethod):
    name = "retrain_budget"
    needs_history = False

    def __init__(self, cfg: UnlearningConfig, fraction: float | None = None) -> None:
        super().__init__(cfg)
        self.fraction = cfg.retrain_budget.fraction if fraction is None else fraction
        if not self.fraction > 0:
            raise ValueError(f"retrain_budget needs a positive fraction of retraining's compute, got {self.fraction}")

    def remove(self, run: HistoryRun) -> State:
        fed = run.fed
        schedule = budget_schedule(self.fraction, fed.rounds, fed.local_steps)
        run.details.update({"fraction": self.fraction, "schedule": schedule})
        state, first = run.initial, 0
        for index, steps in enumerate(schedule, start=1):
            state = run.fedavg_round(run.retain_sites, state, first, steps, fed.round_lr(index, len(schedule)))
            first += steps
            run.advanced(state, steps)
        return state

    def planned_rounds(self, fed: FederationConfig) -> int:
        return len(budget_schedule(self.fraction, fed.rounds, fed.local_steps))

    def plan(self, fed: FederationConfig, retain_sites: int) -> list[tuple[int, int]]:
        return [(retain_sites, steps) for steps in budget_schedule(self.fraction, fed.rounds, fed.local_steps)]
