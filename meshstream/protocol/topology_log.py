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

import bisect
import functools
import itertools
import operator
from collections.abc import Iterable

import blake3

from meshstream.clocks import Dot, VersionVector, vector_of_sorted
from meshstream.envelope import Event
from meshstream.errors import RemoteProtocolError
from meshstream.ids import TOPOLOGY_STREAM
from meshstream.ordering import canonical_order
from topology.events import TopologyFact, encode_fact, fact_key, fact_of
from topology.fold import TopologyState

DIGEST_BYTES = 16
DOT_HASHES_MAX = 1 << 16  # memoized dot hashes: every peer of a simulation hashes the same dots


@functools.lru_cache(maxsize=DOT_HASHES_MAX)
def _dot_hash(peer: str, counter: int) -> int:
    text = f"{peer}\x00{counter}".encode("utf-8")
    return int.from_bytes(blake3.blake3(text).digest(length=DIGEST_BYTES), "big")


def _tie_break(event: Event) -> tuple[str, int, bytes]:
    return (event.dot.peer, event.dot.counter, event.digest)  # as `canonical_order` breaks ties


class TopologyLog:
    """Holds the `$topology` events, their fold (`state`) and the dots seen."""

    def __init__(self, writer: str) -> None:
        self.writer = writer  # the dot peer this process sequences with
        self.state = TopologyState()
        self._served: dict[bytes, Event] = {}  # fact key -> winning event
        self._losers: dict[Dot, Event] = {}  # conflict losers, kept to hand to partners
        self._counters: dict[str, set[int]] = {}  # dot peer -> counters beyond the vector
        # Every held event (served and losers) by dot peer and counter: a pull is answered
        # per writer, not by scanning every event (N writers at N peers: O(N^2) otherwise).
        self._by_writer: dict[str, dict[int, Event]] = {}
        self._top: dict[str, int] = {}  # dot peer -> highest counter held
        self._writers_sorted: list[str] = []  # the keys of _by_writer, kept sorted (insort)
        # The contiguous vector as a plain dict: raising it is O(1). An immutable
        # VersionVector of it is built only when asked for (a copy per dot was O(N)).
        self._tops: dict[str, int] = {}
        self._vector: VersionVector | None = VersionVector()
        # Since `_vector` was last built: the writers whose contiguous counter rose, or None
        # once a writer entered `_tops` (its place in the order is new: a full build). Only
        # raised counters: the last vector is copied (same keys, same order) and they are set.
        self._raised: set[str] | None = set()
        self._events: list[Event] | None = []  # canonical order of the served events
        # True while every event's context names only earlier events of its own writer (as
        # `sequence` makes them): every causal edge then runs forward in (peer, counter,
        # digest) order, so the canonical order is that sort (Kahn's min-first release
        # never waits), without building the graph for each join snapshot.
        self._chains_only = True
        self._last_vector: VersionVector | None = None
        self._digest = 0
        self._counter = 0
        self.version = 0  # raised whenever the fold changes: caches key on it

    # -- queries --
    @property
    def vector(self) -> VersionVector:
        """Contiguous version vector of the dots held (as the store computes one)."""
        if self._vector is None:
            self._vector = self._rebuilt_vector()
        return self._vector

    def _rebuilt_vector(self) -> VersionVector:
        raised, self._raised = self._raised, set()
        if raised is None or self._last_vector is None:
            vector = self._sorted_vector(self._tops)
        else:
            counters = dict(self._last_vector._counters)  # noqa: SLF001  (a vector is never changed)
            for peer in raised:
                counters[peer] = self._tops[peer]
            vector = vector_of_sorted(counters)
        self._last_vector = vector
        return vector

    def summary(self, holes_max: int) -> tuple[VersionVector, list[Dot]]:
        """The highest counter held per peer, and the dots below it not held (at most
        `holes_max`; a peer whose holes do not fit keeps its contiguous counter)."""
        if not self._counters:
            return self.vector, []  # no dots beyond the contiguous vector: the cached one
        tops = dict(self._tops)
        holes: list[Dot] = []
        for peer in sorted(self._counters):
            beyond = self._counters[peer]
            missing = [c for c in range(self._tops.get(peer, 0) + 1, max(beyond)) if c not in beyond]
            if len(holes) + len(missing) <= holes_max:
                tops[peer] = max(beyond)
                holes += [Dot(peer, c) for c in missing]
        return self._sorted_vector(tops), holes

    def digest(self) -> bytes:
        return self._digest.to_bytes(DIGEST_BYTES, "big")

    def events(self) -> list[Event]:
        """Every served event, in canonical order (cached until the served set changes)."""
        if self._events is None:
            served = self._served.values()
            self._events = sorted(served, key=_tie_break) if self._chains_only else canonical_order(served)
        return list(self._events)

    def has(self, event: Event) -> bool:
        return self._held(event.dot)

    def knows_fact(self, fact: TopologyFact) -> bool:
        return fact_key(fact) in self._served

    def event_of(self, fact: TopologyFact) -> Event | None:
        return self._served.get(fact_key(fact))

    def missing_for(self, vector: VersionVector, limit: int, holes: Iterable[Dot] = ()) -> list[Event]:
        """Up to `limit` events (losers too) whose dots `vector` lacks or that are among
        `holes`, by dot."""
        lacking: dict[str, set[int]] = {}
        for dot in holes:
            lacking.setdefault(dot.peer, set()).add(dot.counter)
        found: list[Event] = []
        theirs = vector._counters  # noqa: SLF001  the plain dict: this runs per writer per pull
        tops = self._top
        if theirs == tops:  # nothing beyond theirs (one C pass; ~1 pull in 6 during a join)
            ahead: list[str] = []
        else:
            # Compared in C (map/compress): a pull names every writer of the mesh, ~N of them;
            # keys() and values() run in one order, and the few writers ahead are sorted.
            writers = tops.keys()
            ahead = sorted(itertools.compress(writers, map(operator.gt, tops.values(),
                                                           map(theirs.get, writers, itertools.repeat(0)))))
        if lacking:
            ahead = sorted(set(ahead) | (lacking.keys() & tops.keys()))
        for peer in ahead:
            have = theirs.get(peer, 0)
            asked = lacking.get(peer)
            held = self._by_writer[peer]
            counters = [c for c in held if c > have or (asked and c in asked)]
            counters.sort()
            found += [held[c] for c in counters[: limit - len(found)]]
            if len(found) >= limit:
                break
        return found

    def _writers(self) -> list[str]:
        return self._writers_sorted

    def _sorted_vector(self, counters: dict[str, int]) -> VersionVector:
        """`counters` (positive, of writers held here) as a vector, in the writer order kept
        sorted: no sort of ~N peers per build."""
        writers = list(itertools.compress(self._writers_sorted, map(counters.__contains__, self._writers_sorted)))
        assert len(writers) == len(counters), "a counter of a writer not held"
        return vector_of_sorted(dict(zip(writers, map(counters.__getitem__, writers))))

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
        # The context names only this writer's previous event. The fold is a semilattice
        # (order never matters) so nothing reads cross-writer causality here, and a full
        # vector would make every topology event O(N) bytes to send, decode and store.
        context = VersionVector({self.writer: self._counter - 1})
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
        dot, context = event.dot, event.context
        if context and not (len(context) == 1 and 0 < context.get(dot.peer) < dot.counter):
            self._chains_only = False  # (a vector holds no zero counters: 0 is "not named")
        if event.dot.peer == self.writer:
            self._counter = max(self._counter, event.dot.counter)
        self._note_dot(event.dot)
        self._index(event)
        existing = self._served.get(event.key)
        if existing is None or event.digest < existing.digest:
            if existing is not None:
                self._losers[existing.dot] = existing
            self._served[event.key] = event
            self._events = None
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
        return dot.counter <= self._tops.get(dot.peer, 0) or dot.counter in self._counters.get(dot.peer, ())

    def _index(self, event: Event) -> None:
        peer, counter = event.dot.peer, event.dot.counter
        held = self._by_writer.get(peer)
        if held is None:
            held = self._by_writer[peer] = {}
            bisect.insort(self._writers_sorted, peer)
        held[counter] = event
        if counter > self._top.get(peer, 0):
            self._top[peer] = counter

    def _note_dot(self, dot: Dot) -> None:
        self._digest ^= _dot_hash(dot.peer, dot.counter)
        if dot.counter != self._tops.get(dot.peer, 0) + 1:
            self._counters.setdefault(dot.peer, set()).add(dot.counter)
            return
        top = dot.counter
        beyond = self._counters.get(dot.peer, set())
        while top + 1 in beyond:
            top += 1
            beyond.discard(top)
        if not beyond:
            self._counters.pop(dot.peer, None)
        if self._raised is not None:
            if dot.peer in self._tops:
                self._raised.add(dot.peer)
            else:
                self._raised = None
        self._tops[dot.peer] = top
        self._vector = None
