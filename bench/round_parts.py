"""Where one FedAvg round's time goes in a simulated Flower run, from its trace events.

A round runs from the ServerApp's push of the train messages to the last reply's
handler end. The sites' handlers run on the Ray actors ("lanes"), a few messages
each; the round lasts as long as its slowest lane. Along that lane the round splits
into: the server's push, the wait until the lane's first handler (Flower's simulation
runtime pulls new messages every 0.1 s, then Ray hands them to an actor), the local
training itself (``compute_start`` .. ``compute_end`` in the train handler), the rest
of each handler (reading the round's arrays into the model, returning the new ones,
first-use data reads), and the gaps between the lane's handlers.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

PARTS = ("push", "wait_first_handler", "compute", "handler_rest", "between_handlers")


def train_rounds(events: list[dict[str, Any]], sites: int, rounds: int) -> list[dict[str, Any]]:
    """The first ``rounds`` pushes of one train message per site (the original model's rounds), in order."""
    pushes = [e for e in events if e["event"] == "server_pushed" and len(e["messages"]) == sites
              and all(m["type"] == "train" for m in e["messages"])]
    if len(pushes) < rounds:
        raise ValueError(f"the trace holds {len(pushes)} train rounds of {sites} messages, expected {rounds}: "
                         f"was $FEDFORGET_TRACE passed to every process?")
    return pushes[:rounds]


def round_parts(events: list[dict[str, Any]], push: dict[str, Any]) -> dict[str, Any]:
    """One round's split along its slowest lane, plus each lane's message count and compute."""
    by_id: dict[str, dict[str, float]] = defaultdict(dict)
    lane_of: dict[str, int] = {}
    for event in events:
        if event["event"] in ("handler_start", "handler_end", "compute_start", "compute_end") and "id" in event:
            by_id[event["id"]][event["event"]] = event["t"]
            lane_of[event["id"]] = event["pid"]
    started = max(e["t"] for e in events if e["event"] == "server_push_start" and e["pid"] == push["pid"]
                  and e["t"] <= push["t"])
    lanes: dict[int, list[dict[str, float]]] = defaultdict(list)
    for message in push["messages"]:
        times = by_id.get(message["id"], {})
        if len(times) != 4:
            raise ValueError(f"message {message['id']} lacks handler or compute events in the trace")
        lanes[lane_of[message["id"]]].append(times)
    ends = {lane: max(t["handler_end"] for t in handled) for lane, handled in lanes.items()}
    slowest = sorted(lanes[max(ends, key=ends.__getitem__)], key=lambda t: t["handler_start"])
    compute = sum(t["compute_end"] - t["compute_start"] for t in slowest)
    handled = sum(t["handler_end"] - t["handler_start"] for t in slowest)
    gaps = sum(b["handler_start"] - a["handler_end"] for a, b in zip(slowest, slowest[1:]))
    return {"started": started, "ended": max(ends.values()), "seconds": max(ends.values()) - started,
            "push": push["t"] - started,
            "wait_first_handler": slowest[0]["handler_start"] - push["t"], "compute": compute,
            "handler_rest": handled - compute, "between_handlers": gaps,
            "messages_per_lane": sorted(len(h) for h in lanes.values()),
            "lane_compute": sorted(sum(t["compute_end"] - t["compute_start"] for t in h) for h in lanes.values())}


def summarise_rounds(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean seconds of each part over the rounds, and how often the lanes were unevenly loaded."""
    uneven = sum(1 for p in parts if len(set(p["messages_per_lane"])) > 1)
    return {"rounds": len(parts), "mean_seconds": statistics.fmean(p["seconds"] for p in parts),
            "mean_parts": {k: statistics.fmean(p[k] for p in parts) for k in PARTS},
            "rounds_with_uneven_lanes": uneven,
            "mean_lane_compute_spread": statistics.fmean(p["lane_compute"][-1] - p["lane_compute"][0]
                                                         for p in parts)}
