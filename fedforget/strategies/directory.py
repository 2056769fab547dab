"""Learn which node is which site: ask every node, check that each configured site answers once."""

from __future__ import annotations

import time
from dataclasses import dataclass

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedforget.configs.schema import ExperimentConfig
from fedforget.strategies.link import answer_failure, send_and_receive
from fedforget.strategies.protocol import CONFIG, METRICS, SITE, SITE_QUERY, STATUS, SiteError


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


def wait_for_nodes(grid: Grid, count: int, timeout: float) -> list[int]:
    """Node ids once ``count`` nodes are connected (deployed sites may join late)."""
    deadline = time.monotonic() + timeout
    while len(nodes := list(grid.get_node_ids())) < count:
        if time.monotonic() > deadline:
            raise SiteError("federation", f"only {len(nodes)} of {count} site nodes connected within {timeout:.0f} s")
        time.sleep(0.5)
    return nodes


def discover_sites(grid: Grid, cfg: ExperimentConfig, timeout: float) -> dict[str, SiteInfo]:
    """Ask every connected node which site it is; every configured site must answer exactly once.

    Raises:
        SiteError: a node failed (bad data, unknown site), two nodes claim one site,
            or a configured site never answered.
    """
    nodes = wait_for_nodes(grid, len(cfg.sites), timeout)
    messages = [Message(RecordDict({CONFIG: ConfigRecord({"purpose": "discover"})}), message_type=SITE_QUERY,
                        dst_node_id=node) for node in nodes]
    found: dict[str, SiteInfo] = {}
    for answer in send_and_receive(grid, messages, timeout):
        node = answer.metadata.src_node_id
        if (reason := answer_failure(answer)) is not None:
            site = answer.content.config_records[STATUS][SITE] if not answer.has_error() else f"node-{node}"
            raise SiteError(str(site), reason)
        info, metrics = answer.content.config_records["info"], answer.content.metric_records[METRICS]
        name = str(info["site"])
        if name in found:
            raise SiteError(name, f"nodes {found[name].node_id} and {node} both claim to be site {name}")
        found[name] = SiteInfo(name, node, str(info["anatomy"]), str(info["device"]),
                               int(metrics["train-slices"]), int(metrics["test-slices"]),
                               int(metrics["train-volumes"]), int(metrics["test-volumes"]))
    missing = [name for name in cfg.site_names if name not in found]
    if missing:
        raise SiteError(missing[0], f"configured site(s) {missing} did not answer the site query")
    return {name: found[name] for name in cfg.site_names}
