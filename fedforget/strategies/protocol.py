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

SITE_QUERY = "query.site"
TRAIN = "train"
EVALUATE = "evaluate"
UNLEARN = "train.unlearn"

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
STATUS = "status"
ORIGINAL = "original"
# The reference model of the calibrated membership audit (the oracle), sent to the forget site with final evaluations.
REFERENCE = "reference"
SITE = "site"
# An evaluate message with this config key set scores zero-filled reconstructions (no model travels).
ZERO_FILLED = "zero-filled"


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


# Evaluation replies name each value "<split>-<metric>" (e.g. "test-psnr", "train-psnr-volumes");
# audit values ("mia-auc", ...) have no split. These two functions are the only place that spelling lives.
EVAL_SPLITS = ("test", "train")


def split_metric(split: str, metric: str) -> str:
    """The MetricRecord key of one split's metric."""
    return f"{split}-{metric}"


def parse_evaluation(metrics: Mapping[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """An evaluation reply's values: per split (metric names with ``_``), and the rest (audit values).

    Returns:
        ``({"test": {"psnr": .., "psnr_volumes": [..]}, "train": {..}}, {"mia_auc": .., ...})``.
    """
    splits: dict[str, dict[str, Any]] = {}
    rest: dict[str, Any] = {}
    for key, value in metrics.items():
        split, _, metric = key.partition("-")
        value = [float(v) for v in value] if isinstance(value, list) else float(value)
        if split in EVAL_SPLITS:
            splits.setdefault(split, {})[metric.replace("-", "_")] = value
        elif key != "num-examples":
            rest[key.replace("-", "_")] = value
    return splits, rest
