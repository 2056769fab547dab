"""Learn which node is which site: ask every node, check that each configured site answers once."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

from fedforget.configs.schema import ExperimentConfig
from fedforget.strategies.link import Ledger, _flower_reason, send_and_receive
from fedforget.strategies.messages import SiteQuery
from fedforget.strategies.protocol import (
    METRICS,
    SITE_QUERY,
    SiteError,
    SiteFailure,
    data_description,
    reply_failure,
)

DISCOVERY = "discover"
# What each site reports about the software it runs on (results.json sites.<site>.runtime).
RUNTIME_KEYS = ("python", "torch", "fedforget", "flwr")


@dataclass(frozen=True)
class SiteInfo:
    """What a site reported about itself."""

    name: str
    node_id: int
    anatomy: str
    device: str
    train_slices: int
    test_slices: int
    train_volumes: int
    test_volumes: int
    simulated: bool = False
    data: dict[str, Any] = field(default_factory=dict, compare=False)
    runtime: dict[str, str] = field(default_factory=dict, compare=False)


# Nodes that connected this long before the rest are asked at once: in a simulation every SuperNode is
# there from the start, so a wrong SuperNode count is reported by the first answer, not after timeout_s.
EARLY_ASK_S = 2.0


def discover_sites(grid: Grid, cfg: ExperimentConfig, timeout: float,
                   ledger: Ledger | None = None) -> dict[str, SiteInfo]:
    """Ask every connected node which site it is; every configured site must answer exactly once.

    Each site also describes the files it uses (names, sizes, SHA-256, volume ranges): in a
    deployment only the site can read them. Nodes are asked as they connect (deployed sites
    may join late); a node's answer is never asked for twice.

    Raises:
        SiteDataError: a site's data is not usable.
        SiteError: a node failed otherwise (unknown site, unavailable, a simulation with another
            SuperNode count than sites), two nodes claim one site, or a configured site never answered.
    """
    started = time.monotonic()
    found: dict[str, SiteInfo] = {}
    asked: set[int] = set()
    while len(found) < len(cfg.sites):
        nodes = [node for node in grid.get_node_ids() if node not in asked]
        waited = time.monotonic() - started
        if nodes and (len(asked) + len(nodes) >= len(cfg.sites) or waited > EARLY_ASK_S):
            _ask(grid, nodes, timeout, ledger, found)
            asked.update(nodes)
            continue
        if waited > timeout:
            raise SiteError("federation", f"only {len(asked) + len(nodes)} of {len(cfg.sites)} site nodes "
                                          f"connected within {timeout:.0f} s")
        time.sleep(0.5)
    missing = [name for name in cfg.site_names if name not in found]
    if missing:
        raise SiteError(missing[0], f"configured site(s) {missing} did not answer the site query")
    return {name: found[name] for name in cfg.site_names}


def _ask(grid: Grid, nodes: list[int], timeout: float, ledger: Ledger | None, found: dict[str, SiteInfo]) -> None:
    """Send the site query to ``nodes`` and record each answer in ``found`` (raising on the first failure)."""
    messages = [Message(SiteQuery().to_record(), message_type=SITE_QUERY, dst_node_id=node) for node in nodes]
    sent = {message.metadata.dst_node_id: message for message in messages}
    answers = send_and_receive(grid, messages, timeout)
    silent = sorted(set(sent) - {answer.metadata.src_node_id for answer in answers})
    for answer in answers:
        node = answer.metadata.src_node_id
        failure = None if answer.has_error() else reply_failure(answer.content, f"node-{node}")
        name = _claimed_site(answer, failure)
        if ledger is not None:
            reason = _flower_reason(answer.error.reason) if answer.has_error() else ""
            ledger.record(DISCOVERY, 0, name, sent[node], answer, failure, reason)
        if answer.has_error():
            raise SiteError(name, _flower_reason(answer.error.reason))
        if failure is not None:
            raise failure.fatal() or SiteError(failure.site, failure.reason)
        if name in found:
            raise SiteError(name, f"nodes {found[name].node_id} and {node} both claim to be site {name}")
        found[name] = _site_info(name, node, answer)
    if silent:
        raise SiteError("federation", f"node(s) {silent} did not answer the site query within {timeout:.0f} s")


def _site_info(name: str, node: int, answer: Message) -> SiteInfo:
    info, metrics = answer.content.config_records["info"], answer.content.metric_records[METRICS]
    return SiteInfo(name, node, str(info["anatomy"]), str(info["device"]),
                    int(metrics["train-slices"]), int(metrics["test-slices"]),
                    int(metrics["train-volumes"]), int(metrics["test-volumes"]),
                    bool(info.get("simulated", False)),
                    data_description(answer.content.config_records["data"]),
                    runtime={key: str(info[key]) for key in RUNTIME_KEYS if key in info})


def _claimed_site(answer: Message, failure: SiteFailure | None) -> str:
    """The site a node says it is (a node that failed before knowing it is named by its id)."""
    if answer.has_error():
        return f"node-{answer.metadata.src_node_id}"
    if failure is not None:
        return failure.site
    return str(answer.content.config_records["info"]["site"])
