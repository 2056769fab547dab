"""The overhead benchmark's explanations: a round split along its slowest lane, CPU time charged by role."""

from __future__ import annotations

import os

import pytest

from bench.cpu_usage import CpuSampler, Sample, process_role, read_sample
from bench.round_parts import PARTS, round_parts, summarise_rounds, train_rounds


def _handled(message_id: str, lane: int, start: float, compute: tuple[float, float], end: float) -> list[dict]:
    return [{"event": "handler_start", "id": message_id, "pid": lane, "t": start},
            {"event": "compute_start", "id": message_id, "pid": lane, "t": compute[0]},
            {"event": "compute_end", "id": message_id, "pid": lane, "t": compute[1]},
            {"event": "handler_end", "id": message_id, "pid": lane, "t": end}]


def _one_round() -> list[dict]:
    push = {"event": "server_pushed", "pid": 1, "t": 10.1,
            "messages": [{"id": m, "node": i, "type": "train"} for i, m in enumerate("abcd")]}
    events = [{"event": "server_push_start", "pid": 1, "t": 10.0}, push]
    events += _handled("a", 7, 10.2, (10.3, 11.3), 11.4)  # lane 7: a then b, 0.1 s apart
    events += _handled("b", 7, 11.5, (11.6, 12.6), 12.8)
    events += _handled("c", 8, 10.25, (10.3, 11.2), 11.3)  # lane 8: c then d, finishes first
    events += _handled("d", 8, 11.3, (11.35, 12.3), 12.4)
    return events


def test_a_round_splits_along_its_slowest_lane_and_the_parts_add_up() -> None:
    events = _one_round()
    parts = round_parts(events, train_rounds(events, sites=4, rounds=1)[0])
    assert parts["seconds"] == pytest.approx(2.8)
    assert parts["push"] == pytest.approx(0.1)
    assert parts["wait_first_handler"] == pytest.approx(0.1)
    assert parts["compute"] == pytest.approx(2.0)
    assert parts["handler_rest"] == pytest.approx(0.5)  # (1.2 - 1.0) + (1.3 - 1.0)
    assert parts["between_handlers"] == pytest.approx(0.1)
    assert sum(parts[k] for k in PARTS) == pytest.approx(parts["seconds"])
    assert parts["messages_per_lane"] == [2, 2]
    assert parts["lane_compute"] == pytest.approx([1.85, 2.0])
    summary = summarise_rounds([parts, parts])
    assert summary["rounds_with_uneven_lanes"] == 0
    assert summary["mean_lane_compute_spread"] == pytest.approx(0.15)


def test_a_trace_without_enough_train_rounds_is_an_error_that_says_so() -> None:
    with pytest.raises(ValueError, match="1 train rounds of 4 messages, expected 2"):
        train_rounds(_one_round(), sites=4, rounds=2)


def test_cpu_time_is_interpolated_at_window_ends_and_charged_by_role() -> None:
    cpu = CpuSampler()
    # pid 10 is the root, 11 its child (retitled by Ray between samples), 12 a stranger; 13 starts inside
    # the window; pid 14 is reused by a new process (another start tick).
    cpu.samples = [Sample(0.0, idle=100.0, processes={10: (1, "root", 0.0, 5), 11: (10, "ray::A", 0.0, 6),
                                                       12: (1, "other", 0.0, 7), 14: (10, "old", 9.0, 8)}),
                   Sample(2.0, idle=101.0, processes={10: (1, "root", 0.2, 5), 11: (10, "ray::A.run", 2.0, 6),
                                                       12: (1, "other", 0.4, 7), 13: (11, "child", 0.5, 9),
                                                       14: (10, "new", 1.0, 10)})]
    usage = cpu.usage([(0.5, 1.5)], root=10, label=lambda pid, command: command)
    assert usage["window_seconds"] == pytest.approx(1.0)
    assert usage["idle_seconds"] == pytest.approx(0.5)
    assert usage["by_role"] == pytest.approx({"ray::A.run": 1.0, "root": 0.1, "child": 0.25, "new": 0.5,
                                              "other processes": 0.2})
    assert usage["core_seconds"] == pytest.approx(len(os.sched_getaffinity(0)))
    with pytest.raises(ValueError, match="outside the sampled time"):
        cpu.usage([(1.0, 3.0)], root=10, label=lambda pid, command: command)


def test_a_live_sample_sees_this_process_and_counts_its_own_cost() -> None:
    with CpuSampler(interval=0.01) as cpu:
        sum(i * i for i in range(200_000))
    assert os.getpid() in cpu.samples[-1].processes
    assert len(cpu.samples) >= 2
    assert cpu.sampler_seconds > 0


def test_a_known_process_command_is_not_read_again_but_a_new_process_is() -> None:
    first = read_sample()
    started = first.processes[os.getpid()][3]
    known = {(os.getpid(), started): "remembered"}
    sample = read_sample(known)
    assert sample.processes[os.getpid()][1] == "remembered"
    assert len(known) == len(sample.processes)  # every other process was read and remembered
    assert {command for (_, command, _, _) in sample.processes.values()} - {"remembered"}


@pytest.mark.parametrize(("command", "role"), [
    ("ray::ClientAppActor.run", "ray::ClientAppActor"),
    ("/v/bin/python /v/bin/flwr-simulation --runtime-api-address x", "flwr-simulation"),
    ("/v/bin/python -u /v/ray/_private/log_monitor.py --session-dir=x", "log_monitor.py"),
    ("/v/ray/core/src/ray/raylet/raylet --raylet_socket_name=x", "raylet"),
])
def test_processes_of_a_flower_run_get_short_role_names(command: str, role: str) -> None:
    assert process_role(command) == role


@pytest.mark.parametrize(("ratios", "call"), [
    ([1.01, 1.02, 1.03], "met"),
    ([1.08, 1.09, 1.10], "missed"),
    ([1.033, 1.087], "not distinguishable from the goal"),
    ([1.03], "one run: no interval"),
])
def test_the_overhead_verdict_accounts_for_the_spread_between_runs(ratios: list[float], call: str) -> None:
    from bench.federation_overhead import verdict

    result = verdict(ratios, goal=1.05)
    assert result["verdict"] == call
    assert result["mean_ratio"] == pytest.approx(sum(ratios) / len(ratios))
    if len(ratios) > 1:
        low, high = result["interval"]
        assert low < result["mean_ratio"] < high
