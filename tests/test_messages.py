"""The typed requests: each reads back what it writes, writes exactly the wire's records and keys, and names
what a malformed message lacks (Flower-free).

The expected records are spelled out here as literals, copied from what the senders built by hand
before the requests were typed: a change to the wire fails these tests, whatever the module says.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from flwr.app import ConfigRecord, MetricRecord, RecordDict
from torch import nn

from fedforget.configs.schema import UnlearningConfig
from fedforget.server.scoring import evaluation_content
from fedforget.strategies.link import Exchange, Ledger
from fedforget.strategies.messages import (
    EvaluateRequest,
    InputRecords,
    MalformedMessage,
    SiteQuery,
    TrainRequest,
    UnlearnMode,
    UnlearnRequest,
)
from fedforget.strategies.protocol import arrays_from_state
from fedforget.strategies.removal import FederatedWorker
from fedforget.strategies.replay import FederatedRoundWorker
from fedforget.unlearning import get_method
from fedforget.unlearning.base import FORGET, RETAIN, Phase, RoundInputs

STATE = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2)}
ARRAYS = arrays_from_state(STATE)
OTHER = arrays_from_state({"w": torch.zeros(2, 3), "b": torch.zeros(2)})
INPUTS = InputRecords({"centre": OTHER}, {"radius": 2.5})
COMMON = {"model": ARRAYS, "method": "pga", "role": FORGET, "phase": "ascent", "kind": "gradient", "steps": 5}

# Each message as the senders have always built it: its records in order, and its config's (key, type) in order.
SITE_QUERY = SiteQuery()
SITE_QUERY_WIRE = (["config"], [("purpose", "str")])
FEDAVG_ROUND = TrainRequest(model=ARRAYS, phase="oracle", local_steps=3, first_batch=3, exclude_poisoned=True,
                            server_round=2)
FEDAVG_ROUND_WIRE = (["arrays", "config"], [("phase", "str"), ("local-steps", "int"), ("first-batch", "int"),
                                            ("exclude-poisoned", "bool"), ("server-round", "int")])
HISTORY_ROUND = TrainRequest(model=ARRAYS, phase="unlearn/puf", local_steps=4, first_batch=8, lr=3e-4,
                             data="forget", exchange=2)
HISTORY_ROUND_WIRE = (["arrays", "config"], [("phase", "str"), ("local-steps", "int"), ("first-batch", "int"),
                                             ("lr", "float"), ("data", "str"), ("exchange", "int")])
EVALUATE_CONFIG = [("splits", "str"), ("phase", "str"), ("step", "int"), ("zero-filled", "bool")]
EVALUATION = EvaluateRequest(splits=("test",), phase="federated", step=3, model=ARRAYS)
EVALUATION_WIRE = (["arrays", "config"], EVALUATE_CONFIG)
FINAL_EVALUATION = EvaluateRequest(splits=("test", "train"), phase="final/ga", step=0, model=ARRAYS, reference=OTHER)
FINAL_EVALUATION_WIRE = (["arrays", "config", "reference"], EVALUATE_CONFIG)
ZERO_FILLED = EvaluateRequest(splits=("test", "train"), phase="final/zero_filled", step=0, reference=OTHER)
ZERO_FILLED_WIRE = (["config", "reference"], EVALUATE_CONFIG)
UNLEARN_CONFIG = [("method", "str"), ("role", "str"), ("phase", "str"), ("kind", "str"), ("steps", "int")]
GRADIENT_STEP = UnlearnRequest(mode=UnlearnMode.GRADIENT_STEP, index=1, inputs=INPUTS, exchange=1, **COMMON)
GRADIENT_STEP_WIRE = (["arrays", "config", "input-centre"],
                      UNLEARN_CONFIG + [("index", "int"), ("input-radius", "float"), ("exchange", "int")])
IMPORTANCES = UnlearnRequest(mode=UnlearnMode.IMPORTANCES, batches=3, exchange=4,
                             **{**COMMON, "kind": "importance", "method": "ssd"})
IMPORTANCES_WIRE = (["arrays", "config"], UNLEARN_CONFIG + [("batches", "int"), ("exchange", "int")])
DIRECTION = UnlearnRequest(mode=UnlearnMode.DIRECTION, index=6, local_steps=4, exchange=2,
                           **{**COMMON, "role": RETAIN})
DIRECTION_WIRE = (["arrays", "config"], UNLEARN_CONFIG + [("index", "int"), ("local-steps", "int"),
                                                          ("local-mode", "str"), ("exchange", "int")])
LOCAL_UPDATE = UnlearnRequest(mode=UnlearnMode.LOCAL_UPDATE, index=0, local_steps=4, lr=1e-4, inputs=INPUTS,
                              original=OTHER, exchange=3, **COMMON)
LOCAL_UPDATE_WIRE = (["arrays", "config", "input-centre", "original"],
                     UNLEARN_CONFIG + [("index", "int"), ("local-steps", "int"), ("local-mode", "str"),
                                       ("lr", "float"), ("input-radius", "float"), ("exchange", "int")])

CASES = {
    "site query": (SITE_QUERY, SITE_QUERY_WIRE),
    "fedavg round": (FEDAVG_ROUND, FEDAVG_ROUND_WIRE),
    "history round": (HISTORY_ROUND, HISTORY_ROUND_WIRE),
    "evaluation": (EVALUATION, EVALUATION_WIRE),
    "final evaluation": (FINAL_EVALUATION, FINAL_EVALUATION_WIRE),
    "zero-filled": (ZERO_FILLED, ZERO_FILLED_WIRE),
    "gradient step": (GRADIENT_STEP, GRADIENT_STEP_WIRE),
    "importances": (IMPORTANCES, IMPORTANCES_WIRE),
    "direction": (DIRECTION, DIRECTION_WIRE),
    "local update": (LOCAL_UPDATE, LOCAL_UPDATE_WIRE),
}


def wire(content: RecordDict) -> tuple[list[str], list[tuple[str, str]]]:
    """A message's record names and its config's keys with their value types, in order."""
    return list(content.keys()), [(k, type(v).__name__) for k, v in content.config_records["config"].items()]


@pytest.mark.parametrize("name", CASES)
def test_a_request_reads_back_what_it_writes(name: str) -> None:
    request, _ = CASES[name]
    assert type(request).from_record(request.to_record()) == request


@pytest.mark.parametrize("name", CASES)
def test_a_request_writes_exactly_the_wires_records_and_keys(name: str) -> None:
    request, expected = CASES[name]
    assert wire(request.to_record()) == expected


def test_the_values_are_the_ones_the_sites_read() -> None:
    assert dict(DIRECTION.to_record()["config"])["local-mode"] == "direction"
    assert dict(LOCAL_UPDATE.to_record()["config"])["local-mode"] == "update"
    assert dict(ZERO_FILLED.to_record()["config"]) == {"splits": "test,train", "phase": "final/zero_filled",
                                                       "step": 0, "zero-filled": True}
    assert dict(SITE_QUERY.to_record()["config"]) == {"purpose": "discover"}
    assert FEDAVG_ROUND.fault_step == 2 and HISTORY_ROUND.fault_step == 2 and HISTORY_ROUND.on_forget_set
    assert HISTORY_ROUND.numbered(7).to_record()["config"]["exchange"] == 7


def _without_config_key(content: RecordDict, key: str) -> RecordDict:
    records: dict[str, Any] = dict(content.items())
    records["config"] = ConfigRecord({k: v for k, v in content["config"].items() if k != key})
    return RecordDict(records)


# Keys a request may lack: a FedAvg round has no exchange, lr or data, a history round no server-round; a message
# without local-steps is a gradient step (as the sites have always read it), not a malformed local round.
OPTIONAL = ("exchange", "server-round", "exclude-poisoned", "lr", "data", "local-steps")
MALFORMED = [(name, key) for name, (_, (_, config)) in CASES.items() for key, _ in config
             if not key.startswith("input-") and key not in OPTIONAL]
MALFORMED += [("local update", "lr"), ("history round", "lr")]


@pytest.mark.parametrize(("name", "key"), MALFORMED)
def test_a_message_without_a_config_key_it_needs_is_refused_naming_the_key(name: str, key: str) -> None:
    request, _ = CASES[name]
    content = _without_config_key(request.to_record(), key)
    if (name, key) == ("history round", "lr"):  # its lr is optional (a FedAvg round has none): read back, it is unset
        assert TrainRequest.from_record(content).lr is None
        return
    with pytest.raises(MalformedMessage, match=f"'{key}'"):
        type(request).from_record(content)


@pytest.mark.parametrize("name", CASES)
def test_a_message_without_its_config_or_its_model_is_refused_naming_the_record(name: str) -> None:
    request, (records, _) = CASES[name]
    content = request.to_record()
    for missing in [r for r in records if r in ("config", "arrays")]:
        with pytest.raises(MalformedMessage, match=f"'{missing}'"):
            type(request).from_record(RecordDict({k: v for k, v in content.items() if k != missing}))


def test_unknown_local_mode_and_data_stream_are_refused() -> None:
    content = DIRECTION.to_record()
    content["config"]["local-mode"] = "sideways"
    with pytest.raises(MalformedMessage, match="sideways"):
        UnlearnRequest.from_record(content)
    with pytest.raises(MalformedMessage, match="teleport"):
        TrainRequest(model=ARRAYS, phase="x", local_steps=1, first_batch=0, data="teleport")


def test_a_request_of_one_mode_with_another_modes_fields_is_refused() -> None:
    with pytest.raises(ValueError, match="missing \\['index'\\]"):
        UnlearnRequest(mode=UnlearnMode.GRADIENT_STEP, **COMMON)
    with pytest.raises(ValueError, match="not of this mode \\['lr'\\]"):
        UnlearnRequest(mode=UnlearnMode.DIRECTION, index=0, local_steps=2, lr=0.1, **COMMON)
    with pytest.raises(ValueError, match="importance"):
        UnlearnRequest(mode=UnlearnMode.IMPORTANCES, batches=2, **COMMON)


def test_inputs_travel_as_records_and_come_back_as_the_same_tensors() -> None:
    inputs = RoundInputs(tensors={"centre": STATE}, values={"radius": 2})
    back = InputRecords.of(inputs).round_inputs()
    assert back.values == {"radius": 2.0} and list(back.tensors) == ["centre"]
    assert all(torch.equal(back.tensors["centre"][k], v) for k, v in STATE.items())


class _RecordingLink:
    """A site link that keeps what it is asked to send and answers every site with the model's weights."""

    def __init__(self) -> None:
        self.ledger = Ledger()
        self.sent: list[tuple[str, dict[str, RecordDict]]] = []

    def send(self, message_type: str, contents: dict[str, RecordDict], phase: str, step: int) -> Exchange:
        self.sent.append((message_type, dict(contents)))
        reply = RecordDict({"arrays": ARRAYS, "metrics": MetricRecord({"num-examples": 2, "loss": 0.5})})
        return Exchange({site: reply for site in contents}, {}, {})


def test_the_removal_senders_send_the_wires_messages() -> None:
    link, model = _RecordingLink(), nn.Linear(3, 2)
    worker = FederatedWorker(link, get_method("bad_teacher", UnlearningConfig()), "knee-0", ["brain-0"],
                             {FORGET: 3, RETAIN: 4}, "unlearn/bad_teacher", original=model.state_dict())
    ascent = Phase("ascent", "gradient", 5, (FORGET, RETAIN))
    inputs = RoundInputs(tensors={"centre": model.state_dict()}, values={"radius": 2.5})
    worker.gradients(ascent, {FORGET: 1, RETAIN: 2}, model, {FORGET: inputs})
    worker.importances(Phase("dampen", "importance", 1, (FORGET,)), {FORGET: 3}, model)
    worker.mean_gradients(ascent, {RETAIN: 6}, 4, model)
    worker.local_updates(ascent, {FORGET: 0}, 4, model, inputs, 1e-4)
    sent = [(kind, {site: wire(content) for site, content in contents.items()}) for kind, contents in link.sent]
    retain_step = (["arrays", "config", "original"], GRADIENT_STEP_WIRE[1][:6] + [("exchange", "int")])
    assert sent == [
        ("train.unlearn", {"knee-0": GRADIENT_STEP_WIRE, "brain-0": retain_step}),
        ("train.unlearn", {"knee-0": IMPORTANCES_WIRE}),
        ("train.unlearn", {"brain-0": (["arrays", "config", "original"], DIRECTION_WIRE[1])}),
        ("train.unlearn", {"knee-0": (["arrays", "config", "input-centre"], LOCAL_UPDATE_WIRE[1])}),
    ]
    exchanges = [content["config"]["exchange"] for _, contents in link.sent for content in contents.values()]
    assert exchanges == [1, 1, 2, 3, 4], "every attempt is its own exchange; one exchange's sites share its number"


def test_the_history_round_and_evaluation_senders_send_the_wires_messages() -> None:
    link = _RecordingLink()
    FederatedRoundWorker(link, "unlearn/puf").local_round(["knee-0"], STATE, 8, 4, 3e-4, data="forget")
    assert [(kind, wire(contents["knee-0"])) for kind, contents in link.sent] == [("train", HISTORY_ROUND_WIRE)]
    assert wire(evaluation_content("brain-0", "knee-0", STATE, "federated", 3)) == EVALUATION_WIRE
    assert wire(evaluation_content("knee-0", "knee-0", STATE, "final/ga", 0, STATE)) == FINAL_EVALUATION_WIRE
    assert wire(evaluation_content("knee-0", "knee-0", None, "final/zero_filled", 0, STATE)) == ZERO_FILLED_WIRE
    assert wire(evaluation_content("brain-0", "knee-0", None, "final/zero_filled", 0, STATE)) == (
        ["config"], EVALUATE_CONFIG)
