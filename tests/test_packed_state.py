"""What travels: a state dict packed into one array per dtype, read back exactly, averaged as before."""

from __future__ import annotations

import pytest
import torch
from flwr.app import ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fedforget.recon.models import PRESETS, build_varnet
from fedforget.strategies.protocol import PACKED, array_shapes, arrays_from_state, state_from_arrays


def varnet_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return build_varnet(PRESETS["tiny"]).state_dict()


def test_a_packed_state_is_one_array_and_reads_back_bit_for_bit_in_order() -> None:
    state = {**varnet_state(0), "steps": torch.tensor([3, 4], dtype=torch.int64)}
    record = arrays_from_state(state)
    assert len(record) == 2 and all(key.startswith(PACKED) for key in record), "one array per dtype"
    back = state_from_arrays(record)
    assert list(back) == list(state)
    for name, tensor in state.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor), name
    assert array_shapes(RecordDict({"arrays": record})) == [tuple(t.shape) for t in state.values()]


def test_fedavg_of_packed_states_equals_fedavg_of_one_array_per_tensor() -> None:
    states = [varnet_state(seed) for seed in (1, 2, 3)]
    weights = [5, 2, 9]

    def replies(pack: bool) -> list[RecordDict]:
        make = arrays_from_state if pack else (lambda s: ArrayRecord({k: v.contiguous() for k, v in s.items()}))
        return [RecordDict({"arrays": make(s), "metrics": MetricRecord({"num-examples": w})})
                for s, w in zip(states, weights)]

    packed = state_from_arrays(aggregate_arrayrecords(replies(True), "num-examples"))
    plain = state_from_arrays(aggregate_arrayrecords(replies(False), "num-examples"))
    assert packed.keys() == plain.keys()
    for name in plain:
        assert torch.equal(packed[name], plain[name]), name


def test_a_packed_array_that_does_not_match_its_layout_is_refused_and_audited_as_what_it_is() -> None:
    record = arrays_from_state({"w": torch.ones(2, 3)})
    key = next(iter(record))
    forged = ArrayRecord({key: torch.zeros(64 * 64)})  # image-sized data under a parameter's layout
    with pytest.raises(ValueError, match="layout declares 6"):
        state_from_arrays(forged)
    assert array_shapes(RecordDict({"arrays": forged})) == [(64 * 64,)]
    assert array_shapes(RecordDict({"arrays": record})) == [(2, 3)]
