"""What travels between the server and the sites: message types, record keys, error replies.

Only model arrays (weights, gradients, importances) and metrics travel; k-space and
images never leave a site. Expected failures at a site (bad data, a site that is
not part of the experiment) come back as a normal reply carrying a ``status``
ConfigRecord with a readable reason, instead of a Ray/gRPC traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedforget.unlearning.base import RoundInputs

SITE_QUERY = "query.site"
TRAIN = "train"
EVALUATE = "evaluate"
UNLEARN = "train.unlearn"

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
STATUS = "status"
ORIGINAL = "original"
SITE = "site"
INPUT = "input-"  # prefix of a local round's inputs: ArrayRecords for tensors, config keys for numbers


class SiteError(RuntimeError):
    """A site could not do what it was asked; the message names the site and the reason."""

    def __init__(self, site: str, reason: str) -> None:
        super().__init__(f"site {site}: {reason}")
        self.site = site
        self.reason = reason


def arrays_from_state(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """Tensors to an ArrayRecord (contiguous CPU copies, as Flower serialises them)."""
    return ArrayRecord({k: v.detach().to("cpu").contiguous() for k, v in state.items()})


def state_from_arrays(record: ArrayRecord) -> dict[str, torch.Tensor]:
    return record.to_torch_state_dict()


def input_records(inputs: RoundInputs) -> tuple[dict[str, ArrayRecord], dict[str, float]]:
    """A local round's inputs as ArrayRecords and config values, each named ``input-<name>``."""
    arrays = {INPUT + name: arrays_from_state(tensors) for name, tensors in inputs.tensors.items()}
    return arrays, {INPUT + name: float(value) for name, value in inputs.values.items()}


def round_inputs_of(content: RecordDict) -> RoundInputs:
    """The inputs a local-round message carries (see :func:`input_records`)."""
    tensors = {key[len(INPUT):]: state_from_arrays(record) for key, record in content.array_records.items()
               if key.startswith(INPUT)}
    values = {key[len(INPUT):]: float(value) for key, value in config_of(content).items() if key.startswith(INPUT)}
    return RoundInputs(tensors=tensors, values=values)


def error_reply(message: Message, site: str, err: BaseException) -> Message:
    """Reply with a readable failure instead of raising (which Flower turns into a traceback)."""
    reason = f"{type(err).__name__}: {err}"
    return Message(RecordDict({STATUS: ConfigRecord({"error": reason, SITE: site})}), reply_to=message)


def reply_error(content: RecordDict) -> str | None:
    """The reason of an error reply, or None for a normal reply."""
    if STATUS in content.config_records:
        return str(content.config_records[STATUS]["error"])
    return None


def content_bytes(content: RecordDict) -> int:
    """Bytes of the arrays in a message (metrics and configs are negligible and counted as 0)."""
    return sum(record.count_bytes() for record in content.array_records.values())


def array_shapes(content: RecordDict) -> list[tuple[int, ...]]:
    """Shapes of every array in a message (for the audit that no data-shaped array travels)."""
    return [tuple(array.shape) for record in content.array_records.values() for array in record.values()]


def config_of(content: RecordDict) -> dict[str, Any]:
    return dict(content.config_records[CONFIG]) if CONFIG in content.config_records else {}


def metrics_reply(message: Message, metrics: Mapping[str, float], arrays: ArrayRecord | None = None,
                  **configs: Mapping[str, Any]) -> Message:
    """A normal reply: optional arrays, one MetricRecord, optional ConfigRecords."""
    records: dict[str, Any] = {}
    if arrays is not None:
        records[ARRAYS] = arrays
    records[METRICS] = MetricRecord(dict(metrics))
    for key, values in configs.items():
        records[key] = ConfigRecord(dict(values))
    return Message(RecordDict(records), reply_to=message)
