"""FedAvg's averaging rule, shared by the Flower strategy and the plain in-process loop."""

from __future__ import annotations

import torch

from fedforget.configs.schema import FederationConfig

State = dict[str, torch.Tensor]


def site_weights(examples: list[int], weighting: str) -> list[float]:
    """Averaging weights: by training slices (FedAvg's default) or one share per site."""
    if weighting == "uniform":
        return [1.0 / len(examples)] * len(examples)
    total = float(sum(examples))
    return [n / total for n in examples]


def aggregate(updates: list[tuple[State, int]], previous: State, fed: FederationConfig) -> State:
    """Average site models with :func:`site_weights` (``previous`` is kept for stateful variants)."""
    weights = site_weights([n for _, n in updates], getattr(fed, "weighting", "examples"))
    keys = updates[0][0].keys()
    return {k: sum(w * state[k].double() for w, (state, _) in zip(weights, updates)).to(previous[k].dtype)
            for k in keys}
