"""Anti-entropy: push-pull reconciliation of shards and `$topology` with one partner.

Every `gossip_interval_s` the node picks a random live partner that shares a shard with it
(now and then a peer declared failed, to find healed partitions) and sends a `SyncSummary`:
one 16-byte digest of the digests of every shard either of them replicates, and the
`$topology` digest. Equal digests end the round there, so an in-sync round costs the same
40 bytes at a thousand events as at a million, and at 16 shards as at 256 (a `SyncOffer` of
256 shard digests every 50 ms cost an idle 3-peer mesh ~300 KB/s, and about a sixth of each
peer's idle CPU in encoding, decoding and comparing). Otherwise the partner answers with a `SyncOffer`: one 16-byte digest per shard,
and the `$topology` digest. For a differing shard, each side that replicates it sends a `SyncPull`
with its per-stream version vectors; the other answers with `SyncEnvelopes` carrying
exactly the events that vector lacks as raw envelopes (`store.envelopes_missing`: read and
digest-checked, never decoded), cut at `anti_entropy_batch_events_max` events or
`anti_entropy_batch_bytes_max` bytes; the receiver checks and decodes the batch in one
pass (`wire.envelope_batch.decode_run`), into an `EnvelopeRun` when it is one writer's
consecutive events (a catch-up's usual batch), which the node persists whole.

Catch-up: a cut batch says `more`, and the receiver continues it with a `SyncContinue` to
the same partner for the same shards (no offer round), answered with batches of up to
`CATCHUP_BATCH_EVENTS_MAX` events: one pull, one decode pass and one fsync per ~2000
events. It continues as soon as the batch arrives (pipelined; the pull names the events in
flight here), or once it is durable when PIPELINED_EVENTS_MAX events are already in
flight. A batch that is one writer's run (its first and last envelopes say so:
`run_extent`) is continued before it is even checked, the pull naming its dots, through
`Node.send_early`: the partner reads the next batch while this one is checked, decoded
and written, instead of after (1M-event catch-up, 4 interleaved runs each way: median
95,300 -> 108,300 events/s). Should
the batch then fail its checks, nothing of it is in flight and the pull after names only
what is held: its events are sent again.

A peer has at most one pull of a shard outstanding (`_pulling`: shard -> partner, expiry,
round). A pull is released when ITS answer is durable or continued (answers echo the
pull's round), at its expiry (at least PULL_LOCK_S_MIN, CONTINUE_LOCK_S_MIN for a
continuation), or when its partner is declared failed. So two partners that both notice a
returning peer, or two rounds crossing with one partner, never both send it the same
events: catch-up costs little more than the bytes of what was missing.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from typing import TYPE_CHECKING

import blake3

from meshstream.clocks import VersionVector
from meshstream.ids import TOPOLOGY_STREAM
from meshstream.protocol.effects import Effect, Send
from meshstream.wire.envelope_batch import decode_run
from meshstream.wire.run_template import run_extent
from meshstream.wire.replication_messages import (
    CATCHUP_BATCH_EVENTS_MAX,
    SHARD_DIGEST_BYTES,
    TOPOLOGY_HOLES_MAX,
    ShardDigest,
    StreamVector,
    SyncContinue,
    SyncEnvelopes,
    SyncEvents,
    SyncOffer,
    SyncPull,
    SyncSummary,
)

if TYPE_CHECKING:
    from meshstream.protocol.node import Node

TOPOLOGY_SHARD = -1  # the key of `$topology` in `_pulling`
PULL_LOCK_INTERVALS = 4  # a pull unanswered for this many gossip intervals is given up...
# ...but held at least this long: the answer waits behind this peer's own backlog, and on a
# loaded machine a short lock (0.2 s with the local preset) expired before the answer was
# read, another partner was asked for the same shard, and both went on continuing their
# batches (4x the bytes of what was missing).
PULL_LOCK_S_MIN = 1.0
# A catch-up continuation is held longer still: its partner has just answered, and a lock
# whose partner is declared failed is free at once (`pulling`), so a partner that dies mid
# catch-up costs no more than its failure detection.
CONTINUE_LOCK_S_MIN = 10.0
EVENT_OVERHEAD_BYTES = 8  # CBOR framing of one envelope inside a batch
# SWIM never probes a failed peer, so after a partition heals each side would go on
# believing the other dead. Now and then a round goes to a failed peer instead: comparing
# `$topology` tells each side what the other declared, and the peers refute and merge.
FAILED_PARTNER_PROBABILITY = 0.1
# Catch-up continues with the next batch before this one is durable while fewer events
# than this are in flight to the store here (two catch-up batches: one being written, one
# being taken), so a slow disk holds the puller's memory to a few MiB.
PIPELINED_EVENTS_MAX = 2 * CATCHUP_BATCH_EVENTS_MAX


def _summary(digests: list[tuple[int, bytes]]) -> bytes:
    """One digest of (shard, digest) pairs: equal only for the same shards' same digests."""
    hasher = blake3.blake3()
    for shard, digest in digests:
        hasher.update(shard.to_bytes(4, "little") + digest)
    return hasher.digest(length=SHARD_DIGEST_BYTES)


def take_within(found: list[bytes], candidates: list[bytes], budget: int, room: int) -> tuple[bool, int]:
    """Move to `found` the leading `candidates` that fit a batch: at most `room` of them,
    each only while the bytes so far (EVENT_OVERHEAD_BYTES each on top) stay within
    `budget`, except that a batch's first envelope always goes. (cut short, budget left).
    Whole-list operations: a catch-up batch takes 2000 envelopes."""
    if not candidates:
        return False, budget
    sizes = map(operator.add, map(len, candidates), itertools.repeat(EVENT_OVERHEAD_BYTES))
    spent = list(itertools.accumulate(sizes))  # bytes so far after each candidate
    fits = min(max(bisect.bisect_right(spent, budget), 0 if found else 1), room)
    found += candidates[:fits]
    return fits < len(candidates), budget - (spent[fits - 1] if fits else 0)


class AntiEntropy:
    def __init__(self, node: "Node") -> None:
        self.node = node
        self._round = 0
        self._pulling: dict[int, tuple[str, float, int]] = {}  # shard -> (partner, expiry, round)
        self._candidates_cache: tuple[int, list[str], list[str]] | None = None

    # -- queries --
    def pulling(self, shard: int, now: float) -> bool:
        entry = self._pulling.get(shard)
        return entry is not None and entry[1] > now and self.node.topology.is_live(entry[0])

    # -- starting a round --
    def choose_partner(self) -> str | None:
        node = self.node
        live, sharing = self._candidates()
        failed = node.failed_peers()
        if failed and (not live or node.rng.random() < FAILED_PARTNER_PROBABILITY):
            return node.rng.choice(failed)
        if not live:
            return None
        return node.rng.choice(sharing or live)

    def _candidates(self) -> tuple[list[str], list[str]]:
        """Live peers, and those sharing a shard with this one (cached per view)."""
        node = self.node
        version = node.topology.version
        if self._candidates_cache is None or self._candidates_cache[0] != version:
            live = [p for p in node.topology.live_peers() if p != node.name]
            # Peers in the placements of our shards: O(shards x rf), not a set test per peer.
            near = {p for shard in node.responsible_shards(node.name) for p in node.placement(shard)}
            sharing = [p for p in live if p in near]
            self._candidates_cache = (version, live, sharing)
        return self._candidates_cache[1], self._candidates_cache[2]

    def start_round(self, partner: str, now: float) -> list[Effect]:
        self._round += 1
        digests = self._shard_digests(partner)
        return [Send(partner, SyncSummary(self._round, _summary(digests), self.node.log.digest()))]

    def _offer(self, partner: str) -> list[Effect]:
        self._round += 1
        digests = tuple(ShardDigest(s, d) for s, d in self._shard_digests(partner))
        return [Send(partner, SyncOffer(self._round, digests, self.node.log.digest()))]

    def _shard_digests(self, partner: str) -> list[tuple[int, bytes]]:
        """(shard, digest) of every shard this peer or `partner` replicates, in order."""
        node = self.node
        shards = node.responsible_shards(node.name) | node.responsible_shards(partner)
        ordered = sorted(shards)
        return list(zip(ordered, node.shard_digests(ordered)))

    # -- B's side: a summary arrives --
    def on_summary(self, src: str, summary: SyncSummary, now: float) -> list[Effect]:
        """Nothing when the partner's summary and `$topology` agree with ours; our offer
        otherwise (shard by shard), from which the partner pulls and names what we lack.
        A differing `$topology` is pulled at once too, both ways (joins, suspicions and
        elections spread no later than when rounds opened with a full offer)."""
        if summary.topology_digest != self.node.log.digest():
            self._round += 1
            pull = self._pull(self._round, src, [], True, now)
            effects: list[Effect] = []
            if pull.topology is not None:
                effects.append(Send(src, SyncPull(pull.round_id, (), (), pull.topology, pull.topology_holes, (), True)))
            return effects + self._offer(src)
        self.node.topology_synced_with(src, now)
        if summary.summary == _summary(self._shard_digests(src)):
            return []
        return self._offer(src)

    def pull_from(self, partner: str, shards: list[int], now: float) -> list[Effect]:
        """Pull `shards` from `partner` outside a round (a retired replica holds events of
        them that this peer lacks: `retire.py`); shards already being pulled are left out."""
        self._round += 1
        pull = self._pull(self._round, partner, shards, False, now)
        return [Send(partner, pull)] if pull.shards else []

    # -- B's side: an offer arrives --
    def on_offer(self, src: str, offer: SyncOffer, now: float) -> list[Effect]:
        node = self.node
        mine = node.responsible_shards(node.name)
        theirs = node.responsible_shards(src)
        offered = [d for d in offer.digests if d.shard < (node.topology.shards or 0)]
        held = node.shard_digests([d.shard for d in offered])
        differing = [d.shard for d, digest in zip(offered, held) if digest != d.digest]
        topology_differs = offer.topology_digest != node.log.digest()
        if not topology_differs:
            node.topology_synced_with(src, now)
        want = [s for s in differing if s in mine]
        give = tuple(s for s in differing if s in theirs)
        if not want and not give and not topology_differs:
            return []
        self._round += 1  # our numbering: the answer's round names this pull (`_release`)
        pull = self._pull(self._round, src, want, topology_differs, now)
        message = SyncPull(pull.round_id, pull.shards, pull.vectors, pull.topology, pull.topology_holes,
                           give, topology_differs)
        return [Send(src, message)]

    def _pull(self, round_id: int, src: str, shards: list[int], topology: bool, now: float,
              lock_s_min: float = PULL_LOCK_S_MIN, extent: tuple[str, str, int] | None = None) -> SyncPull:
        """A pull for those of `shards` (and `$topology`) not already pulled from another;
        `extent` (stream, writer, last counter) raises that stream's vector."""
        expiry = now + max(PULL_LOCK_INTERVALS * self.node.config.gossip_interval_s, lock_s_min)
        free = [s for s in shards if not self.pulling(s, now)]
        for shard in free:
            self._pulling[shard] = (src, expiry, round_id)
        vector, holes = None, []
        if topology and not self.pulling(TOPOLOGY_SHARD, now):
            self._pulling[TOPOLOGY_SHARD] = (src, expiry, round_id)
            vector, holes = self.node.log.summary(TOPOLOGY_HOLES_MAX)
        vectors = tuple(
            StreamVector(stream, self.node.pull_vector(stream))  # with events in flight here
            for shard in free for stream in self.node.streams_in(shard)
        )
        if extent is not None and self.node.shard_of(extent[0]) in free:
            stream, writer, counter = extent  # a stream new here is not in `streams_in` yet
            others = tuple(v for v in vectors if v.stream != stream)
            vectors = others + (StreamVector(stream, self.node.pull_vector(stream).merge({writer: counter})),)
        return SyncPull(round_id, tuple(free), vectors, vector, tuple(holes), (), False)

    # -- either side: a pull arrives --
    def on_pull(self, src: str, pull: SyncPull, now: float) -> list[Effect]:
        node = self.node
        limit_shards = node.topology.shards or 0
        shards = sorted({s for s in pull.shards if 0 <= s < limit_shards})
        events_max = CATCHUP_BATCH_EVENTS_MAX if type(pull) is SyncContinue else None
        envelopes, more = self._collect(shards, pull, events_max)
        effects: list[Effect] = [Send(src, SyncEnvelopes(pull.round_id, tuple(envelopes), more))]
        mine = node.responsible_shards(node.name)
        want = [s for s in pull.answer_shards if 0 <= s < limit_shards and s in mine]
        if want or pull.answer_topology:
            self._round += 1
            answer = self._pull(self._round, src, want, pull.answer_topology, now)
            if answer.shards or answer.topology is not None:
                effects.append(Send(src, answer))
        return effects

    def _collect(self, shards: list[int], pull: SyncPull, events_max: int | None) -> tuple[list[bytes], bool]:
        """The envelopes of the events the puller lacks, up to the batch bounds
        (`events_max`, or the config's); True when cut short."""
        config = self.node.config
        events_max = events_max or config.anti_entropy_batch_events_max
        budget = config.anti_entropy_batch_bytes_max
        theirs = {v.stream: v.vector for v in pull.vectors}
        found: list[bytes] = []
        sources: list[tuple[str, VersionVector]] = []
        if pull.topology is not None:
            sources.append((TOPOLOGY_STREAM, pull.topology))
        for shard in shards:
            sources += [(s, theirs.get(s, VersionVector())) for s in self.node.streams_in(shard)]
        for stream, vector in sources:
            room = events_max - len(found)
            if stream == TOPOLOGY_STREAM:
                candidates = [e.envelope for e in self.node.log.missing_for(vector, room + 1, pull.topology_holes)]
            else:
                candidates = self.node.missing_envelopes(stream, vector, room + 1)
            cut, budget = take_within(found, candidates, budget, room)
            if cut:
                return found, True
        return found, False

    # -- the puller: events arrive --
    def on_events(self, src: str, batch: SyncEvents, now: float) -> list[Effect]:
        """A batch arrives (SyncEnvelopes: checked and decoded in one pass; raises
        RemoteProtocolError before anything changes here if any envelope is bad). A cut
        batch is continued at once (catch-up pipelined), unless PIPELINED_EVENTS_MAX events
        are already in flight here; then at durability. A run is continued before it is
        checked, through `Node.send_early`, its pull naming the run's dots (`run_extent`);
        any other batch once it is taken."""
        pipelined = batch.more and len(self.node.unpersisted) < PIPELINED_EVENTS_MAX
        extent = run_extent(batch.events) if pipelined and type(batch) is SyncEnvelopes else None
        # A run's continuation goes out before the run is checked, naming its dots: the
        # partner reads the next batch while this one is checked, not after.
        effects = self.node.send_early(self._continue(src, batch.round_id, now, extent)) if extent else []
        events = decode_run(batch.events) if type(batch) is SyncEnvelopes else batch.events
        if TOPOLOGY_SHARD in self._pulling and self._pulling[TOPOLOGY_SHARD][0] == src and not batch.more:
            self.node.topology_synced_with(src, now)
        if not pipelined:
            return self.node.take_events(src, events, now, ("sync", src, (batch.round_id, batch.more)))
        effects += self.node.take_events(src, events, now, ("sync", src, None))
        return effects if extent else effects + self._continue(src, batch.round_id, now)

    def on_durable(self, src: str, pull: tuple[int, bool] | None, now: float) -> list[Effect]:
        """A batch from `src` answering our pull `pull` = (round, more) is durable: that
        pull is done (the store's vectors now show the events, so the next pull asks only
        for the rest); continue it if the batch was cut. None: a batch already continued
        when it arrived. Only that pull's shards are released: an answer to another pull
        from the same partner (a `$topology` round, often empty) must not free the shards
        of a catch-up in progress, or other partners are asked for the same events."""
        if pull is None:
            return []
        round_id, more = pull
        if more:
            return self._continue(src, round_id, now)
        self._release(src, round_id)
        return []

    def _continue(self, src: str, round_id: int, now: float,
                  extent: tuple[str, str, int] | None = None) -> list[Effect]:
        """Pull the next batch of the shards pulled from `src` in `round_id`, straight from
        it: no offer (a digest of every shared shard on both sides) per batch. The pull
        names the events in flight here (`Node.pull_vector`), so they are not sent again,
        and those of `extent` (stream, writer, last counter), a run on its way in."""
        pulled = self._release(src, round_id)
        self._round += 1
        shards = [s for s in pulled if s != TOPOLOGY_SHARD]
        pull = self._pull(self._round, src, shards, TOPOLOGY_SHARD in pulled, now, CONTINUE_LOCK_S_MIN, extent)
        if not pull.shards and pull.topology is None:
            return self.start_round(src, now)  # locked meanwhile by another partner, or expired
        return [Send(src, SyncContinue(pull.round_id, pull.shards, pull.vectors, pull.topology,
                                       pull.topology_holes, (), False))]

    def _release(self, src: str, round_id: int) -> list[int]:
        """End the pull `round_id` from `src`; the shards it covered, in order."""
        released = [shard for shard in sorted(self._pulling) if self._pulling[shard][0] == src
                    and self._pulling[shard][2] == round_id]
        for shard in released:
            del self._pulling[shard]
        return released
