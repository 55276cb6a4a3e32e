"""The SWIM piggyback queue: which topology events ride on the next membership message.

Each queued event is sent at most `transmit_limit` times (the caller passes
`Config.retransmit_limit(N)`, lambda * ceil(log10(N + 1)), so an update reaches every peer
with high probability while the cost per message stays constant). Each message takes up to
`count_max` events: first by tier, then (refreshes) least-sent first and, among equally
sent ones, newest first: fresh news spreads fastest, and an event that has been sent often
is the likeliest to be known.

Tiers: membership changes (a join, a leave, a failure, the mesh shape, an election; tier
`CHANGE_TIER`) go before liveness refreshes (suspect and alive; `REFRESH_TIER`). Under
message loss every peer's probes fail now and then, and the resulting suspect/refute pairs
(about 15 new events per period in a 1000-peer mesh at 10% loss, each owed
`transmit_limit` sends by every peer) outnumbered the piggyback slots many times over: a
leave waited behind them and took ~20 periods to reach everyone instead of ~10. A refresh
needs gossip less: the suspecter sends its suspicion to the suspect, the suspect answers
it with its refutation directly, and the other peers wait twice the suspicion timeout,
time enough for anti-entropy of `$topology` to bring the refutation.

Within the change tier the order is newest first whatever the sends so far: a 1000-peer
mesh's ~1000 joins (16 sends owed each) took each peer hundreds of periods to send, and
least-sent-first put a fresh leave, once sent twice, behind every join sent less (after 4
periods of 10% loss it had been sent a median 2 times and 148 peers still lacked it).

A heap ordered by (tier, rank, -sequence), rank the sends so far for refreshes and 0 for
changes, gives the next events in O(k log Q). The
queue is bounded: past `queue_events_max` it keeps the best three quarters (anti-entropy of
the `$topology` stream repairs whatever gossip drops). The same event (by digest) queued
twice is one entry.

Two helpers for the other ways membership moves topology events: `chunk_events` splits a
join snapshot into bounded messages, and `Cooldown` lets a repair message go to a peer at
most once per interval (with a bounded memory of peers).
"""

from __future__ import annotations

import heapq

from meshstream.envelope import Event
from topology.events import MemberAlive, MemberSuspect, TopologyFact

QUEUE_EVENTS_MAX = 2048  # a 1000-peer mesh joining at once still fits; ~300 KiB of envelopes
CHANGE_TIER = 0  # joins, leaves, failures, mesh shape, elections: sent first
REFRESH_TIER = 1  # suspect / alive: sent with the slots the changes leave


def tier_of(fact: TopologyFact) -> int:
    """The piggyback tier of a topology fact (see the module docstring)."""
    return REFRESH_TIER if isinstance(fact, (MemberSuspect, MemberAlive)) else CHANGE_TIER


class BroadcastQueue:
    """Events waiting to be piggybacked, each with how often it has been sent."""

    def __init__(self, queue_events_max: int = QUEUE_EVENTS_MAX) -> None:
        assert queue_events_max >= 4, queue_events_max
        self._queue_events_max = queue_events_max
        self._heap: list[tuple[int, int, int, int, Event]] = []  # (tier, rank, -sequence, transmits, event)
        self._queued: set[bytes] = set()  # digests in the heap
        self._sequence = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, event: Event, tier: int = CHANGE_TIER) -> None:
        """Queue `event` in `tier` (no-op if it is already queued)."""
        assert tier in (CHANGE_TIER, REFRESH_TIER), tier
        if event.digest in self._queued:
            return
        self._sequence += 1
        heapq.heappush(self._heap, (tier, 0, -self._sequence, 0, event))
        self._queued.add(event.digest)
        if len(self._heap) > self._queue_events_max:
            self._trim()

    def take(self, count_max: int, transmit_limit: int, tier_max: int = REFRESH_TIER) -> tuple[Event, ...]:
        """Up to `count_max` events of tiers up to `tier_max` for one message, counting this
        transmission."""
        assert transmit_limit >= 1, transmit_limit
        taken: list[tuple[int, int, int, int, Event]] = []
        while self._heap and len(taken) < count_max and self._heap[0][0] <= tier_max:
            taken.append(heapq.heappop(self._heap))
        for tier, _, negative_sequence, transmits, event in taken:
            if transmits + 1 < transmit_limit:
                rank = transmits + 1 if tier == REFRESH_TIER else 0
                heapq.heappush(self._heap, (tier, rank, negative_sequence, transmits + 1, event))
            else:
                self._queued.discard(event.digest)
        return tuple(entry[4] for entry in taken)

    def transmits(self) -> dict[bytes, int]:
        """Digest -> times sent, for tests and status pages."""
        return {event.digest: transmits for _, _, _, transmits, event in self._heap}

    def has_changes(self) -> bool:
        """True while a membership change (`CHANGE_TIER`) is queued."""
        return bool(self._heap) and self._heap[0][0] == CHANGE_TIER

    def tier_counts(self) -> tuple[int, int]:
        """(changes, refreshes) queued, for tests and benches."""
        changes = sum(1 for entry in self._heap if entry[0] == CHANGE_TIER)
        return changes, len(self._heap) - changes

    def _trim(self) -> None:
        keep = heapq.nsmallest(self._queue_events_max * 3 // 4, self._heap)
        self._heap = keep
        heapq.heapify(self._heap)
        self._queued = {entry[4].digest for entry in keep}


def chunk_events(events: list[Event], events_max: int, bytes_max: int) -> list[tuple[tuple[Event, ...], bool]]:
    """Split `events` into (chunk, is_last) pairs of at most `events_max` events and about
    `bytes_max` bytes (a single larger event gets a chunk of its own). At least one chunk."""
    chunks: list[list[Event]] = [[]]
    size = 0
    for event in events:
        full = len(chunks[-1]) >= events_max or size + event.size() > bytes_max
        if chunks[-1] and full:
            chunks.append([])
            size = 0
        chunks[-1].append(event)
        size += event.size()
    return [(tuple(chunk), index == len(chunks) - 1) for index, chunk in enumerate(chunks)]


class Cooldown:
    """At most one `allow(key, now)` per `interval_s` per key; remembers `keys_max` keys."""

    def __init__(self, interval_s: float, keys_max: int) -> None:
        self._interval_s = interval_s
        self._keys_max = keys_max
        self._last: dict[str, float] = {}

    def allow(self, key: str, now: float) -> bool:
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            return False
        if len(self._last) >= self._keys_max:
            self._last = {k: t for k, t in self._last.items() if now - t < self._interval_s}
            if len(self._last) >= self._keys_max:
                return False  # bounded: a repair can wait for the next interval
        self._last[key] = now
        return True
