"""FedEraser (Liu et al., IWQoS 2021): replay the stored rounds with calibrated updates.

Starting from the initial model, the server replays every ``interval``-th stored round over the
retain sites only. In a replayed round each retain site trains a calibration round of
``ceil(ratio x K)`` local steps from the current unlearned model (on the batches it trained on in
that round), and the server turns each calibration update into a calibrated one: per parameter
tensor, the stored update's norm in the calibration update's direction,

    U~_i = ||U_i|| * U^_i / ||U^_i||,    w <- w + sum_i (n_i / n) U~_i,

(``calibrate=site``, the paper's equation), or the same on the example-weighted averages of the
stored and calibration updates (``calibrate=aggregate``, the authors' released code). As in the
paper, the first round is replayed without calibration: the retain sites' stored updates of round 1
started from the initial model and carry nothing of the forget site. The forget site is never
contacted. Site compute is about ``ratio / interval`` of retraining's.
"""

from __future__ import annotations

import math

import torch

from fedforget.configs.schema import FederationConfig
from fedforget.learning.checkpoints import State
from fedforget.unlearning.history_base import (
    HistoryMethod,
    HistoryRun,
    added,
    difference,
    weighted_sum,
    weights_of,
)


def calibrated_update(stored: State, calibration: State) -> State:
    """Per tensor, ``||stored|| * calibration / ||calibration||`` (zero where the calibration is zero)."""
    result = {}
    for key, old in stored.items():
        new = calibration[key].float()
        norm = torch.linalg.vector_norm(new)
        result[key] = torch.zeros_like(new) if norm == 0 else torch.linalg.vector_norm(old.float()) * new / norm
    return result


def replayed_rounds(rounds: int, interval: int) -> list[int]:
    """The stored rounds FedEraser replays: 1, 1 + interval, ..."""
    return list(range(1, rounds + 1, interval))


class FedEraser(HistoryMethod):
    name = "federaser"

    def remove(self, run: HistoryRun) -> State:
        knobs, fed = self.cfg.federaser, run.fed
        steps = math.ceil(knobs.ratio * fed.local_steps)
        run.details.update({"replayed_rounds": replayed_rounds(fed.rounds, knobs.interval), "calibration_steps": steps,
                            "calibrate": knobs.calibrate})
        state = run.history.entry(1).start
        for server_round in replayed_rounds(fed.rounds, knobs.interval):
            entry = run.history.entry(server_round)
            sites = [s for s in run.participants(server_round) if s in entry.updates]
            stored = {s: entry.updates[s] for s in sites}
            weights = weights_of(entry.examples, sites)
            if server_round == 1:
                state = added(state, weighted_sum([(stored[s], weights[s]) for s in sites]))
                run.advanced(state, fed.local_steps, {"calibrated": 0.0})
                continue
            replies = run.local_round(sites, state, (server_round - 1) * fed.local_steps, steps,
                                      fed.round_lr(server_round))
            calibration = {s: difference(replies[s].state, state) for s in sites}
            state = added(state, calibrated_step(stored, calibration, weights, knobs.calibrate))
            run.advanced(state, steps, {"calibrated": 1.0})
        return state

    def planned_rounds(self, fed: FederationConfig) -> int:
        return len(replayed_rounds(fed.rounds, self.cfg.federaser.interval))

    def plan(self, fed: FederationConfig, retain_sites: int) -> list[tuple[int, int]]:
        steps = math.ceil(self.cfg.federaser.ratio * fed.local_steps)
        return [(retain_sites, steps) for r in replayed_rounds(fed.rounds, self.cfg.federaser.interval) if r > 1]


def calibrated_step(stored: dict[str, State], calibration: dict[str, State], weights: dict[str, float],
                    calibrate: str) -> State:
    """The global change of one replayed round, from each retain site's stored and calibration updates."""
    sites = list(weights)
    if calibrate == "site":
        return weighted_sum([(calibrated_update(stored[s], calibration[s]), weights[s]) for s in sites])
    return calibrated_update(weighted_sum([(stored[s], weights[s]) for s in sites]),
                             weighted_sum([(calibration[s], weights[s]) for s in sites]))
