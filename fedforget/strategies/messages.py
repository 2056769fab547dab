"""The requests the server sends to the sites, typed: one frozen dataclass per message.

Each request holds what one message carries (its config values and its arrays) and is the
only place that message's config keys are spelled. ``to_record`` writes the message's
:class:`RecordDict`; ``from_record`` reads one back and raises :class:`MalformedMessage`,
naming the key, when a record or a config key the message needs is missing.

- :class:`SiteQuery` (``query.site``): which site a node is.
- :class:`TrainRequest` (``train``): a FedAvg round, or a history-based method's local round.
- :class:`EvaluateRequest` (``evaluate``): score a model (or zero-filled) on a site's splits.
- :class:`UnlearnRequest` (``train.unlearn``): one party's share of an unlearning exchange, of
  one of the kinds :class:`UnlearnMode` names.

The records are exactly those the senders built by hand before these classes existed (the
same record names, config keys, key order and value types), so a site of any version since
reads them alike. Replies are not typed here: see :func:`fedforget.strategies.protocol.metrics_reply`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, TypeVar

from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedforget.strategies.protocol import (
    ARRAYS,
    CONFIG,
    INPUT,
    ORIGINAL_KEY,
    REFERENCE,
    arrays_from_state,
    state_from_arrays,
)
from fedforget.unlearning.base import IMPORTANCE, Phase, RoundInputs
from fedforget.unlearning.history_base import FORGET_DATA, TRAIN_DATA

# Config keys shared by several requests.
PHASE = "phase"  # the phase (tag) a message belongs to; federation.fault matches it
EXCHANGE = "exchange"  # the number of a phase's exchange (attempts included); federation.fault counts it
LOCAL_STEPS = "local-steps"
ROUND_LR = "lr"  # the learning rate to train at (absent from a FedAvg round: the schedule's rate of server-round)
# Config keys of a ``train`` message.
FIRST_BATCH = "first-batch"
SERVER_ROUND = "server-round"
EXCLUDE_POISONED = "exclude-poisoned"
ROUND_DATA = "data"  # which stream to train on: "train" (default) or "forget" (the forget site's forget set)
# Config keys of an ``evaluate`` message.
SPLITS = "splits"
STEP = "step"
ZERO_FILLED_KEY = "zero-filled"  # set: score zero-filled reconstructions (no model travels)
# Config keys of a ``train.unlearn`` message.
METHOD, ROLE, KIND, STEPS = "method", "role", "kind", "steps"
INDEX = "index"  # the (first) batch a party computes on
BATCHES = "batches"  # how many batches an importance exchange covers
LOCAL_MODE = "local-mode"  # a local round's share: "direction" or "update"
# The config key of a ``query.site`` message.
PURPOSE = "purpose"
DISCOVER = "discover"

DATA_STREAMS = (TRAIN_DATA, FORGET_DATA)
_T = TypeVar("_T")


class MalformedMessage(ValueError):
    """A message lacks a record or a config key its request needs, or holds a value no request has."""


def _config(content: RecordDict, what: str) -> dict[str, Any]:
    """The message's ``config`` ConfigRecord as a dict.

    Raises:
        MalformedMessage: the message has no ``config`` record.
    """
    if CONFIG not in content.config_records:
        raise MalformedMessage(f"{what}: the message has no {CONFIG!r} ConfigRecord")
    return dict(content.config_records[CONFIG])


def _required(config: Mapping[str, Any], key: str, cast: Callable[[Any], _T], what: str) -> _T:
    """A config value the request cannot do without.

    Raises:
        MalformedMessage: the config lacks ``key``.
    """
    if key not in config:
        raise MalformedMessage(f"{what}: the config has no {key!r} (keys: {sorted(config)})")
    return cast(config[key])


def _optional(config: Mapping[str, Any], key: str, cast: Callable[[Any], _T]) -> _T | None:
    """A config value that only some senders set (None where it is absent)."""
    return cast(config[key]) if key in config else None


def _arrays(content: RecordDict, key: str, what: str) -> ArrayRecord:
    """One of the message's ArrayRecords.

    Raises:
        MalformedMessage: the message has no ArrayRecord ``key``.
    """
    if key not in content.array_records:
        raise MalformedMessage(f"{what}: the message has no {key!r} ArrayRecord")
    return content.array_records[key]


def _present(config: Mapping[str, Any]) -> ConfigRecord:
    """A ConfigRecord of the values that are set: an unset (None) value is not sent at all."""
    return ConfigRecord({key: value for key, value in config.items() if value is not None})


@dataclass(frozen=True)
class SiteQuery:
    """A ``query.site`` message: the site a node is, its data and its software (no arrays travel).

    Attributes:
        purpose: Why the server asks (the only sender, site discovery, sends ``discover``).
    """

    purpose: str = DISCOVER

    def to_record(self) -> RecordDict:
        """The message's content."""
        return RecordDict({CONFIG: ConfigRecord({PURPOSE: self.purpose})})

    @classmethod
    def from_record(cls, content: RecordDict) -> SiteQuery:
        """The query a message carries.

        Raises:
            MalformedMessage: the message lacks its config or ``purpose``.
        """
        return cls(_required(_config(content, "site query"), PURPOSE, str, "site query"))


@dataclass(frozen=True, kw_only=True)
class TrainRequest:
    """A ``train`` message: train ``local_steps`` steps from the sent weights and send the new ones back.

    A FedAvg round sets ``server_round`` (the schedule's learning rate) and ``exclude_poisoned``; a
    history-based method's round sets ``lr`` and ``data`` instead and is numbered by its sender
    (``exchange``). An unset (None) field is not sent.

    Attributes:
        model: The weights to train from.
        phase: The phase the round belongs to (``federated``, ``oracle``, ``unlearn/<method>``).
        local_steps: Local optimizer steps.
        first_batch: The site's first batch of the round (its position in the site's stream).
        server_round: FedAvg's round number (1-based).
        exclude_poisoned: Train without the poisoned slices (the oracle of a poisoned federation).
        lr: The learning rate to train at (None: the FedAvg schedule's rate of ``server_round``).
        data: The stream to train on: ``train`` or ``forget`` (PUF's negated round); None: ``train``.
        exchange: The sender's exchange number (attempts included).
    """

    model: ArrayRecord
    phase: str
    local_steps: int
    first_batch: int
    server_round: int | None = None
    exclude_poisoned: bool | None = None
    lr: float | None = None
    data: str | None = None
    exchange: int | None = None

    def __post_init__(self) -> None:
        if self.data is not None and self.data not in DATA_STREAMS:
            raise MalformedMessage(f"train request: data stream {self.data!r} is none of {DATA_STREAMS}")

    @property
    def fault_step(self) -> int:
        """What ``federation.fault`` counts: the exchange of a numbered round, else FedAvg's round (else 0)."""
        if self.exchange is not None:
            return self.exchange
        return self.server_round if self.server_round is not None else 0

    @property
    def on_forget_set(self) -> bool:
        """The round trains on the forget site's forget set (PUF's negated round), not its training stream."""
        return self.data == FORGET_DATA

    def numbered(self, exchange: int) -> TrainRequest:
        """The same request as exchange ``exchange`` (the arrays are shared, not copied)."""
        return replace(self, exchange=exchange)

    def to_config(self) -> ConfigRecord:
        """The message's config (a Flower strategy sends it with the arrays under its own keys)."""
        return _present({PHASE: self.phase, LOCAL_STEPS: self.local_steps, FIRST_BATCH: self.first_batch,
                         EXCLUDE_POISONED: self.exclude_poisoned, ROUND_LR: self.lr, ROUND_DATA: self.data,
                         SERVER_ROUND: self.server_round, EXCHANGE: self.exchange})

    def to_record(self) -> RecordDict:
        """The message's content."""
        return RecordDict({ARRAYS: self.model, CONFIG: self.to_config()})

    @classmethod
    def from_record(cls, content: RecordDict) -> TrainRequest:
        """The request a ``train`` message carries.

        Raises:
            MalformedMessage: the message lacks its arrays, its config, or one of ``phase``,
                ``local-steps``, ``first-batch``; or names an unknown data stream.
        """
        what = "train request"
        config = _config(content, what)
        return cls(model=_arrays(content, ARRAYS, what), phase=_required(config, PHASE, str, what),
                   local_steps=_required(config, LOCAL_STEPS, int, what),
                   first_batch=_required(config, FIRST_BATCH, int, what),
                   server_round=_optional(config, SERVER_ROUND, int),
                   exclude_poisoned=_optional(config, EXCLUDE_POISONED, bool), lr=_optional(config, ROUND_LR, float),
                   data=_optional(config, ROUND_DATA, str), exchange=_optional(config, EXCHANGE, int))


@dataclass(frozen=True, kw_only=True)
class EvaluateRequest:
    """An ``evaluate`` message: a site's scores of a model, or of zero-filled reconstructions.

    Attributes:
        splits: The splits to score, ``("test",)`` or ``("test", "train")`` (the forget site's).
        phase: The phase the scores belong to (``federated``, ``final/<model>``, ...).
        step: The phase's step (round) the scores belong to.
        model: The weights to score; None scores zero-filled reconstructions (no model travels).
        reference: The reference model of the calibrated membership audit (the oracle), if sent.
    """

    splits: tuple[str, ...]
    phase: str
    step: int
    model: ArrayRecord | None = None
    reference: ArrayRecord | None = None

    @property
    def zero_filled(self) -> bool:
        """Scores zero-filled reconstructions (the no-learning baseline), not a model."""
        return self.model is None

    def to_record(self) -> RecordDict:
        """The message's content (records in the order the sites have always received them)."""
        config = ConfigRecord({SPLITS: ",".join(self.splits), PHASE: self.phase, STEP: self.step,
                               ZERO_FILLED_KEY: self.zero_filled})
        records: dict[str, Any] = {CONFIG: config} if self.model is None else {ARRAYS: self.model, CONFIG: config}
        if self.reference is not None:
            records[REFERENCE] = self.reference
        return RecordDict(records)

    @classmethod
    def from_record(cls, content: RecordDict) -> EvaluateRequest:
        """The request an ``evaluate`` message carries.

        Raises:
            MalformedMessage: the message lacks its config, one of ``splits``, ``phase``, ``step``,
                ``zero-filled``, or the arrays of a model it does not score as zero-filled.
        """
        what = "evaluate request"
        config = _config(content, what)
        zero_filled = _required(config, ZERO_FILLED_KEY, bool, what)
        return cls(splits=tuple(_required(config, SPLITS, str, what).split(",")),
                   phase=_required(config, PHASE, str, what), step=_required(config, STEP, int, what),
                   model=None if zero_filled else _arrays(content, ARRAYS, what),
                   reference=content.array_records.get(REFERENCE))


class UnlearnMode(Enum):
    """What a party computes for one unlearning exchange (the value is the wire's ``local-mode``, where sent)."""

    GRADIENT_STEP = "step"  # its term's gradient on one batch (local_steps = 1)
    IMPORTANCES = "importances"  # a dampening phase's per-element importances over some batches
    DIRECTION = "direction"  # a guide role's mean gradient over a local round's batches
    LOCAL_UPDATE = "update"  # the change of its weights after a local round of its own term


# The fields each mode needs (every other one of these is None), in the order the config holds them.
_MODE_FIELDS: dict[UnlearnMode, tuple[str, ...]] = {
    UnlearnMode.GRADIENT_STEP: ("index",),
    UnlearnMode.IMPORTANCES: ("batches",),
    UnlearnMode.DIRECTION: ("index", "local_steps"),
    UnlearnMode.LOCAL_UPDATE: ("index", "local_steps", "lr"),
}
_MODE_KEYS = {"index": (INDEX, int), "batches": (BATCHES, int), "local_steps": (LOCAL_STEPS, int),
              "lr": (ROUND_LR, float)}


@dataclass(frozen=True)
class InputRecords:
    """A round's inputs (:class:`RoundInputs`) in the form they travel: ArrayRecords and numbers by name.

    Attributes:
        arrays: Parameter-shaped inputs by name (PGA's ball centre; a guide role's direction).
        values: Numbers by name (PGA's radius).
    """

    arrays: Mapping[str, ArrayRecord] = field(default_factory=dict)
    values: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, inputs: RoundInputs | None) -> InputRecords:
        """The travelling form of ``inputs`` (None: no inputs)."""
        if inputs is None:
            return cls()
        return cls({name: arrays_from_state(tensors) for name, tensors in inputs.tensors.items()},
                   {name: float(value) for name, value in inputs.values.items()})

    def round_inputs(self) -> RoundInputs:
        """The inputs as a party computes with them."""
        return RoundInputs(tensors={name: state_from_arrays(record) for name, record in self.arrays.items()},
                           values=dict(self.values))

    @classmethod
    def read(cls, content: RecordDict, config: Mapping[str, Any]) -> InputRecords:
        """The inputs a message carries: its ``input-<name>`` ArrayRecords and config values."""
        return cls({key[len(INPUT):]: record for key, record in content.array_records.items() if key.startswith(INPUT)},
                   {key[len(INPUT):]: float(value) for key, value in config.items() if key.startswith(INPUT)})


@dataclass(frozen=True, kw_only=True)
class UnlearnRequest:
    """A ``train.unlearn`` message: one party's share of an unlearning exchange, on the site's own data.

    Attributes:
        mode: What the party computes; it decides which of ``index``, ``batches``,
            ``local_steps`` and ``lr`` are set (``_MODE_FIELDS``).
        model: The current weights.
        method: The method's registry name.
        role: The party: ``forget`` or ``retain``.
        phase: The method's phase (its name).
        kind: The phase's kind (``importance`` for, and only for, :attr:`UnlearnMode.IMPORTANCES`).
        steps: The phase's optimizer steps.
        index: The batch of a gradient step, the first batch of a local round.
        batches: How many batches an importance exchange covers.
        local_steps: A local round's steps.
        lr: A local update's learning rate.
        inputs: The step's or round's inputs (a gradient step's, a local update's).
        original: The original model, for the roles a method compares with it.
        exchange: The sender's exchange number (attempts included).
    """

    mode: UnlearnMode
    model: ArrayRecord
    method: str
    role: str
    phase: str
    kind: str
    steps: int
    index: int | None = None
    batches: int | None = None
    local_steps: int | None = None
    lr: float | None = None
    inputs: InputRecords = field(default_factory=InputRecords)
    original: ArrayRecord | None = None
    exchange: int | None = None

    def __post_init__(self) -> None:
        wanted = _MODE_FIELDS[self.mode]
        missing = [name for name in wanted if getattr(self, name) is None]
        extra = [name for name in _MODE_KEYS if name not in wanted and getattr(self, name) is not None]
        if missing or extra:
            raise ValueError(f"unlearn request of mode {self.mode.name} needs {list(wanted)}: "
                             f"missing {missing}, not of this mode {extra}")
        if (self.mode is UnlearnMode.IMPORTANCES) != (self.kind == IMPORTANCE):
            raise ValueError(f"unlearn request of mode {self.mode.name} in a phase of kind {self.kind!r}: "
                             f"importances are exchanged in, and only in, {IMPORTANCE!r} phases")

    def party_phase(self) -> Phase:
        """The phase as the party runs it (its own role only)."""
        return Phase(self.phase, self.kind, self.steps, (self.role,))

    def numbered(self, exchange: int) -> UnlearnRequest:
        """The same request as exchange ``exchange`` (the arrays are shared, not copied)."""
        return replace(self, exchange=exchange)

    def to_record(self) -> RecordDict:
        """The message's content: weights, config, inputs, then the original (the order sites have always seen)."""
        local_mode = self.mode.value if self.local_steps is not None else None
        config = _present({METHOD: self.method, ROLE: self.role, PHASE: self.phase, KIND: self.kind,
                           STEPS: self.steps, INDEX: self.index, BATCHES: self.batches,
                           LOCAL_STEPS: self.local_steps, LOCAL_MODE: local_mode, ROUND_LR: self.lr,
                           **{INPUT + name: value for name, value in self.inputs.values.items()},
                           EXCHANGE: self.exchange})
        records: dict[str, Any] = {ARRAYS: self.model, CONFIG: config}
        records.update({INPUT + name: record for name, record in self.inputs.arrays.items()})
        if self.original is not None:
            records[ORIGINAL_KEY] = self.original
        return RecordDict(records)

    @classmethod
    def from_record(cls, content: RecordDict) -> UnlearnRequest:
        """The request a ``train.unlearn`` message carries.

        The mode is read as the sites always read it: an ``importance`` phase exchanges
        importances; else a message with ``local-steps`` is a local round, whose
        ``local-mode`` says which share; else it is one gradient step.

        Raises:
            MalformedMessage: the message lacks its arrays, its config, a key every request has
                (``method``, ``role``, ``phase``, ``kind``, ``steps``) or one its mode needs, or
                names an unknown ``local-mode``.
        """
        what = "unlearn request"
        config = _config(content, what)
        mode = _mode(config, what)
        fields = {name: _required(config, *_MODE_KEYS[name], what) for name in _MODE_FIELDS[mode]}
        return cls(mode=mode, model=_arrays(content, ARRAYS, what), method=_required(config, METHOD, str, what),
                   role=_required(config, ROLE, str, what), phase=_required(config, PHASE, str, what),
                   kind=_required(config, KIND, str, what), steps=_required(config, STEPS, int, what),
                   inputs=InputRecords.read(content, config), original=content.array_records.get(ORIGINAL_KEY),
                   exchange=_optional(config, EXCHANGE, int), **fields)


def _mode(config: Mapping[str, Any], what: str) -> UnlearnMode:
    """An unlearn message's mode, from its phase kind and whether (and how) it is a local round."""
    if _required(config, KIND, str, what) == IMPORTANCE:
        return UnlearnMode.IMPORTANCES
    if LOCAL_STEPS not in config:
        return UnlearnMode.GRADIENT_STEP
    local_mode = _required(config, LOCAL_MODE, str, what)
    local_modes = {UnlearnMode.DIRECTION.value: UnlearnMode.DIRECTION,
                   UnlearnMode.LOCAL_UPDATE.value: UnlearnMode.LOCAL_UPDATE}
    if local_mode not in local_modes:
        raise MalformedMessage(f"{what}: {LOCAL_MODE} {local_mode!r} is none of {sorted(local_modes)}")
    return local_modes[local_mode]


# What a RetryingSender numbers and sends (its attempts are exchanges that federation.fault counts).
NumberedRequest = TrainRequest | UnlearnRequest
