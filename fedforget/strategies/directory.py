"""Learn which node is which site: ask every node, check that each configured site answers once."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedforget.configs.schema import ExperimentConfig
from fedforget.strategies.link import Ledger, _flower_reason, send_and_receive
from fedforget.strategies.protocol import (
    CONFIG,
    METRICS,
    SITE_QUERY,
    SiteError,
    SiteFailure,
    data_description,
    reply_failure,
)

DISCOVERY = "discover"


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


def wait_for_nodes(grid: Grid, count: int, timeout: float) -> list[int]:
    """Node ids once ``count`` nodes are connected (deployed sites may join late)."""
    deadline = time.monotonic() + timeout
    while len(nodes := list(grid.get_node_ids())) < count:
        if time.monotonic() > deadline:
            raise SiteError("federation", f"only {len(nodes)} of {count} site nodes connected within {timeout:.0f} s")
        time.sleep(0.5)
    return nodes


def discover_sites(grid: Grid, cfg: ExperimentConfig, timeout: float,
                   ledger: Ledger | None = None) -> dict[str, SiteInfo]:
    """Ask every connected node which site it is; every configured site must answer exactly once.

    Each site also describes the files it uses (names, sizes, SHA-256, volume ranges): in a
    deployment only the site can read them.

    Raises:
        SiteDataError: a site's data is not usable.
        SiteError: a node failed otherwise (unknown site, unavailable), two nodes claim one
            site, or a configured site never answered.
    """
    nodes = wait_for_nodes(grid, len(cfg.sites), timeout)
    messages = [Message(RecordDict({CONFIG: ConfigRecord({"purpose": "discover"})}), message_type=SITE_QUERY,
                        dst_node_id=node) for node in nodes]
    sent = {message.metadata.dst_node_id: message for message in messages}
    found: dict[str, SiteInfo] = {}
    for answer in send_and_receive(grid, messages, timeout):
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
        info, metrics = answer.content.config_records["info"], answer.content.metric_records[METRICS]
        if name in found:
            raise SiteError(name, f"nodes {found[name].node_id} and {node} both claim to be site {name}")
        found[name] = SiteInfo(name, node, str(info["anatomy"]), str(info["device"]),
                               int(metrics["train-slices"]), int(metrics["test-slices"]),
                               int(metrics["train-volumes"]), int(metrics["test-volumes"]),
                               bool(info.get("simulated", False)),
                               data_description(answer.content.config_records["data"]))
    missing = [name for name in cfg.site_names if name not in found]
    if missing:
        raise SiteError(missing[0], f"configured site(s) {missing} did not answer the site query")
    return {name: found[name] for name in cfg.site_names}


def _claimed_site(answer: Message, failure: SiteFailure | None) -> str:
    """The site a node says it is (a node that failed before knowing it is named by its id)."""
    if answer.has_error():
        return f"node-{answer.metadata.src_node_id}"
    if failure is not None:
        return failure.site
    return str(answer.content.config_records["info"]["site"])
