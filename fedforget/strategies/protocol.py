"""What travels between the server and the sites: message types, record keys, error replies.

Only model arrays (weights, gradients, importances) and metrics travel; k-space and
images never leave a site. A site that cannot do what it was asked replies normally,
with a ``status`` ConfigRecord holding the reason and the error's *kind*, so the
server can tell what the failure means for the run:

- ``fault``: the site is unavailable (a :class:`SiteError`, an injected fault, an I/O or
  memory failure). The server records it and goes on without the site where it can.
- ``data``: the site's data is bad (a ``DataFileError``: the file, the slice, the problem).
  The run stops at once: training on without that site would silently change the experiment.
- ``code``: anything else, i.e. a programming error in the code the site ran. The run stops,
  with the site's traceback.

A site that does not answer at all (crashed, timed out) is a fault too.
"""

from __future__ import annotations

import json
import math
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedforget.recon.hdf5io import DataFileError

SITE_QUERY = "query.site"
TRAIN = "train"
EVALUATE = "evaluate"
UNLEARN = "train.unlearn"

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
STATUS = "status"
# The original model's arrays in an ``unlearn`` message (the methods that compare with it).
ORIGINAL_KEY = "original"
# The reference model of the calibrated membership audit (the oracle), sent to the forget site with final evaluations.
REFERENCE = "reference"
SITE = "site"
INPUT = "input-"  # prefix of a local round's inputs: ArrayRecords for tensors, config keys for numbers
# The config keys of each request, and the requests themselves, are in fedforget.strategies.messages.

FAULT, DATA, CODE = "fault", "data", "code"
_TRACEBACK_CHARS = 4000


class SiteError(RuntimeError):
    """A site could not do what it was asked (a site fault); the message names the site and the reason."""

    def __init__(self, site: str, reason: str) -> None:
        super().__init__(f"site {site}: {reason}")
        self.site = site
        self.reason = reason


class RunStopped(RuntimeError):
    """A failure at a site that must stop the run (bad data, a programming error); never a recorded fault.

    ``status_details`` is what the run folder's ``status.json`` records besides the reason.
    """

    kind = CODE

    def __init__(self, site: str, reason: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"site {site}: {reason}")
        self.site = site
        self.reason = reason
        self.status_details: dict[str, Any] = {"error_kind": self.kind, "site": site, **(details or {})}


class SiteDataError(RunStopped):
    """A site's data is not usable (the file, the slice and the problem are in ``status_details``)."""

    kind = DATA


class SiteCodeError(RunStopped):
    """A site raised an unexpected exception: a bug, reported with the site's traceback."""

    kind = CODE


def error_kind(err: BaseException) -> str:
    """What a site's exception means for the run: ``data``, ``fault`` or ``code`` (see the module doc)."""
    if isinstance(err, DataFileError):
        return DATA
    if isinstance(err, (SiteError, OSError, MemoryError, torch.cuda.OutOfMemoryError)):
        return FAULT
    return CODE
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
    """Reply with a readable, classified failure instead of raising (which Flower turns into a traceback)."""
    return Message(error_content(site, err), reply_to=message)


def error_content(site: str, err: BaseException) -> RecordDict:
    """An error reply's content: the reason, the kind (see the module doc) and what the server records."""
    kind = error_kind(err)
    status: dict[str, Any] = {"error": f"{type(err).__name__}: {err}", SITE: site, "kind": kind}
    if kind == DATA:
        status.update({"file": str(getattr(err, "path", None) or ""), "problem": str(getattr(err, "problem", "")),
                       "slice": -1 if getattr(err, "slice_index", None) is None else int(err.slice_index)})
    if kind == CODE:
        status["traceback"] = "".join(traceback.format_exception(err))[-_TRACEBACK_CHARS:]
    return RecordDict({STATUS: ConfigRecord(status)})


@dataclass(frozen=True)
class SiteFailure:
    """An error reply, read back: the site, the kind, the reason and what else the site said."""

    site: str
    kind: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    def fatal(self) -> RunStopped | None:
        """The exception that stops the run, or None for a site fault (recorded, the run goes on)."""
        if self.kind == DATA:
            return SiteDataError(self.site, self.reason, self.details)
        if self.kind == CODE:
            return SiteCodeError(self.site, self.reason, self.details)
        return None


def reply_failure(content: RecordDict, site: str) -> SiteFailure | None:
    """The failure an error reply carries, or None for a normal reply."""
    if STATUS not in content.config_records:
        return None
    status = dict(content.config_records[STATUS])
    details = {("site_traceback" if k == "traceback" else k): v for k, v in status.items()
               if k not in ("error", SITE, "kind")}
    # A reply without a kind comes from an older site: treat it as a fault, as such replies always were.
    return SiteFailure(str(status.get(SITE, site)), str(status.get("kind", FAULT)), str(status["error"]), details)


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


def _value_form(value: Any) -> list[Any]:
    """[type name, length]: a list's element type and length, a scalar's type and 1."""
    if isinstance(value, (list, tuple)):
        return [f"list[{type(value[0]).__name__ if value else ''}]", len(value)]
    return [type(value).__name__, len(value) if isinstance(value, (str, bytes)) else 1]


def record_forms(content: RecordDict) -> dict[str, dict[str, Any]]:
    """Every record of a message without its values: kind, and per key the value's type and length.

    Arrays are described by their shapes (:func:`array_shapes`); metrics and configs by their
    keys, so an audit of the ledger can see that no per-slice list ever left a site.
    """
    forms: dict[str, dict[str, Any]] = {}
    for name, record in content.array_records.items():
        forms[name] = {"kind": "ArrayRecord", "arrays": len(record)}
    for name, record in content.metric_records.items():
        forms[name] = {"kind": "MetricRecord", "keys": {k: _value_form(v) for k, v in record.items()}}
    for name, record in content.config_records.items():
        forms[name] = {"kind": "ConfigRecord", "keys": {k: _value_form(v) for k, v in record.items()}}
    return forms


DATA_SPLITS = ("train", "test")


def data_record(description: Mapping[str, Any]) -> dict[str, Any]:
    """A site's description of its data (:func:`data_description`'s form) as flat ConfigRecord values."""
    record: dict[str, Any] = {"poison-manifest-sha256": str(description.get("poison_manifest_sha256", "")),
                              "kspace-source": str(description.get("kspace_source", ""))}
    for split in DATA_SPLITS:
        part = description[split]
        record.update({f"{split}-folder": part["folder"], f"{split}-volumes-from": int(part["volumes_from"]),
                       f"{split}-volumes": int(part["volumes"]),
                       f"{split}-files": [f["name"] for f in part["files"]],
                       f"{split}-bytes": [int(f["bytes"]) for f in part["files"]],
                       f"{split}-sha256": [f["sha256"] for f in part["files"]]})
        if part.get("source_sha256"):
            record[f"{split}-source-sha256"] = list(part["source_sha256"])
    return record


def data_description(record: Mapping[str, Any]) -> dict[str, Any]:
    """The files a site uses per split (name, bytes, SHA-256), its volume ranges, its poison manifest and what
    its k-space is (``kspace_source``; "" from a site of an older version)."""
    description: dict[str, Any] = {"poison_manifest_sha256": str(record.get("poison-manifest-sha256", "")),
                                   "kspace_source": str(record.get("kspace-source", ""))}
    for split in DATA_SPLITS:
        files = zip(record[f"{split}-files"], record[f"{split}-bytes"], record[f"{split}-sha256"])
        description[split] = {"folder": str(record[f"{split}-folder"]),
                              "volumes_from": int(record[f"{split}-volumes-from"]),
                              "volumes": int(record[f"{split}-volumes"]),
                              "files": [{"name": str(n), "bytes": int(b), "sha256": str(h)} for n, b, h in files]}
        if record.get(f"{split}-source-sha256"):  # an image site: the source files behind its simulated ones
            description[split]["source_sha256"] = [str(h) for h in record[f"{split}-source-sha256"]]
    return description


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
