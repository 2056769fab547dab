"""History-based unlearning through Flower: the sites' local rounds as ``train`` messages.

A history-based method (``fedforget.unlearning.history_base``) asks sites only for local training
rounds, the work FedAvg asks of them: train ``local-steps`` steps from the sent weights on the
site's training stream (or, for PUF's negated round, on its forget set) at the sent learning rate,
and return the new weights with the example count. The server averages and calibrates; a site
that fails a round is asked again (``unlearning.round_retries``) before the method stops.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedforget.learning.checkpoints import State
from fedforget.strategies.link import SiteLink
from fedforget.strategies.messages import TrainRequest
from fedforget.strategies.protocol import (
    ARRAYS,
    METRICS,
    TRAIN,
    arrays_from_state,
    state_from_arrays,
)
from fedforget.strategies.removal import FailureHook, RetryingSender
from fedforget.unlearning.history_base import TRAIN_DATA, SiteUpdate


class FederatedRoundWorker:
    """Local rounds at Flower sites, recorded in the ledger under ``label`` (``unlearn/<method>``)."""

    def __init__(self, link: SiteLink, label: str, retries: int = 0, on_failure: FailureHook | None = None) -> None:
        self.label = label
        self.sender = RetryingSender(link, label, retries, on_failure)

    def local_round(self, sites: Sequence[str], state: State, first_batch: int, steps: int, lr: float,
                    data: str = TRAIN_DATA) -> dict[str, SiteUpdate]:
        request = TrainRequest(model=arrays_from_state(state), phase=self.label, local_steps=steps,
                               first_batch=first_batch, lr=lr, data=data)
        replies = self.sender.send(TRAIN, {site: request for site in sites})
        return {site: SiteUpdate(state_from_arrays(replies[site][ARRAYS]), int(replies[site][METRICS]["num-examples"]),
                                 float(replies[site][METRICS]["loss"]))
                for site in sites}
