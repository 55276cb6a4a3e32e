"""Client reads: events after a cursor, in canonical order; following reads wait.

A cursor is a version vector: the events the reader has seen. A reply carries only events
whose dots are inside this peer's contiguous version vector, so a cursor never claims a
dot the reader has not been given (an event beyond a gap waits until the gap is filled).
Resuming with the returned cursor on any peer therefore never skips an event and never
repeats one, across failovers and partition merges alike.

A read with `wait_s > 0` that finds nothing is parked until events of its stream become
durable here (`wake`) or the wait ends, then answered.

Only the shard's replicas hold a stream (and a replaced replica drops its copy), so a peer
outside the placement answers `not_replica` with the replicas' addresses, best-ranked
first, and the client reconnects there. With no live replica it serves what it holds.

`status_document(node)` answers a status request (`meshstream status`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshstream import ids
from meshstream.clocks import VersionVector
from meshstream.envelope import Event
from meshstream.errors import LocalProtocolError
from meshstream.protocol.effects import Effect, Reply
from meshstream.wire.messages import ReadReply, ReadRequest

if TYPE_CHECKING:
    from meshstream.protocol.node import Node

READ_EVENTS_MAX = 10_000  # one reply; a reader pages with its cursor
READ_WAIT_S_MAX = 60.0  # a follower re-asks at least this often
PARKED_READS_MAX = 10_000  # followers waiting at once on one peer


@dataclass(slots=True)
class ParkedRead:
    client: int
    request: ReadRequest


class Reads:
    def __init__(self, node: "Node") -> None:
        self.node = node
        self._parked: dict[int, ParkedRead] = {}
        self._next_id = 0

    def request(self, client: int, request: ReadRequest, now: float) -> list[Effect]:
        try:
            ids.validate_stream_name(request.stream, allow_system=True)
        except LocalProtocolError as exc:
            return [Reply(client, ReadReply(request.request_id, (), request.cursor, "invalid", str(exc)))]
        if not 1 <= request.limit <= READ_EVENTS_MAX:
            detail = f"limit must be 1-{READ_EVENTS_MAX}"
            return [Reply(client, ReadReply(request.request_id, (), request.cursor, "invalid", detail))]
        replicas = self.replicas_elsewhere(request.stream)
        if replicas:
            return [Reply(client, ReadReply(request.request_id, (), request.cursor, "not_replica", ",".join(replicas)))]
        events, cursor = self.read(request.stream, request.cursor, request.limit)
        if events or request.wait_s <= 0 or len(self._parked) >= PARKED_READS_MAX:
            return [Reply(client, ReadReply(request.request_id, tuple(events), cursor, "", ""))]
        self._next_id += 1
        self._parked[self._next_id] = ParkedRead(client, request)
        self.node.timers.add(now + min(request.wait_s, READ_WAIT_S_MAX), "read", self._next_id)
        return []

    def replicas_elsewhere(self, stream: str) -> list[str]:
        """The addresses of `stream`'s replicas when this peer is not one of them, else []."""
        node = self.node
        if stream == ids.TOPOLOGY_STREAM:
            return []  # every peer holds `$topology`
        placement = node.placement(node.shard_of(stream))
        if node.name in placement:
            return []
        addresses = (node.address_of(peer) for peer in placement)
        return [address for address in addresses if address is not None]

    def read(self, stream: str, cursor: VersionVector, limit: int) -> tuple[list[Event], VersionVector]:
        """Events after `cursor` that are safe to hand out, and the cursor after them."""
        held = self.node.store.version_vector(stream)
        events = [e for e in self.node.store.read(stream, cursor, limit) if held.contains(e.dot)]
        for event in events:
            cursor = cursor.with_dot(event.dot)
        return events, cursor

    def wake(self, stream: str, now: float) -> list[Effect]:
        """Events of `stream` became durable: answer the followers that now have some."""
        effects: list[Effect] = []
        for read_id in sorted(self._parked):
            parked = self._parked[read_id]
            if parked.request.stream != stream:
                continue
            events, cursor = self.read(stream, parked.request.cursor, parked.request.limit)
            if events:
                del self._parked[read_id]
                effects.append(Reply(parked.client, ReadReply(parked.request.request_id, tuple(events), cursor, "", "")))
        return effects

    def on_deadline(self, read_id: int, now: float) -> list[Effect]:
        parked = self._parked.pop(read_id, None)
        if parked is None:
            return []
        request = parked.request
        return [Reply(parked.client, ReadReply(request.request_id, (), request.cursor, "", ""))]


def status_document(node: "Node") -> dict:
    """`meshstream status`'s document, JSON-able: this peer, the members, and each
    stream held here with its shard, master, replicas, count and vector."""
    members = [
        {"peer": m.peer, "address": m.address, "status": m.status, "incarnation": m.incarnation}
        for m in node.topology.members().values()
    ]
    streams = []
    for stream in node.store.streams():
        if stream.startswith(ids.SYSTEM_PREFIX):
            continue
        shard = node.shard_of(stream)
        streams.append({
            "stream": stream, "shard": shard, "master": node.master_of(stream),
            "replicas": list(node.placement(shard)), "events": node.store.event_count(stream),
            "version_vector": dict(node.store.version_vector(stream)),
        })
    return {
        "name": node.name, "address": node.address, "writer": node.writer,
        "shards": node.topology.shards, "replication_factor": node.topology.replication_factor,
        "synced": node.topology_synced, "members": members, "streams": streams,
        "appends_in_flight": node.writes.in_flight(),
        "corrupt_records": len(node.store.corrupt_records()),
        "rebalance": node.rebalance.status(),
    }
