"""The node: one peer's sans-IO core, joining membership, topology, writes and repair.

Inputs are facts (`receive`, `client_request`, `persisted`, `tick`); outputs are effects
(`Send`, `SendTo`, `Persist`, `Reply`, `Deliver`, `Journal`) and `next_deadline()`. The
node never reads a clock or touches I/O; `now` and a seeded `random.Random` come in.

Parts, each in its own module:
- `TopologyLog` (`topology_log`): the `$topology` stream in memory and its fold; the node
  is the `MembershipHost` that sequences and absorbs topology events through it.
- `Membership` (`membership`): SWIM probing, joins and piggybacked topology gossip.
- `Writes` (`replication`): validating, routing, sequencing and acknowledging appends.
- `AntiEntropy` (`anti_entropy`): push-pull repair of shards and `$topology`.

Dots: each process sequences as a fresh *writer* `name.k`, with k above every writer of
this peer found in the store. A restart may have lost unsynced events that were already
pushed to replicas; a fresh writer can never reuse one of their dots. The writer may only
sequence data once one of its own topology events is durable, so the next process is sure
to see it and pick k + 1.

Conflict losers: when two events share a natural key, the one with the larger digest is
never served but its dot counts in every version vector. The store keeps only that dot, so
the node keeps the loser event in memory (`_losers`) to hand to partners whose vectors
lack it; otherwise their vectors would stop below it for good. A restarted peer has
forgotten its losers and relies on peers that still hold them.

Mastership: a peer sequences a shard only while the fold names it the live master, it is
caught up on `$topology` with some peer (a restarted former master must first learn of
the newer epoch), and its writer is durable. After any change of the view the node
publishes the elections `topology.election.claims` asks of it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence

from meshstream import ids
from meshstream.clocks import Dot, VersionVector
from meshstream.config import Config
from meshstream.envelope import Event, Metadata, normalize_metadata
from meshstream.envelope_run import EnvelopeRun
from meshstream.errors import CorruptRecord, LocalProtocolError, RemoteProtocolError
from meshstream.ids import TOPOLOGY_STREAM
from meshstream.protocol.anti_entropy import AntiEntropy
from meshstream.protocol.effects import Deliver, Effect, Journal, Persist, Reply, Send
from meshstream.protocol.membership import CONFIGURE_ALONE_PERIODS, Membership
from meshstream.protocol.placements import PlacementView
from meshstream.protocol.reads import Reads, status_document
from meshstream.protocol.rebalance import Rebalance
from meshstream.protocol.in_flight import InFlightDots, sort_incoming, take_run, track_in_flight, untrack_in_flight
from meshstream.protocol.replication import Writes
from meshstream.protocol.scrub import Scrubber
from meshstream.protocol.timers import Timers
from meshstream.protocol.topology_log import TopologyLog
from meshstream.store.api import EventStore
from meshstream.wire.messages import AppendItem, AppendReply, AppendRequest, ReadRequest, StatusReply, StatusRequest
from meshstream.wire.messages import TopologyReply, TopologyRequest
from meshstream.wire.replication_messages import (
    ForwardAppend,
    ForwardReply,
    Replicate,
    ReplicateAck,
    SyncEvents,
    SyncOffer,
    SyncPull,
    SyncSummary,
)
from topology import election
from topology.events import MasterElected, MeshConfigured, TopologyFact
from topology.fold import TopologyState

SETTLE_ROUNDS_MAX = 4  # elections published per input converge in one or two rounds
WRITER_CHARS_MAX = 64  # a dot's peer field is at most 64 characters
LOSERS_KEPT_MAX = 100_000  # conflict losers held for partners; conflicts are rare (retries across a cut)


class Node:
    def __init__(self, name: str, address: str, config: Config, rng: random.Random,
                 store: EventStore, seeds: Sequence[str] = ()) -> None:
        self.name = ids.validate_peer_name(name)
        self.address = address
        self.config = config
        self.rng = rng
        self.store = store
        self.seeds = tuple(seeds)
        self.eager_push = True  # off only to measure anti-entropy alone (epidemic bench)
        # Where `send_early` hands effects that should leave before an input is done (the
        # runtime: sent at once); None (tests, the simulator): they go first in the result.
        self.early_sink: Callable[[list[Effect]], None] | None = None
        self.log = TopologyLog(name)
        self.membership = Membership(name, address, config, random.Random(rng.getrandbits(64)), self)
        self.timers = Timers()
        self.writes = Writes(self)
        self.anti_entropy = AntiEntropy(self)
        self.reads = Reads(self)
        self.rebalance = Rebalance(self)  # catch-up before acks, master handovers, draining
        self._tokens: dict[int, tuple] = {}  # persist token -> what to do when durable
        self._token_events: dict[int, tuple[list[Event], list[Event]]] = {}  # (all, fresh)
        self._next_token = 0
        self.unpersisted: dict[tuple[str, bytes], Event] = {}  # natural key -> event in flight
        self._unpersisted_dots = InFlightDots()  # (stream, peer, counter) in flight
        # stream -> writer -> the top of a run of that writer's dots, each held or on its
        # way to the store, contiguous with the store's vector when persisted (pull_vector).
        self._inflight_heads: dict[str, dict[str, int]] = {}
        self._losers: dict[str, dict[Dot, Event]] = {}  # data conflict losers, for partners
        self._heads: dict[str, Dot] = {}  # the last dot this writer sequenced per stream
        self._streams_by_shard: dict[int, set[str]] = {}
        self._indexed_shards: int | None = None
        self._placement_view = PlacementView()  # placements and each peer's shards, cached per view
        self._settled_version = -1
        self._mastered_version = -1  # the view version at which every shard had a live master
        self._failed_cache: tuple[int, list[str]] | None = None
        self._writer_durable = False
        self._topology_synced = False
        self._started_at = 0.0
        self._leaving = False
        self._next_gossip: float | None = None
        self._next_scrub: float | None = None
        self.scrubber = Scrubber(name, config, store)

    # ------------------------------------------------------------------ queries
    @property
    def topology(self) -> TopologyState:
        return self.log.state

    @property
    def writer(self) -> str:
        return self.log.writer

    def address_of(self, peer: str) -> str | None:
        return self.topology.address(peer) or None  # (not member(): asked for every send)

    def shard_of(self, stream: str) -> int | None:
        shards = self.topology.shards
        return None if shards is None else ids.shard_of(stream, shards)

    def master_of(self, stream: str) -> str | None:
        shard = self.shard_of(stream)
        return None if shard is None else self.topology.live_master(shard)

    def can_sequence(self, stream: str | None = None) -> bool:
        """May this peer sequence now (for `stream`: not while handing its shard over)?"""
        if not (self._writer_durable and self._topology_synced and not self._leaving):
            return False
        return stream is None or not self.rebalance.sequencing_paused(self.shard_of(stream))

    @property
    def topology_synced(self) -> bool:
        """True once this peer's `$topology` has matched a partner's (status shows it)."""
        return self._topology_synced

    @property
    def departed(self) -> bool:
        """A graceful leave has handed its shards off and published MemberLeft."""
        return self.rebalance.departed

    def write_placement(self, shard: int | None) -> tuple[str, ...]:
        """Where a new write of `shard` is pushed: placement plus retiring replicas."""
        return () if shard is None else self.rebalance.push_set(shard)

    def ack_members(self, stream: str, peers: Sequence[str]) -> set[str]:
        """Those of `peers` whose copies count toward a write's quorum/all ack (caught up)."""
        shard = self.shard_of(stream)
        return set(peers) if shard is None else self.rebalance.counted(shard, tuple(peers))

    def placement(self, shard: int | None) -> tuple[str, ...]:
        """The shard's replica set, plus its live master if that is not among them."""
        if shard is None:
            return ()
        return self._placement_view.placement(self.topology, shard)

    def responsible_shards(self, peer: str) -> frozenset[int]:
        """The shards `peer` replicates or masters, in this peer's view."""
        return self._placement_view.shards_of(self.topology, peer)

    def failed_peers(self) -> list[str]:
        """Peers declared failed (not those that left), sorted; cached per view."""
        version = self.topology.version
        if self._failed_cache is None or self._failed_cache[0] != version:
            failed = [p for p in self.topology.failed_peers() if p != self.name]  # not members(): O(N)
            self._failed_cache = (version, failed)
        return self._failed_cache[1]

    def quorum_reachable(self, placement: Sequence[str], needed: int) -> bool:
        """Enough live replicas, and this peer on the majority side of the membership."""
        live = self.topology.live_set()
        failed = len(self.failed_peers())
        on_majority_side = 2 * len(live) > len(live) + failed
        return on_majority_side and sum(1 for p in placement if p in live) >= needed

    def shard_digest(self, shard: int) -> bytes:
        return self.store.shard_digest(shard, self.topology.shards)

    def shard_digests(self, shards: Sequence[int]) -> list[bytes]:
        return self.store.shard_digests(shards, self.topology.shards)

    def streams_in(self, shard: int) -> list[str]:
        self._index_streams()
        return sorted(self._streams_by_shard.get(shard, ()))

    def pull_vector(self, stream: str) -> VersionVector:
        """The store's vector of `stream` raised past the events on their way to the store
        (sequenced or received here, not durable yet), for anti-entropy pulls. Under load a
        gossip round always finds a replica's digest behind its eager pushes: with the bare
        store vector the partner sent those events again (~1.5x the events moved). A run
        counts while its top event is still in flight (O(writers), not O(events): a replica
        under load has tens of thousands in flight). Should a persist never finish, the
        process is gone and its successor pulls with its own vector; a record the store has
        dropped as corrupt meanwhile is asked for by the first pull after the run lands."""
        vector = self.store.version_vector(stream)
        if not self._unpersisted_dots:
            return vector
        raised: dict[str, int] = {}
        for writer, head in self._inflight_heads.get(stream, {}).items():
            if head > vector.get(writer) and (stream, writer, head) in self._unpersisted_dots:
                raised[writer] = head
        return vector.merge(raised) if raised else vector

    def missing_events(self, stream: str, vector: VersionVector, limit: int) -> list[Event]:
        """Up to `limit` events held here whose dots `vector` lacks (conflict losers too)."""
        if limit <= 0:
            return []
        if stream == TOPOLOGY_STREAM:
            return self.log.missing_for(vector, limit)
        found = self.store.events_missing(stream, vector, limit)
        losers = self._losers.get(stream, {})
        extra = [losers[d] for d in sorted(losers) if not vector.contains(d)]
        if not extra:
            return found
        # A loser's dot is what holds the partner's vector back: it goes in dot order,
        # never after a full batch of the events beyond it.
        merged = sorted(found + extra, key=lambda e: (e.dot.peer, e.dot.counter))
        return merged[:limit]

    def missing_envelopes(self, stream: str, vector: VersionVector, limit: int) -> list[bytes]:
        """The envelopes of `missing_events`; the store's checked but not decoded."""
        if stream == TOPOLOGY_STREAM or any(not vector.contains(d) for d in self._losers.get(stream, ())):
            return [event.envelope for event in self.missing_events(stream, vector, limit)]
        return self.store.envelopes_missing(stream, vector, limit) if limit > 0 else []

    # ------------------------------------------------------------------ lifecycle
    def start(self, now: float) -> list[Effect]:
        """Recover from the store, then join the mesh (or found it, with no seeds)."""
        self._started_at = now
        self.log = TopologyLog(self._fresh_writer())
        self.log.load(self.store.read(TOPOLOGY_STREAM, VersionVector(), 1 << 40))
        own = self.topology.member(self.name)
        if own is not None:
            self.membership.incarnation = own.incarnation + 1
        effects: list[Effect] = []
        others = [p for p, m in self.topology.members().items() if p != self.name and m.status != "left"]
        if not self.seeds and self.topology.shards is None:
            config = MeshConfigured(self.config.shards, self.config.replication_factor)
            effects += self.publish_fact(config, now)[1]
        if not self.seeds and not others:
            self._topology_synced = True
        seeds = self.seeds or tuple(a for a in (self.address_of(p) for p in others) if a)
        effects += self.membership.start(now, seeds)
        self._next_gossip = now + self.config.gossip_interval_s * self.rng.random()
        self._next_scrub = self._next_gossip  # same instants: one tick serves both
        return effects + self._settle(now)

    def _fresh_writer(self) -> str:
        """`name.k` with k above every writer of this peer the store knows."""
        prefix = self.name + "."
        highest = 0
        streams = set(self.store.streams()) | {TOPOLOGY_STREAM}
        for stream in sorted(streams):
            for peer in self.store.version_vector(stream):
                suffix = peer[len(prefix):]
                if peer.startswith(prefix) and suffix.isdigit():
                    highest = max(highest, int(suffix))
        suffix = f".{highest + 1}"
        return self.name[: WRITER_CHARS_MAX - len(suffix)] + suffix

    def leave(self, now: float) -> list[Effect]:
        """Graceful leave: stop taking appends, hand mastered shards off, then MemberLeft
        (at once when there is nothing to hand off; see `rebalance`)."""
        self._leaving = True
        return self.rebalance.drain(now) + self._settle(now)

    def next_deadline(self) -> float | None:
        candidates = [self.membership.next_deadline(), self.timers.next(), self._next_gossip, self._next_scrub]
        present = [c for c in candidates if c is not None]
        return min(present) if present else None

    def tick(self, now: float) -> list[Effect]:
        effects = self.membership.tick(now)
        for kind, ident in self.timers.pop_due(now):
            effects += self._on_timer(kind, ident, now)
        if self._next_gossip is not None and now >= self._next_gossip:
            self._next_gossip = now + self.config.gossip_interval_s
            partner = self.anti_entropy.choose_partner()
            if partner is not None:
                effects += self.anti_entropy.start_round(partner, now)
            effects += self.scrubber.report()  # before the refetch repairs it unseen
            effects += self.rebalance.tick(now)
        if self._next_scrub is not None and now >= self._next_scrub:
            self._next_scrub = now + self.config.gossip_interval_s
            effects += self.scrubber.slice()
        if not self._topology_synced and self._alone(now):
            self._topology_synced = True  # seeds silent all along (no change of view says so)
        effects += self._elect(now)  # catch-up may have finished with no change of view
        return effects + self._settle(now)

    def _on_timer(self, kind: str, ident: int, now: float) -> list[Effect]:
        match kind:
            case "routed":
                return self.writes.on_routed_deadline(ident, now)
            case "forward":
                return self.writes.on_forward_timer(ident, now)
            case "write":
                return self.writes.on_write_deadline(ident, now)
            case "push":
                return self.writes.on_push_timer(ident, now)
            case "read":
                return self.reads.on_deadline(ident, now)
        raise AssertionError(f"unknown timer kind {kind!r}")

    # ------------------------------------------------------------------ inputs
    def receive(self, src: str, message: object, now: float) -> list[Effect]:
        """A message from peer `src`. Raises RemoteProtocolError for one it cannot take."""
        # Corruption a read found is reported before any message can bring the repair.
        effects = self.scrubber.report()
        if Membership.handles(message):
            effects += self.membership.receive(src, message, now)
        elif Rebalance.handles(message):
            effects += self.rebalance.receive(src, message, now)
        else:
            effects += self._receive_replication(src, message, now)
        return effects + self._settle(now)

    def _receive_replication(self, src: str, message: object, now: float) -> list[Effect]:
        match message:
            case ForwardAppend():
                return self.writes.forwarded_append(src, message, now)
            case ForwardReply():
                return self.writes.on_forward_reply(src, message, now)
            case Replicate():
                return self.take_events(src, message.events, now, ("replica", src, message.push_id))
            case ReplicateAck():
                return self.writes.on_replica_ack(src, message, now)
            case SyncSummary():
                return self.anti_entropy.on_summary(src, message, now)
            case SyncOffer():
                return self.anti_entropy.on_offer(src, message, now)
            case SyncPull():
                return self.anti_entropy.on_pull(src, message, now)
            case SyncEvents():
                return self.anti_entropy.on_events(src, message, now)
        raise RemoteProtocolError(f"peer {src!r} sent an unexpected {type(message).__name__}")

    def client_request(self, client: int, message: object, now: float) -> list[Effect]:
        """A client's request; its Reply comes now or later (appends, following reads)."""
        match message:
            case AppendRequest():
                if self._leaving:
                    return [Reply(client, AppendReply(message.request_id, (), "unavailable", "leaving", True))]
                effects = self.writes.client_append(client, message, now)
            case ReadRequest():
                effects = self.reads.request(client, message, now)
            case StatusRequest():
                document = json.dumps(status_document(self), sort_keys=True)
                effects = [Reply(client, StatusReply(message.request_id, document))]
            case TopologyRequest():
                view = json.dumps(self.topology.to_dict(), sort_keys=True)
                effects = [Reply(client, TopologyReply(message.request_id, tuple(self.log.events()), view))]
            case _:
                raise LocalProtocolError(f"not a client request: {type(message).__name__}")
        return effects + self._settle(now)

    def persisted(self, token: int, now: float) -> list[Effect]:
        """The driver made the events of `Persist(token)` durable."""
        if token not in self._tokens:
            raise LocalProtocolError(f"persisted() for unknown token {token}")
        purpose = self._tokens.pop(token)
        events, fresh = self._token_events.pop(token)
        untrack_in_flight(events, self.unpersisted, self._unpersisted_dots)
        if not self._writer_durable and type(events) is not EnvelopeRun \
                and any(e.stream == TOPOLOGY_STREAM and e.dot.peer == self.writer for e in events):
            self._writer_durable = True
        effects = self._deliver(fresh, now)
        effects += self._on_durable(purpose, now)
        return effects + self._settle(now)

    def _on_durable(self, purpose: tuple, now: float) -> list[Effect]:
        match purpose:
            case ("write", push_id):
                return self.writes.on_local_persisted(push_id, now)
            case ("replica", src, push_id):
                return [Send(src, ReplicateAck(push_id))]
            case ("sync", src, more):
                return self.anti_entropy.on_durable(src, more, now)
            case ("topology",):
                return []
        raise AssertionError(f"unknown persist purpose {purpose!r}")

    def _deliver(self, fresh: Sequence[Event], now: float) -> list[Effect]:
        if type(fresh) is EnvelopeRun:
            return [Deliver(fresh.stream, fresh)] + self.reads.wake(fresh.stream, now)
        by_stream: dict[str, list[Event]] = {}
        if fresh and fresh[0].stream == fresh[-1].stream and all(e.stream == fresh[0].stream for e in fresh):
            by_stream[fresh[0].stream] = fresh  # the usual batch: one stream
        for event in fresh if not by_stream else ():
            by_stream.setdefault(event.stream, []).append(event)
        effects: list[Effect] = []
        for stream in sorted(by_stream):
            effects.append(Deliver(stream, tuple(by_stream[stream])))
            effects += self.reads.wake(stream, now)
        return effects

    # ------------------------------------------------------------------ persistence
    def persist(self, events: Sequence[Event], purpose: tuple, fresh: Sequence[Event] | None = None) -> list[Effect]:
        """Emit Persist for `events`; `purpose` says what to do when they are durable.
        `fresh` (default: all) are the ones new here, delivered to followers then."""
        self._next_token += 1
        token = self._next_token
        self._tokens[token] = purpose
        run = type(events) is EnvelopeRun
        self._token_events[token] = (events, events) if run else (list(events), list(events if fresh is None else fresh))
        streams = track_in_flight(events, self.unpersisted, self._unpersisted_dots, self._inflight_heads, self.store)
        for stream in sorted(streams - {TOPOLOGY_STREAM}):  # once per stream, not per event
            self._note_stream(stream)
        return [Persist(token, events if run else tuple(events))]

    def sequence_event(self, stream: str, item: AppendItem) -> Event:
        """A new event of this writer in `stream` (the caller is the shard's master)."""
        return self.sequence_events(stream, [(item, normalize_metadata(tuple(item.metadata.items())))])[0]

    def sequence_events(self, stream: str, items: Sequence[tuple[AppendItem, Metadata]]) -> list[Event]:
        """New events of this writer in `stream`, each in the context of the one before, for
        items already validated (`validate_append`) with their normalized metadata. The
        caller is the shard's master. The store's vector is read once per batch."""
        assert self.can_sequence()
        head = self._heads.get(stream)
        counter = head.counter if head is not None else 0
        run = [(item.key, item.data, metadata) for item, metadata in items]
        events = Event.seal_run(stream, self.writer, counter, self.store.version_vector(stream), run)
        if events:
            self._heads[stream] = events[-1].dot
        return events

    def send_early(self, effects: list[Effect]) -> list[Effect]:
        """Effects to carry out before the rest of this input is handled (a catch-up's next
        pull, before the batch is checked): given to `early_sink` when the runtime set one,
        else returned, to go first in the input's effects."""
        if self.early_sink is None:
            return effects
        self.early_sink(effects)
        return []

    def take_events(self, src: str, events: Sequence[Event], now: float, purpose: tuple) -> list[Effect]:
        """Events from a peer (eager push or anti-entropy): persist those new here."""
        if type(events) is EnvelopeRun:  # all new here: persisted whole, no Event built
            effects = take_run(self, events, purpose)
            if effects is not None:
                return effects
            events = events.events()
        topology = [e for e in events if e.stream == TOPOLOGY_STREAM]
        effects = self.absorb_topology(topology, now)[1] if topology else []
        fresh, again, conflicts = sort_incoming(self, events)  # again: in flight here already
        effects += conflicts
        if purpose[0] != "replica":
            again = []
        if not fresh and not again:
            return effects + self._on_durable(purpose, now)
        return effects + self.persist(fresh + again, purpose, fresh)

    def _holds(self, event: Event) -> bool:
        try:
            return self.store.has_dot(event.stream, event.dot)
        except CorruptRecord:
            return False

    def _note_conflict(self, event: Event, in_batch: Event | None = None) -> list[Effect]:
        """Keep the loser of a natural-key conflict, to hand its dot to partners."""
        existing = in_batch or self.unpersisted.get(event.natural_key)
        if type(existing) is EnvelopeRun:
            existing = existing.event_of(event.key)
        if existing is None:
            try:
                existing = self.store.get(event.stream, event.key)
            except CorruptRecord:
                existing = None
        if existing is None or existing.digest == event.digest:
            return []
        loser = max(existing, event, key=lambda e: e.digest)
        if sum(len(held) for held in self._losers.values()) < LOSERS_KEPT_MAX:
            self._losers.setdefault(event.stream, {})[loser.dot] = loser
        return [Journal("conflict", f"{self.name}: key {event.key!r} in {event.stream!r}: "
                        f"{loser.dot.peer}:{loser.dot.counter} loses to the smaller digest")]

    def _note_stream(self, stream: str) -> None:
        shard = self.shard_of(stream)
        if shard is not None:
            self._index_streams()
            self._streams_by_shard.setdefault(shard, set()).add(stream)

    def _index_streams(self) -> None:
        shards = self.topology.shards
        if shards is None or self._indexed_shards == shards:
            return
        self._indexed_shards = shards
        self._streams_by_shard = {}
        for stream in self.store.streams():
            if not stream.startswith(ids.SYSTEM_PREFIX):
                self._streams_by_shard.setdefault(ids.shard_of(stream, shards), set()).add(stream)
        for stream, _key in sorted(self.unpersisted):
            if not stream.startswith(ids.SYSTEM_PREFIX):
                self._streams_by_shard.setdefault(ids.shard_of(stream, shards), set()).add(stream)

    # ------------------------------------------------------------------ MembershipHost
    def topology_view(self) -> TopologyState:
        return self.topology

    def topology_events(self) -> Sequence[Event]:
        return self.log.events()

    def publish_fact(self, fact: TopologyFact, now: float) -> tuple[Event, list[Effect]]:
        """Sequence `fact` in `$topology` with this writer's dot, persist, fold, gossip."""
        event = self.log.sequence(fact)
        if event is None:
            existing = self.log.event_of(fact)
            assert existing is not None
            return existing, []
        self.membership.broadcast(event)
        return event, self.persist([event], ("topology",))

    def absorb_topology(self, events: Sequence[Event], now: float) -> tuple[list[Event], list[Effect]]:
        """Topology events from a peer: fold, persist and gossip on those new here."""
        new: list[Event] = []
        effects: list[Effect] = []
        for event in events:
            try:
                added = self.log.add(event)
            except RemoteProtocolError as exc:
                effects.append(Journal("rejected", f"{self.name}: bad topology event: {exc}"))
                continue
            if added:
                new.append(event)
                self.membership.broadcast(event)
        if new:
            effects += self.persist(new, ("topology",))
        return new, effects

    def topology_synced_with(self, peer: str, now: float) -> None:
        """A partner holds the same `$topology` as this peer: the view is current."""
        self._topology_synced = True

    # ------------------------------------------------------------------ reacting to the view
    def _settle(self, now: float) -> list[Effect]:
        """After the view changed: elections, parked appends, `all` writes, lone peers."""
        effects: list[Effect] = []
        for _ in range(SETTLE_ROUNDS_MAX):
            if self.topology.version == self._settled_version:
                break
            self._settled_version = self.topology.version
            if not self._topology_synced and self._alone(now):
                self._topology_synced = True  # nobody else to learn from
            effects += self._elect(now)
            effects += self.writes.retry_parked(now)
            effects += self.writes.recheck_all()
        return effects

    def _alone(self, now: float) -> bool:
        """No live peer but us in the view, and nobody to hear from: a founder, or a peer
        whose seeds have not answered for as long as a joiner waits before configuring the
        mesh alone. A joiner's view lacks peers until its snapshot's chunks are all in: one
        holding elections but not yet the masters' joins made joiners of a 500-peer mesh
        think they were alone and elect themselves masters of shards whose masters lived."""
        if [p for p in self.topology.live_peers() if p != self.name]:
            return False
        return not self.seeds or now >= self._started_at + CONFIGURE_ALONE_PERIODS * self.config.probe_interval_s

    def _elect(self, now: float) -> list[Effect]:
        if not self._topology_synced or self._leaving or self._mastered_version == self.topology.version:
            return []  # (every shard had a live master at this view: nothing to claim, O(shards) a tick)

        def caught_up(shard: int) -> bool:
            return not self.anti_entropy.pulling(shard, now)

        effects: list[Effect] = []
        for fact in election.claims(self.topology, self.name, caught_up):
            if self.log.knows_fact(fact):
                continue
            effects += self.publish_fact(fact, now)[1]
            effects.append(Journal("elected", f"{self.name} masters shard {fact.shard} at epoch {fact.epoch}"))
        if not effects and all(map(self.topology.live_master, range(self.topology.shards or 0))):
            self._mastered_version = self.topology.version if self.topology.shards else -1
        return effects
