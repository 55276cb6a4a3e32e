"""Events on their way to this peer's store, from peers: which are new, and the in-flight
bookkeeping until they are durable.

`Node.persist` records each event it hands the store: its natural key (`Node.unpersisted`)
and its dot (`Node._unpersisted_dots`), and per stream and writer the top of the run of dots
contiguous with the store's vector (`Node.pull_vector` asks for what lies beyond it).
`Node.persisted` undoes that once the store made them durable. A catch-up or a master's
push arrives as an `EnvelopeRun`: when none of its keys or dots is held or in flight, it is
taken whole (`take_run`) and tracked with set operations and one range of dots
(`InFlightDots`); anything else is sorted event by event (`sort_incoming`).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from itertools import repeat
from typing import TYPE_CHECKING

from meshstream import ids
from meshstream.envelope import Event
from meshstream.envelope_run import EnvelopeRun
from meshstream.protocol.effects import Effect

if TYPE_CHECKING:
    from meshstream.protocol.node import Node
    from meshstream.store.api import EventStore


class InFlightDots:
    """The dots of events on their way to the store, as (stream, peer, counter). Events
    one by one are kept in a set; a run taken whole (`take_run`) as one range of counters
    of its (stream, writer): a 2,048-event catch-up batch is one entry, not 2,048 tuples
    made, hashed, added and removed (~0.35 us an event of the returning peer's thread).
    A dot counts as in flight while any persist that holds it is (a run, or the same
    event sent again and persisted alone)."""

    __slots__ = ("single", "_runs")

    def __init__(self) -> None:
        self.single: set[tuple[str, str, int]] = set()
        self._runs: dict[tuple[str, str], list[range]] = {}  # (stream, writer) -> counters of runs in flight

    def __bool__(self) -> bool:
        return bool(self.single) or bool(self._runs)

    def __contains__(self, dot: tuple[str, str, int]) -> bool:
        return dot in self.single or (bool(self._runs) and self.in_runs(dot))

    def in_runs(self, dot: tuple[str, str, int]) -> bool:
        stream, peer, counter = dot
        return any(counter in counters for counters in self._runs.get((stream, peer), ()))

    def add_run(self, run: EnvelopeRun) -> None:
        self._runs.setdefault((run.stream, run.writer), []).append(run.counters())

    def discard_run(self, run: EnvelopeRun) -> None:
        key = (run.stream, run.writer)
        ranges = self._runs.get(key)
        if ranges is not None and run.counters() in ranges:
            ranges.remove(run.counters())
            if not ranges:
                del self._runs[key]

    def isdisjoint_run(self, run: EnvelopeRun) -> bool:
        """True when no dot of `run` is in flight."""
        first, last = run.first, run.last
        in_flight = self._runs.get((run.stream, run.writer), ())
        if any(counters.start <= last and first < counters.stop for counters in in_flight):
            return False
        return not self.single or self.single.isdisjoint(run.dots())


def track_in_flight(events: Sequence[Event], unpersisted: dict[tuple[str, bytes], Event],
                    in_flight: InFlightDots, heads: dict[str, dict[str, int]],
                    store: EventStore) -> set[str]:
    """`Node.persist`'s bookkeeping of events on their way to the store: each natural key
    (the first event of it in flight is kept) and dot (as (stream, peer, counter): a tuple
    of str and int hashes in C, a Dot through its dataclass __hash__), and per stream and
    writer the top of a run of dots contiguous with the store's vector (see
    `Node.pull_vector`). The store's vector and the run's head are read once per (stream,
    writer) run of `events`, not per event. Returns the streams of `events`."""
    if type(events) is EnvelopeRun:
        return _track_run(events, unpersisted, in_flight, heads, store)
    tops: dict[tuple[str, str], int] = {}  # (stream, writer) -> the head of its run so far
    starts: dict[tuple[str, str], int] = {}  # ... and before these events
    keep, add = unpersisted.setdefault, in_flight.single.add
    name = writer = None
    top = 0
    for event in events:
        stream, dot = event.stream, event.dot
        keep((stream, event.key), event)
        peer, counter = dot.peer, dot.counter
        add((stream, peer, counter))
        if stream != name or peer != writer:  # a new (stream, writer) run of `events`
            if name is not None:
                tops[name, writer] = top
            name, writer = stream, peer
            top = tops.get((stream, peer))
            if top is None:
                top = starts[stream, peer] = max(heads.get(stream, {}).get(peer, 0),
                                                 store.version_vector(stream).get(peer))
        if counter == top + 1:
            top = counter
    if name is not None:
        tops[name, writer] = top
    for (stream, writer), top in tops.items():
        if top > starts[stream, writer]:  # the run grew by these events
            heads.setdefault(stream, {})[writer] = top
    return {stream for stream, _ in tops}


def untrack_in_flight(events: Sequence[Event], unpersisted: dict[tuple[str, bytes], Event],
                      in_flight: InFlightDots) -> None:
    """Undo `track_in_flight` for events now durable (a natural key only if it still
    names this event: another copy of it may have gone in flight after it)."""
    drop, kept = in_flight.single.discard, unpersisted.get
    if type(events) is EnvelopeRun:
        in_flight.discard_run(events)
        # Its keys map to the run itself (`_track_run`; nothing replaces an entry in flight):
        # dropped in one C pass, any entry that is not the run put back.
        naturals = events.naturals()
        dropped = list(map(unpersisted.pop, naturals, repeat(None)))
        if not all(map(operator.is_, dropped, repeat(events))):
            unpersisted.update((n, e) for n, e in zip(naturals, dropped) if e is not None and e is not events)
        return
    for event in events:
        stream, dot = event.stream, event.dot
        drop((stream, dot.peer, dot.counter))
        if kept((stream, event.key)) is event:
            del unpersisted[stream, event.key]


def _track_run(run: EnvelopeRun, unpersisted: dict, in_flight: InFlightDots,
               heads: dict[str, dict[str, int]], store: EventStore) -> set[str]:
    """`track_in_flight` for a run none of whose keys or dots is in flight (`take_run`):
    each natural key maps to the run (`Node._note_conflict` finds its event there)."""
    unpersisted.update(zip(run.naturals(), repeat(run)))
    in_flight.add_run(run)
    stream, writer = run.stream, run.writer
    if run.first == max(heads.get(stream, {}).get(writer, 0), store.version_vector(stream).get(writer)) + 1:
        heads.setdefault(stream, {})[writer] = run.last
    return {stream}


def take_run(node: Node, run: EnvelopeRun, purpose: tuple) -> list[Effect] | None:
    """`Node.take_events` for a run none of whose events is held here (`unheld_run`) or in
    flight (its keys and dots, tested against the node's sets in C): the whole run is
    fresh and is persisted as it is. None when any may be: the caller then takes the
    run's events one by one (`sort_incoming`)."""
    unheld_run = getattr(node.store, "unheld_run", None)
    if unheld_run is None or not node.unpersisted.keys().isdisjoint(run.naturals()) \
            or not node._unpersisted_dots.isdisjoint_run(run) or not unheld_run(run):
        return None
    return node.persist(run, purpose)


def sort_incoming(node: Node, events: Sequence[Event]) -> tuple[list[Event], list[Event], list[Effect]]:
    """`Node.take_events`'s sorting of events from a peer: (fresh: new here, to persist;
    again: in flight here already; conflict journal effects). System streams and dots the
    store holds are skipped. An event the store certainly lacks (`unheld`) whose key is
    neither in flight nor earlier in the batch is fresh at once; any other takes every
    check (`Node._holds`, `Node._note_conflict`). A catch-up brings hundreds of thousands
    of the first kind: the exact checks cost ~5 us an event, this ~1."""
    unheld = getattr(node.store, "unheld", None)  # a store without it: every event checked
    plain = unheld(events) if unheld is not None else [False] * len(events)
    unpersisted, in_flight = node.unpersisted, node._unpersisted_dots
    fresh: list[Event] = []
    again: list[Event] = []  # in flight here already: re-persisted so the ack is honest
    effects: list[Effect] = []
    batch: dict[tuple[str, bytes], Event] = {}  # conflicts may sit in one batch too
    for event, new in zip(events, plain):
        stream, dot = event.stream, event.dot
        if stream.startswith(ids.SYSTEM_PREFIX):
            continue
        natural = (stream, event.key)
        if new and natural not in batch and natural not in unpersisted \
                and (stream, dot.peer, dot.counter) not in in_flight:
            batch[natural] = event
            fresh.append(event)
            continue
        if not new and node._holds(event):
            continue
        if (stream, dot.peer, dot.counter) in in_flight:
            again.append(event)
            continue
        previous = batch.get(natural)
        effects += node._note_conflict(event, previous)
        if previous is None or event.digest < previous.digest:
            batch[natural] = event
        fresh.append(event)
    return fresh, again, effects
