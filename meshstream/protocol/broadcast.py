"""The SWIM piggyback queue: which topology events ride on the next membership message.

Each queued event is sent at most `transmit_limit` times (the caller passes
`Config.retransmit_limit(N)`, lambda * ceil(log10(N + 1)), so an update reaches every peer
with high probability while the cost per message stays constant). Each message takes up to
`count_max` events, least-sent first and, among equally sent ones, newest first: fresh
news spreads fastest, and an event that has been sent often is the likeliest to be known.

A heap ordered by (transmits, -sequence) gives the next events in O(k log Q). The queue is
bounded: past `queue_events_max` it keeps the best three quarters (anti-entropy of the
`$topology` stream repairs whatever gossip drops). The same event (by digest) queued twice
is one entry.

Two helpers for the other ways membership moves topology events: `chunk_events` splits a
join snapshot into bounded messages, and `Cooldown` lets a repair message go to a peer at
most once per interval (with a bounded memory of peers).
"""

from __future__ import annotations

import heapq

from meshstream.envelope import Event

QUEUE_EVENTS_MAX = 2048  # a 1000-peer mesh joining at once still fits; ~300 KiB of envelopes


class BroadcastQueue:
    """Events waiting to be piggybacked, each with how often it has been sent."""

    def __init__(self, queue_events_max: int = QUEUE_EVENTS_MAX) -> None:
        assert queue_events_max >= 4, queue_events_max
        self._queue_events_max = queue_events_max
        self._heap: list[tuple[int, int, Event]] = []  # (transmits, -sequence, event)
        self._queued: set[bytes] = set()  # digests in the heap
        self._sequence = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, event: Event) -> None:
        """Queue `event` (no-op if it is already queued)."""
        if event.digest in self._queued:
            return
        self._sequence += 1
        heapq.heappush(self._heap, (0, -self._sequence, event))
        self._queued.add(event.digest)
        if len(self._heap) > self._queue_events_max:
            self._trim()

    def take(self, count_max: int, transmit_limit: int) -> tuple[Event, ...]:
        """Up to `count_max` events for one message, counting this transmission."""
        assert transmit_limit >= 1, transmit_limit
        taken: list[tuple[int, int, Event]] = []
        while self._heap and len(taken) < count_max:
            taken.append(heapq.heappop(self._heap))
        for transmits, negative_sequence, event in taken:
            if transmits + 1 < transmit_limit:
                heapq.heappush(self._heap, (transmits + 1, negative_sequence, event))
            else:
                self._queued.discard(event.digest)
        return tuple(event for _, _, event in taken)

    def transmits(self) -> dict[bytes, int]:
        """Digest -> times sent, for tests and status pages."""
        return {event.digest: transmits for transmits, _, event in self._heap}

    def _trim(self) -> None:
        keep = heapq.nsmallest(self._queue_events_max * 3 // 4, self._heap)
        self._heap = keep
        heapq.heapify(self._heap)
        self._queued = {event.digest for _, _, event in keep}


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
