"""FedAvg's averaging rule for the plain in-process loop (the Flower path uses Flower's FedAvg)."""

from __future__ import annotations

import torch

State = dict[str, torch.Tensor]


def aggregate(updates: list[tuple[State, int]], previous: State) -> State:
    """Average site models weighted by their training slices, in ``previous``'s dtypes."""
    total = float(sum(n for _, n in updates))
    return {k: sum((n / total) * state[k].double() for state, n in updates).to(previous[k].dtype)
            for k in updates[0][0]}
