"""The `$topology` stream as the node holds it: every topology event, its fold and digest.

The stream is small (a few events per peer and per election), so the node keeps all of it
in memory, seeded from the store on start, and persists each new event through `Persist`
like any other. Keeping it here, rather than asking the store, lets a fact count the
moment it is known: the fold must not wait for an fsync to see a failure or an election.

Facts are keyed by `fact_key(fact)`: the same fact published by two peers is one natural
key with two dots. Only the event with the smaller digest is served (the store's rule), but
both dots are held, and the loser event is kept so a partner lacking that dot can be given
it and its vector settles. The digest that anti-entropy compares is an XOR of per-dot
hashes: order-independent, updated in O(1), equal exactly when the dot sets are equal.
"""

from __future__ import annotations

from collections.abc import Iterable

import blake3

from meshstream.clocks import Dot, VersionVector
from meshstream.envelope import Event
from meshstream.errors import RemoteProtocolError
from meshstream.ids import TOPOLOGY_STREAM
from meshstream.ordering import canonical_order
from topology.events import TopologyFact, encode_fact, fact_key, fact_of
from topology.fold import TopologyState

DIGEST_BYTES = 16


def _dot_hash(dot: Dot) -> int:
    text = f"{dot.peer}\x00{dot.counter}".encode("utf-8")
    return int.from_bytes(blake3.blake3(text).digest(length=DIGEST_BYTES), "big")


class TopologyLog:
    """Holds the `$topology` events, their fold (`state`) and the dots seen."""

    def __init__(self, writer: str) -> None:
        self.writer = writer  # the dot peer this process sequences with
        self.state = TopologyState()
        self._served: dict[bytes, Event] = {}  # fact key -> winning event
        self._losers: dict[Dot, Event] = {}  # conflict losers, kept to hand to partners
        self._counters: dict[str, set[int]] = {}  # dot peer -> counters beyond the vector
        self._vector = VersionVector()
        self._digest = 0
        self._counter = 0
        self.version = 0  # raised whenever the fold changes: caches key on it

    # -- queries --
    @property
    def vector(self) -> VersionVector:
        """Contiguous version vector of the dots held (as the store computes one)."""
        return self._vector

    def summary(self, holes_max: int) -> tuple[VersionVector, list[Dot]]:
        """The highest counter held per peer, and the dots below it not held (at most
        `holes_max`; a peer whose holes do not fit keeps its contiguous counter)."""
        tops = dict(self._vector.items())
        holes: list[Dot] = []
        for peer in sorted(self._counters):
            beyond = self._counters[peer]
            missing = [c for c in range(self._vector.get(peer) + 1, max(beyond)) if c not in beyond]
            if len(holes) + len(missing) <= holes_max:
                tops[peer] = max(beyond)
                holes += [Dot(peer, c) for c in missing]
        return VersionVector(tops), holes

    def digest(self) -> bytes:
        return self._digest.to_bytes(DIGEST_BYTES, "big")

    def events(self) -> list[Event]:
        """Every served event, in canonical order."""
        return canonical_order(self._served.values())

    def has(self, event: Event) -> bool:
        return self._held(event.dot)

    def knows_fact(self, fact: TopologyFact) -> bool:
        return fact_key(fact) in self._served

    def event_of(self, fact: TopologyFact) -> Event | None:
        return self._served.get(fact_key(fact))

    def missing_for(self, vector: VersionVector, limit: int, holes: Iterable[Dot] = ()) -> list[Event]:
        """Up to `limit` events (losers too) whose dots `vector` lacks or that are among
        `holes`, by dot."""
        lacking = set(holes)

        def wanted(dot: Dot) -> bool:
            return not vector.contains(dot) or dot in lacking

        found = [e for e in self._served.values() if wanted(e.dot)]
        found += [e for d, e in self._losers.items() if wanted(d)]
        found.sort(key=lambda e: (e.dot.peer, e.dot.counter))
        return found[:limit]

    def __len__(self) -> int:
        return len(self._served)

    # -- changes --
    def sequence(self, fact: TopologyFact) -> Event | None:
        """A new event for `fact` with the next dot of `writer`, added here; None when
        the fact is already known (its key is taken)."""
        if self.knows_fact(fact):
            return None
        self._counter += 1
        dot = Dot(self.writer, self._counter)
        context = self._vector.with_dot(Dot(self.writer, self._counter - 1)) if self._counter > 1 else self._vector
        event = Event.sequence(TOPOLOGY_STREAM, fact_key(fact), encode_fact(fact), {}, dot, context)
        self.add(event)
        return event

    def add(self, event: Event) -> bool:
        """Take in one event; True when its dot is new here. Raises RemoteProtocolError
        for an event that is not a valid topology fact."""
        if event.stream != TOPOLOGY_STREAM:
            raise RemoteProtocolError(f"not a topology event: stream {event.stream!r}")
        if self._held(event.dot):
            return False
        fact = fact_of(event)  # checks the key is the fact's; RemoteProtocolError if not
        if event.dot.peer == self.writer:
            self._counter = max(self._counter, event.dot.counter)
        self._note_dot(event.dot)
        existing = self._served.get(event.key)
        if existing is None or event.digest < existing.digest:
            if existing is not None:
                self._losers[existing.dot] = existing
            self._served[event.key] = event
        else:
            self._losers[event.dot] = event
        if self.state.apply(fact):
            self.version += 1
        return True

    def load(self, events: Iterable[Event]) -> None:
        """Take in events recovered from the store (already durable)."""
        for event in events:
            self.add(event)

    # -- dot bookkeeping --
    def _held(self, dot: Dot) -> bool:
        return self._vector.contains(dot) or dot.counter in self._counters.get(dot.peer, ())

    def _note_dot(self, dot: Dot) -> None:
        self._digest ^= _dot_hash(dot)
        if dot.counter != self._vector.get(dot.peer) + 1:
            self._counters.setdefault(dot.peer, set()).add(dot.counter)
            return
        top = dot.counter
        beyond = self._counters.get(dot.peer, set())
        while top + 1 in beyond:
            top += 1
            beyond.discard(top)
        if not beyond:
            self._counters.pop(dot.peer, None)
        self._vector = self._vector.with_dot(Dot(dot.peer, top))
