"""The write path: validating appends, routing them to the master, sequencing, acks.

Life of an append that reaches peer X (DESIGN section 2):

    client -> X: AppendRequest
      X validates it (names, sizes, batch) -> "invalid" at once when broken
      X is the shard's live master ---------------------------> sequence here
      another peer M is -> ForwardAppend to M, wait forward_timeout_s, then ask again
      nobody is (election under way) -> park; "no_master" after forward_timeout_s
    master: dedup by natural key (stored or still pending) -> duplicate / key_conflict
            quorum/all with too few live replicas -> "quorum_unreachable", nothing written
            assign dots and contexts, Persist, push Replicate to the other replicas
            reply when the ack level is met, only after `persisted`
            no ack by append_timeout_s -> "timeout" (indefinite: it may still spread)

The usual append (every key new and in flight nowhere, no metadata) is sealed as one
`EnvelopeRun` (`_fresh_run`): its key hashes, taken once for the dedup, go with it to the
store, and neither the node nor the store builds an `Event` for it; any other append is
decided item by item (`_dedup`, `_sequence`), with the same outcome for a usual one.

`Writes` holds the state of both roles: `Routed` (appends this peer took from a client
and routes) and `PendingWrite` (appends this peer sequenced as master, awaiting acks).
It reaches the store, topology and effects through the `Node` that owns it.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from itertools import repeat
from typing import TYPE_CHECKING

from meshstream import ids
from meshstream.envelope import Event, make_dot_unchecked, normalize_metadata
from meshstream.envelope_run import EnvelopeRun
from meshstream.errors import CorruptRecord, LocalProtocolError
from meshstream.protocol.effects import Effect, Reply, Send
from meshstream.wire.messages import AppendItem, AppendReply, AppendRequest, Appended
from meshstream.wire.schema import unchecked_builder
from meshstream.wire.replication_messages import (
    ForwardAppend,
    ForwardReply,
    Replicate,
    ReplicateAck,
)

if TYPE_CHECKING:
    from meshstream.protocol.node import Node

Origin = tuple  # ("client", client, request_id) | ("peer", peer, forward_id)
_appended = unchecked_builder(Appended)  # one per event of every write, from fields we made


@dataclass(slots=True)
class Routed:
    """A client's append that this peer routes to the master."""

    client: int
    request: AppendRequest
    deadline: float  # append_timeout_s after arrival: then "timeout"
    parked_since: float | None = None  # waiting for a master since then
    target: str | None = None  # the master it was last forwarded to
    maybe_written: bool = False  # a forward went unanswered: failures are then indefinite
    retry_at: float = 0.0  # when the current attempt's timer is due; earlier timers are stale


@dataclass(slots=True)
class PendingWrite:
    """Events this peer sequenced as master, waiting for the ack level."""

    origin: Origin
    stream: str
    ack: str
    appended: tuple[Appended, ...]
    events: tuple[Event, ...] | EnvelopeRun  # new and duplicate events, pushed to the replicas
    placement: tuple[str, ...]  # replica set and master when sequenced
    needed: int  # persisted copies a quorum needs
    deadline: float
    persisted_by: set[str] = field(default_factory=set)
    local_done: bool = False
    push_retries: int = 0  # pushes repeated so far; each waits twice as long as the last


class Writes:
    def __init__(self, node: "Node") -> None:
        self.node = node
        self.routed: dict[int, Routed] = {}  # forward_id -> routed append
        self.pending: dict[int, PendingWrite] = {}  # push_id -> write awaiting acks
        # sequenced, not yet durable: natural key -> its event, or the EnvelopeRun holding it
        self.pending_keys: dict[tuple[str, bytes], Event | EnvelopeRun] = {}
        self._next_id = 0

    def in_flight(self) -> int:
        return len(self.routed) + len(self.pending)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # -- entry: a client's append --
    def client_append(self, client: int, request: AppendRequest, now: float) -> list[Effect]:
        problem = validate_append(request.stream, request.items, self.node.config)
        if problem:
            return [Reply(client, AppendReply(request.request_id, (), "invalid", problem, True))]
        if self.in_flight() >= self.node.config.appends_in_flight_max:
            return [Reply(client, AppendReply(request.request_id, (), "overloaded", "too many appends in flight", True))]
        forward_id = self._new_id()
        self.routed[forward_id] = Routed(client, request, now + self.node.config.append_timeout_s)
        self.node.timers.add(now + self.node.config.append_timeout_s, "routed", forward_id)
        return self.route(forward_id, now)

    def route(self, forward_id: int, now: float) -> list[Effect]:
        """Send a routed append to the master, sequence it here, or park it."""
        routed = self.routed[forward_id]
        request = routed.request
        master = self.node.master_of(request.stream)
        if master == self.node.name and self.node.can_sequence(request.stream):
            del self.routed[forward_id]
            origin = ("client", routed.client, request.request_id)
            return self.start_write(origin, request.stream, request.items, request.ack, now)
        if master is not None and master != self.node.name:
            routed.target, routed.parked_since = master, None
            routed.retry_at = now + self.node.config.forward_timeout_s
            self.node.timers.add(routed.retry_at, "forward", forward_id)
            message = ForwardAppend(forward_id, request.stream, request.items, request.ack, 0)
            return [Send(master, message)]
        routed.target = None
        if routed.parked_since is None:
            routed.parked_since = now
        if now - routed.parked_since >= self.node.config.forward_timeout_s:
            return self._fail_routed(forward_id, "no_master", "no reachable master for the shard", True)
        routed.retry_at = now + self.node.config.gossip_interval_s
        self.node.timers.add(routed.retry_at, "forward", forward_id)
        return []

    def retry_parked(self, now: float) -> list[Effect]:
        """The view changed: a parked append may have a master now, and one forwarded to a
        peer that is no longer the live master (declared failed, or replaced) goes to the
        new one at once rather than after forward_timeout_s."""
        effects: list[Effect] = []
        for forward_id in sorted(self.routed):
            routed = self.routed.get(forward_id)
            if routed is None:
                continue
            if routed.target is None:
                effects += self.route(forward_id, now)
            elif self.node.master_of(routed.request.stream) != routed.target:
                routed.maybe_written = True  # the old master may have sequenced it
                effects += self.route(forward_id, now)
        return effects

    def on_forward_timer(self, forward_id: int, now: float) -> list[Effect]:
        routed = self.routed.get(forward_id)
        if routed is None or now < routed.retry_at:
            return []  # answered, or a timer of an attempt since replaced
        if routed.target is not None:
            routed.maybe_written = True  # the forward may have been sequenced
        return self.route(forward_id, now)

    def on_routed_deadline(self, forward_id: int, now: float) -> list[Effect]:
        if forward_id not in self.routed:
            return []
        return self._fail_routed(forward_id, "timeout", "not acknowledged in time; it may still spread", False)

    def on_forward_reply(self, src: str, reply: ForwardReply, now: float) -> list[Effect]:
        routed = self.routed.get(reply.forward_id)
        if routed is None or routed.target != src:
            return []  # late answer to an attempt we gave up on
        if reply.code == "not_master":
            routed.target, routed.parked_since = None, now
            routed.retry_at = now + self.node.config.gossip_interval_s
            self.node.timers.add(routed.retry_at, "forward", reply.forward_id)
            return []
        del self.routed[reply.forward_id]
        definite = reply.definite and not routed.maybe_written
        message = AppendReply(routed.request.request_id, reply.appended, reply.code, reply.detail, definite)
        return [Reply(routed.client, message)]

    def _fail_routed(self, forward_id: int, code: str, detail: str, definite: bool) -> list[Effect]:
        routed = self.routed.pop(forward_id)
        message = AppendReply(routed.request.request_id, (), code, detail, definite and not routed.maybe_written)
        return [Reply(routed.client, message)]

    # -- entry: an append forwarded to this peer as master --
    def forwarded_append(self, src: str, message: ForwardAppend, now: float) -> list[Effect]:
        problem = validate_append(message.stream, message.items, self.node.config)
        if problem:
            return [Send(src, ForwardReply(message.forward_id, (), "invalid", problem, True))]
        if self.node.master_of(message.stream) != self.node.name or not self.node.can_sequence(message.stream):
            return [Send(src, ForwardReply(message.forward_id, (), "not_master", "not the master here", True))]
        if self.in_flight() >= self.node.config.appends_in_flight_max:
            return [Send(src, ForwardReply(message.forward_id, (), "overloaded", "too many appends in flight", True))]
        origin = ("peer", src, message.forward_id)
        return self.start_write(origin, message.stream, message.items, message.ack, now)

    # -- the master's part --
    def start_write(self, origin: Origin, stream: str, items, ack: str, now: float) -> list[Effect]:
        node = self.node
        placement = node.write_placement(node.shard_of(stream))  # with retiring replicas (rebalance)
        needed = node.topology.replication_factor // 2 + 1
        if ack != "master" and not node.quorum_reachable(placement, needed):
            return self._answer(origin, (), "quorum_unreachable", "too few live replicas for this ack level", True)
        run = self._fresh_run(stream, items)
        if run is not None:  # the usual append: every key new
            appended, events = _appended_of_run(run), run
            self.pending_keys.update(zip(run.naturals(), repeat(run)))
        else:
            resolved = self._dedup(stream, items)
            if isinstance(resolved, str):
                return self._answer(origin, (), "key_conflict", resolved, True)
            appended, events, fresh = self._sequence(stream, resolved)
            self.pending_keys.update([((event.stream, event.key), event) for event in fresh])
        push_id = self._new_id()
        write = PendingWrite(origin, stream, ack, appended, events, placement, needed, now + node.config.append_timeout_s)
        self.pending[push_id] = write
        node.timers.add(write.deadline, "write", push_id)
        node.timers.add(now + self._push_retry_s(write), "push", push_id)
        effects = node.persist(events, ("write", push_id))
        return effects + self._push(push_id, write, sorted(set(placement) - {node.name}))

    def _fresh_run(self, stream: str, items: tuple[AppendItem, ...]) -> EnvelopeRun | None:
        """The usual append sealed as an `EnvelopeRun` (no `Event` built; the node tracks
        it, and the store decides and lays it out, column by column): when no item has
        metadata, its keys are distinct, none is in flight here (sequenced, or from a peer)
        and none's hash is held by the store, and this writer has sequenced in the stream
        before (a run's contexts hold its writer). None otherwise: `_dedup` and `_sequence`
        decide item by item (for such a request they would make the same events)."""
        node = self.node
        head = node._heads.get(stream)  # as `Node.sequence_events` reads it
        absent_key_hashes = getattr(node.store, "absent_key_hashes", None)
        if head is None or absent_key_hashes is None or any([item.metadata for item in items]):
            return None
        keys = [item.key for item in items]
        naturals = list(zip(repeat(stream), keys))
        if len(set(keys)) != len(keys) or not self.pending_keys.keys().isdisjoint(naturals) \
                or not node.unpersisted.keys().isdisjoint(naturals):
            return None
        hashes, absent = absent_key_hashes(stream, keys)
        if not all(absent):
            return None  # a duplicate, or a hash shared with a held key: `_dedup` asks the store
        writer, counter, datas = node.writer, head.counter, [item.data for item in items]
        base = {peer: count for peer, count in node.store.version_vector(stream).items() if peer != writer}
        digests, envelopes = Event.seal_run_envelopes(stream, writer, counter, base, keys, datas)
        run = EnvelopeRun(stream, writer, counter + 1, keys, datas, base, list(range(counter, counter + len(keys))),
                          digests, envelopes)
        run.hashes = hashes  # the store's decision takes them (`store.runs.prepare_run`): one hash a key
        node._heads[stream] = make_dot_unchecked(writer, run.last)
        return run

    def _dedup(self, stream: str, items: tuple[AppendItem, ...]) -> list | str:
        """Per item: an existing event (a duplicate), the key of an earlier item of this
        request, or (item, normalized metadata) to sequence; or the text of a key conflict."""
        resolved: list = []
        seen: dict[bytes, tuple[AppendItem, tuple]] = {}
        pending_keys, stored = self.pending_keys, self.node.store.get
        absent_keys = getattr(self.node.store, "absent_keys", None)  # bulk: one hash a key, no lookup
        absent = absent_keys(stream, [item.key for item in items]) if absent_keys else [False] * len(items)
        for item, surely_new in zip(items, absent):
            metadata = normalize_metadata(tuple(item.metadata.items())) if item.metadata else ()
            existing = pending_keys.get((stream, item.key))
            if type(existing) is EnvelopeRun:
                existing = existing.event_of(item.key)  # a retry of an append still in flight
            if existing is None and not surely_new:
                try:
                    existing = stored(stream, item.key)
                except CorruptRecord:
                    existing = None  # not served here; anti-entropy brings it back
            if existing is not None:
                if (existing.data, existing.metadata) != (item.data, metadata):
                    return f"key {item.key!r} already exists in stream {stream!r} with different content"
                resolved.append(existing)
            elif item.key in seen:
                if (seen[item.key][0].data, seen[item.key][1]) != (item.data, metadata):
                    return f"key {item.key!r} appears twice in the request with different content"
                resolved.append(item.key)  # the same item again: answer with the first one
            else:
                seen[item.key] = (item, metadata)
                resolved.append(seen[item.key])
        return resolved

    def _sequence(self, stream: str, resolved: list) -> tuple[tuple[Appended, ...], tuple[Event, ...], list[Event]]:
        fresh = self.node.sequence_events(stream, [entry for entry in resolved if type(entry) is tuple])
        if len(fresh) == len(resolved):  # the usual request: every item new
            return tuple([_appended(e.key, e.dot, e.digest, False) for e in fresh]), tuple(fresh), fresh
        by_key = {event.key: event for event in fresh}
        appended: list[Appended] = []
        for entry in resolved:
            if isinstance(entry, tuple):
                event = by_key[entry[0].key]
                appended.append(Appended(event.key, event.dot, event.digest, False))
            else:
                event = by_key[entry] if isinstance(entry, bytes) else entry
                appended.append(Appended(event.key, event.dot, event.digest, True))
        events = {e.digest: e for e in fresh}
        for entry in resolved:
            if isinstance(entry, Event):
                events.setdefault(entry.digest, entry)  # re-pushed so replicas hold it too
        return tuple(appended), tuple(events.values()), fresh

    def _push(self, push_id: int, write: PendingWrite, targets: list[str]) -> list[Effect]:
        if not self.node.eager_push or not targets:
            return []
        message = Replicate(push_id, write.events)
        return [Send(peer, message) for peer in targets]

    def on_push_timer(self, push_id: int, now: float) -> list[Effect]:
        """Push again to live replicas that have not acknowledged (a push may be lost)."""
        write = self.pending.get(push_id)
        if write is None or write.ack == "master":
            return []
        live = set(self.node.topology.live_peers())
        targets = sorted(p for p in write.placement if p in live and p not in write.persisted_by and p != self.node.name)
        write.push_retries += 1
        self.node.timers.add(now + self._push_retry_s(write), "push", push_id)
        return self._push(push_id, write, targets)

    def _push_retry_s(self, write: PendingWrite) -> float:
        """When to push again: from a quarter of forward_timeout_s (at least two gossip
        intervals), doubling, at most forward_timeout_s. A push rides a TCP link and is lost
        only with its connection; a replica that is merely busy would otherwise receive (and
        decode) the same batch again and again (every 0.1 s: 2.4x the events under load)."""
        config = self.node.config
        first = max(2 * config.gossip_interval_s, config.forward_timeout_s / 4)
        return min(first * 2**write.push_retries, config.forward_timeout_s)

    def on_local_persisted(self, push_id: int, now: float) -> list[Effect]:
        write = self.pending.get(push_id)
        if write is None:
            return []
        write.local_done = True
        write.persisted_by.add(self.node.name)
        self._forget_pending(write.events)
        return self._check(push_id)

    def _forget_pending(self, events: tuple[Event, ...] | EnvelopeRun) -> None:
        """Drop the natural keys of a durable write that still name its events."""
        pending_keys = self.pending_keys
        if type(events) is EnvelopeRun:  # its keys map to the run: dropped in one C pass
            naturals = list(events.naturals())
            dropped = list(map(pending_keys.pop, naturals, repeat(None)))
            if not all(map(operator.is_, dropped, repeat(events))):  # our bug: nothing replaces an entry
                pending_keys.update((n, e) for n, e in zip(naturals, dropped) if e is not None and e is not events)
            return
        for event in events:
            key = (event.stream, event.key)  # natural_key, without the property call
            if pending_keys.get(key) is event:
                del pending_keys[key]

    def on_replica_ack(self, src: str, ack: ReplicateAck, now: float) -> list[Effect]:
        write = self.pending.get(ack.push_id)
        if write is None or src not in write.placement:
            return []
        write.persisted_by.add(src)
        return self._check(ack.push_id)

    def recheck_all(self) -> list[Effect]:
        """The view changed: an `all` write may now be complete (a replica failed)."""
        effects: list[Effect] = []
        for push_id in sorted(self.pending):
            if push_id in self.pending:
                effects += self._check(push_id)
        return effects

    def on_write_deadline(self, push_id: int, now: float) -> list[Effect]:
        write = self.pending.pop(push_id, None)
        if write is None:
            return []
        return self._answer(write.origin, (), "timeout", "not acknowledged in time; it may still spread", False)

    def _check(self, push_id: int) -> list[Effect]:
        write = self.pending[push_id]
        if not write.local_done:
            return []
        counted = self.node.ack_members(write.stream, write.placement)  # caught-up replicas only
        copies = len(write.persisted_by & counted)
        if write.ack == "quorum" and copies < write.needed:
            return []
        if write.ack == "all":
            live = set(self.node.topology.live_peers())
            missing = [p for p in sorted(counted) if p in live and p not in write.persisted_by]
            if missing or copies < write.needed:
                return []
        del self.pending[push_id]
        return self._answer(write.origin, write.appended, "", "", True)

    def _answer(self, origin: Origin, appended, code: str, detail: str, definite: bool) -> list[Effect]:
        kind, who, request_id = origin
        if kind == "client":
            return [Reply(who, AppendReply(request_id, tuple(appended), code, detail, definite))]
        return [Send(who, ForwardReply(request_id, tuple(appended), code, detail, definite))]


def _appended_of_run(run: EnvelopeRun) -> tuple[Appended, ...]:
    """The reply's `Appended` of each event of a fresh run, in order."""
    dots = map(make_dot_unchecked, repeat(run.writer), run.counters())
    return tuple(map(_appended, run.keys, dots, run.digests, repeat(False)))


def validate_append(stream: str, items: tuple[AppendItem, ...], config) -> str:
    """Why an append breaks a rule, or "" when it is valid."""
    try:
        ids.validate_stream_name(stream)
        if not 1 <= len(items) <= config.append_batch_events_max:
            return f"an append carries 1-{config.append_batch_events_max} events, got {len(items)}"
        if _usual_append(items, config):
            return ""
        for item in items:
            ids.validate_key(item.key)
            if len(item.data) > config.event_bytes_max:
                return f"event data is {len(item.data)} bytes; at most {config.event_bytes_max}"
            if not item.metadata:
                continue  # the common case: nothing more to check
            if len(item.metadata) > config.metadata_entries_max:
                return f"metadata has {len(item.metadata)} entries; at most {config.metadata_entries_max}"
            for name, value in item.metadata.items():
                if isinstance(value, (str, bytes)) and len(value) > config.metadata_value_bytes_max:
                    return f"metadata {name!r} is longer than {config.metadata_value_bytes_max}"
            normalize_metadata(tuple(item.metadata.items()))
    except LocalProtocolError as exc:
        return str(exc)
    return ""


def _usual_append(items: tuple[AppendItem, ...], config) -> bool:
    """True for an append that certainly passes `validate_append`'s item rules: keys of
    type bytes within the key limit, data within the event limit, no metadata, checked
    column by column (what the item loop would find, without a call per item)."""
    keys = [item.key for item in items]
    return (set(map(type, keys)) == {bytes} and min(map(len, keys)) >= 1 and max(map(len, keys)) <= ids.KEY_BYTES_MAX
            and max([len(item.data) for item in items]) <= config.event_bytes_max
            and not any([item.metadata for item in items]))
