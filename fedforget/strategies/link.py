"""The server's line to the sites: exchanges by site name, failures as reasons, a ledger of traffic."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from fedforget.strategies.protocol import (
    SiteError,
    SiteFailure,
    array_shapes,
    content_bytes,
    record_forms,
    reply_failure,
)
from fedforget.strategies.trace import trace, tracing


@dataclass
class LedgerEntry:
    """One message to a site and its answer."""

    phase: str
    step: int
    site: str
    message_type: str
    bytes_down: int
    bytes_up: int
    shapes_up: list[tuple[int, ...]]
    status: str
    reason: str = ""
    error_kind: str = ""
    records_up: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Ledger:
    """Every exchange of the run: who was asked what, what came back, how many bytes."""

    entries: list[LedgerEntry] = field(default_factory=list)

    def bytes_in(self, phase: str) -> int:
        """Bytes both ways of every message of ``phase`` (a phase name or a ``prefix/``)."""
        return sum(e.bytes_down + e.bytes_up for e in self.entries
                   if e.phase == phase or (phase.endswith("/") and e.phase.startswith(phase)))

    def messages_in(self, phase: str) -> int:
        """Messages of ``phase`` (every attempt, failed ones included)."""
        return sum(e.phase == phase for e in self.entries)

    def trained_on(self, phase: str) -> list[str]:
        """Sites that received training work in ``phase``."""
        return sorted({e.site for e in self.entries
                       if e.phase == phase and e.message_type.startswith("train") and e.status == "ok"})

    def to_json(self) -> list[dict[str, Any]]:
        return [asdict(e) for e in self.entries]

    def record(self, phase: str, step: int, site: str, message: Message, reply: Message | None,
               failure: SiteFailure | None, reason: str = "") -> None:
        """One message and its answer (``reply`` None: no usable answer; ``reason`` says why)."""
        content = reply.content if reply is not None and not reply.has_error() else None
        ok = content is not None and failure is None
        self.entries.append(LedgerEntry(
            phase=phase, step=step, site=site, message_type=message.metadata.message_type,
            bytes_down=content_bytes(message.content), bytes_up=content_bytes(content) if ok else 0,
            shapes_up=array_shapes(content) if ok else [], status="ok" if ok else "failed",
            reason=failure.reason if failure is not None else reason,
            error_kind=failure.kind if failure is not None else ("" if ok else "fault"),
            records_up=record_forms(content) if content is not None else {},
        ))


@dataclass
class Exchange:
    """The answers of one round of messages: contents by site, and failures by site."""

    replies: dict[str, RecordDict]
    failures: dict[str, str]
    messages: dict[str, Message]
    poll_latency: float = 0.0

    def require_all(self) -> dict[str, RecordDict]:
        """The replies, or a SiteError naming the first site that failed."""
        if self.failures:
            site, reason = next(iter(self.failures.items()))
            raise SiteError(site, reason)
        return self.replies


class SiteLink:
    """Sends messages to sites by name over a Flower Grid and records them in a ledger."""

    def __init__(self, grid: Grid, nodes: Mapping[str, int], ledger: Ledger, timeout: float) -> None:
        self.grid = grid
        self.nodes = dict(nodes)
        self.sites = {node: site for site, node in self.nodes.items()}
        self.ledger = ledger
        self.timeout = timeout

    def send(self, message_type: str, contents: Mapping[str, RecordDict], phase: str, step: int) -> Exchange:
        """Send ``contents[site]`` to each site as ``message_type`` and wait for the answers."""
        messages = [Message(content, message_type=message_type, dst_node_id=self.nodes[site])
                    for site, content in contents.items()]
        return self.send_messages(messages, phase, step)

    def send_messages(self, messages: list[Message], phase: str, step: int) -> Exchange:
        """Send prepared messages (e.g. from a Flower strategy) and sort the answers by site.

        Raises:
            RunStopped: a site replied that its data is bad or that its code failed (the run must stop).
        """
        sent = {self.sites[m.metadata.dst_node_id]: m for m in messages}
        started = time.monotonic()
        answers = send_and_receive(self.grid, messages, self.timeout) if messages else []
        noticed = time.time()
        replies, failures, by_site, fatal = {}, {}, {}, []
        for answer in answers:
            site = self.sites.get(answer.metadata.src_node_id, f"node-{answer.metadata.src_node_id}")
            by_site[site] = answer
            failure = None if answer.has_error() else reply_failure(answer.content, site)
            if answer.has_error():
                failures[site] = _flower_reason(answer.error.reason)
            elif failure is not None:
                failures[site] = failure.reason
                if (stop := failure.fatal()) is not None:
                    fatal.append(stop)
            else:
                replies[site] = answer.content
            if site in sent:
                self.ledger.record(phase, step, site, sent[site], answer, failure, failures.get(site, ""))
        for site in sent:
            if site not in by_site:
                failures[site] = f"no answer within {self.timeout:.0f} s ({time.monotonic() - started:.0f} s waited)"
                self.ledger.record(phase, step, site, sent[site], None, None, failures[site])
        if fatal:
            raise fatal[0]
        return Exchange(replies, failures, by_site, _poll_latency(answers, noticed, time.monotonic() - started))


def _poll_latency(answers: list[Message], noticed: float, waited: float) -> float:
    """How long after the last reply was made the server saw it: the polling schedule, not work.

    A reply's ``created_at`` is stamped by the site's clock; where that clock disagrees with the
    server's (a deployment without synchronised clocks), no latency is claimed.
    """
    if not answers:
        return 0.0
    latency = noticed - max(answer.metadata.created_at for answer in answers)
    return latency if 0.0 <= latency <= waited else 0.0


def _flower_reason(reason: str) -> str:
    """The useful part of a Flower/Ray error reason (which wraps the site's traceback or Ray's report)."""
    marker = "Message: "
    if marker in reason:
        reason = reason.rsplit(marker, 1)[1]
    elif ">:<'" in reason:  # "<class 'ray...ActorDiedError'>:<'The actor died ...\n details"
        kind = reason.split("'")[1].rsplit(".", 1)[-1] if "'" in reason else "error"
        reason = f"{kind}: {reason.split('>:<', 1)[1].lstrip(chr(39)).splitlines()[0]}"
    return reason.strip().strip("'>").strip() or "the site failed without a reason"


def send_and_receive(grid: Grid, messages: Iterable[Message], timeout: float, first_poll: float = 0.05,
                     max_poll: float = 0.25) -> list[Message]:
    """``grid.send_and_receive`` with a short, growing polling interval.

    Flower 1.42's deployment grid (``HttpGrid``) sleeps a fixed 3 s between pulls, which
    adds 1.5 s on average to every exchange with the sites. This pushes the messages,
    then pulls every ``first_poll`` seconds, growing by half each time up to ``max_poll``:
    quick replies arrive at once, and a long training step costs at most one request
    per ``max_poll`` seconds. The ServerApp pulls from the SuperLink on its own machine
    (never across the network), so 4 local requests a second cost nothing; with a 1 s
    cap the pauses had grown to 0.57 s and 0.85 s by the time a ~1 s exchange answered,
    up to a third of the exchange spent waiting. ``bench/deployment.py`` measures the
    part (reply uploaded -> pulled): 0.21 s on average with this cap.
    The simulation grid behaves the same through this helper.

    Args:
        grid: the ServerApp's grid.
        messages: the messages to send.
        timeout: seconds to wait for all replies.
        first_poll: first pause between pulls, in seconds.
        max_poll: longest pause between pulls, in seconds.

    Returns:
        The replies that arrived within ``timeout`` (missing ones are simply absent, as
        with ``grid.send_and_receive``).
    """
    messages = list(messages)
    trace("server_push_start")
    pushed = list(grid.push_messages(messages))
    pending = {message_id for message_id in pushed if message_id}
    if tracing():
        trace("server_pushed", messages=[{"id": i, "node": m.metadata.dst_node_id, "type": m.metadata.message_type}
                                         for i, m in zip(pushed, messages)])
    deadline = time.monotonic() + timeout
    replies: list[Message] = []
    pause = first_poll
    while pending:
        arrived = list(grid.pull_messages(pending))
        replies.extend(arrived)
        for reply in arrived if tracing() else ():
            trace("server_pulled", reply_to=reply.metadata.reply_to_message_id, node=reply.metadata.src_node_id)
        pending.difference_update(reply.metadata.reply_to_message_id for reply in arrived)
        remaining = deadline - time.monotonic()
        if not pending or remaining <= 0:
            break
        time.sleep(min(pause, remaining))
        pause = min(pause * 1.5, max_poll)
    return replies
