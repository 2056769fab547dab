"""``models.<m>`` records of the reference models, and the cost every record carries."""

from __future__ import annotations

from typing import Any

from fedforget.learning.checkpoints import state_sha256
from fedforget.reporting.results import ModelRecord
from fedforget.strategies.fedavg import TrainedModel


def cost_record(site_steps: int, server_seconds: float, messages: int, bytes_: int, history_bytes: int = 0
                ) -> dict[str, Any]:
    """``models.<m>.cost``: what a model cost, in the units a consortium pays."""
    return {"site_steps": int(site_steps), "server_seconds": round(float(server_seconds), 4),
            "messages": int(messages), "bytes": int(bytes_), "history_bytes": int(history_bytes)}


def zero_filled_record() -> ModelRecord:
    """The baseline's record: nothing trained, nothing moved; its scores come from the final evaluation."""
    return ModelRecord(wall_seconds=0.0, steps=0, retain_fraction=None, bytes_communicated=0, trained_on=[],
                       details={"baseline": "RSS of the undersampled k-space, centre-cropped (no model)",
                                "cost": cost_record(0, 0.0, 0, 0)})


def trained_record(trained: TrainedModel) -> ModelRecord:
    """The record of a federally trained model (the original, the oracle)."""
    details: dict[str, Any] = {"rounds": trained.rounds}
    history_bytes = 0
    if trained.round_history is not None:
        details["history"] = trained.round_history.describe()
        history_bytes = details["history"]["bytes"]
    details["cost"] = cost_record(trained.site_steps, trained.server_seconds, trained.messages,
                                  trained.bytes_communicated, history_bytes)
    return ModelRecord(wall_seconds=trained.wall_seconds, steps=trained.steps, retain_fraction=None,
                       bytes_communicated=trained.bytes_communicated, trained_on=trained.sites,
                       sha256=state_sha256(trained.state), details=details)
