"""What travels between the server and the sites: message types, record keys, error replies.

Only model arrays (weights, gradients, importances) and metrics travel; k-space and
images never leave a site. Expected failures at a site (bad data, a site that is
not part of the experiment) come back as a normal reply carrying a ``status``
ConfigRecord with a readable reason, instead of a Ray/gRPC traceback.
"""

from __future__ import annotations

import json
import math
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
SITE = "site"


class SiteError(RuntimeError):
    """A site could not do what it was asked; the message names the site and the reason."""

    def __init__(self, site: str, reason: str) -> None:
        super().__init__(f"site {site}: {reason}")
        self.site = site
        self.reason = reason


# An ArrayRecord key that starts with this holds many tensors of one dtype in one flat array; the rest of
# the key is the JSON layout [[name, shape, position], ...] (see arrays_from_state).
PACKED = "packed:"


def arrays_from_state(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """Tensors to an ArrayRecord: one flat array per dtype, its layout in the key.

    Flower moves every Array as its own objects, one HTTP request each on every hop
    (ServerApp -> SuperLink -> SuperNode -> ClientApp and back). A VarNet state dict of
    74 tensors (the tiny model; ~300 for the paper's) cost ~2 s per hop on loopback this
    way (``bench/deployment.py``); packed, it is one Array (plus 5 MB chunks). The bytes
    are the same, the values bit for bit, and Flower's FedAvg still averages it element
    by element.
    """
    groups: dict[torch.dtype, list[tuple[str, torch.Tensor, int]]] = {}
    for position, (name, value) in enumerate(state.items()):
        tensor = value.detach().to("cpu")
        groups.setdefault(tensor.dtype, []).append((name, tensor, position))
    arrays = {}
    for members in groups.values():
        layout = [[name, list(tensor.shape), position] for name, tensor, position in members]
        arrays[PACKED + json.dumps(layout, separators=(",", ":"))] = torch.cat(
            [tensor.reshape(-1) for _, tensor, _ in members])
    return ArrayRecord(arrays)


def state_from_arrays(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """The tensors of an ArrayRecord, packed (:func:`arrays_from_state`) or one Array per tensor, in order.

    Raises:
        ValueError: a packed array whose size does not match its layout.
    """
    placed: list[tuple[int, str, torch.Tensor]] = []
    for key, array in record.items():
        flat = torch.from_numpy(array.numpy())
        if not key.startswith(PACKED):
            placed.append((len(placed), key, flat))
            continue
        layout = _layout(key, int(flat.numel()))
        offset = 0
        for name, shape, position in layout:
            size = math.prod(shape)
            placed.append((position, name, flat[offset:offset + size].reshape(shape).clone()))
            offset += size
    return {name: tensor for _, name, tensor in sorted(placed, key=lambda item: item[0])}


def _layout(key: str, numel: int) -> list[tuple[str, tuple[int, ...], int]]:
    layout = [(str(name), tuple(int(d) for d in shape), int(position))
              for name, shape, position in json.loads(key[len(PACKED):])]
    declared = sum(math.prod(shape) for _, shape, _ in layout)
    if declared != numel:
        raise ValueError(f"a packed array holds {numel} values but its layout declares {declared}")
    return layout


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
    """Shapes of every tensor in a message (for the audit that no data-shaped array travels).

    A packed array counts as the tensors its layout declares, once its size matches that layout;
    otherwise as the flat array it is.
    """
    shapes: list[tuple[int, ...]] = []
    for record in content.array_records.values():
        for key, array in record.items():
            shapes.extend(_declared_shapes(key, tuple(array.shape)))
    return shapes


def _declared_shapes(key: str, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    if key.startswith(PACKED):
        try:
            return [declared for _, declared, _ in _layout(key, math.prod(shape))]
        except (ValueError, TypeError, KeyError):
            pass
    return [shape]


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
