"""The in-memory indexes of a store, kept compact: about 70 bytes an event.

Every record a store holds gets a record id (`rid`, 0, 1, 2, ... in append order). Per rid
the index keeps, in flat arrays: its stream, its dot (peer id and counter), its state and
the 64-bit hash of its natural key. On top of that:

- `KeyIndex` (key_table.py): natural key hash -> rids, an open-addressing table in two
  flat arrays (a dict of Python ints would cost about 110 bytes an entry; this costs 12-24).
- `PeerLog` per (stream, peer): the counters held, their rids and their positions in
  the stream's canonical order, sorted by counter, so a cursor finds its first unseen
  event by bisection instead of scanning the stream from the start.
- `StreamIndex` per stream: the canonical order as an array of rids, its contiguous
  version vector, and the largest served counter per peer. An event whose context covers
  every served event simply goes last (the single-master case); anything else marks the
  order dirty, and the store recomputes it with `canonical_order` on the next read.

States: LIVE (served), LOSER (a conflict loser: its dot counts as seen, never served),
CORRUPT (failed its digest: out of the vector until repaired) and DEAD (superseded by a
repair or a duplicate copy, or its stream dropped). This module does no I/O; `base.IndexedStore` drives it.
"""

from __future__ import annotations

import bisect
import itertools
import operator
import sys
from array import array

from meshstream.clocks import Dot, VersionVector
from meshstream.envelope import Event
from meshstream.envelope_run import EnvelopeRun
from meshstream.store.key_table import KeyIndex, key_hash  # noqa: F401 (key_hash: re-exported)

LIVE, LOSER, CORRUPT, DEAD = 0, 1, 2, 3
HELD_STATES = (LIVE, LOSER)
NO_POSITION = 0xFFFFFFFF
NO_STREAM = 0xFFFFFFFF
VECTOR_KEPT_PEERS_MIN = 4  # a data stream has a writer or two: its vector is rebuilt, not kept
_new = object.__new__
_dot_of = operator.attrgetter("dot")
_peer_of = operator.attrgetter("peer")
_counter_of = operator.attrgetter("counter")
_stream_of = operator.attrgetter("stream")
_context_counters_of = operator.attrgetter("context._counters")


class PeerLog:
    """The dots one peer sequenced in one stream: counters, rids, order positions."""

    __slots__ = ("counters", "rids", "positions")

    def __init__(self) -> None:
        self.counters = array("Q")
        self.rids = array("I")
        self.positions = array("I")

    def index_of(self, counter: int) -> int:
        counters = self.counters
        if not counters or counter > counters[-1]:
            return -1  # the common case: a new dot beyond every held one
        if counters[-1] == counter:
            return len(counters) - 1
        position = bisect.bisect_left(counters, counter)
        return position if position < len(counters) and counters[position] == counter else -1

    def insert(self, counter: int, rid: int, position: int) -> None:
        counters = self.counters
        if not counters or counter > counters[-1]:
            counters.append(counter)
            self.rids.append(rid)
            self.positions.append(position)
            return
        at = bisect.bisect_left(counters, counter)
        counters.insert(at, counter)
        self.rids.insert(at, rid)
        self.positions.insert(at, position)


class StreamIndex:
    """One stream: canonical order (rids), per-peer logs, contiguous vector, counts."""

    __slots__ = ("name", "sid", "order", "dirty", "logs", "vector", "served_max", "served", "_vector_built")

    def __init__(self, name: str, sid: int) -> None:
        self.name = name
        self.sid = sid
        self.order = array("I")
        self.dirty = False
        self.logs: dict[str, PeerLog] = {}
        self.vector: dict[str, int] = {}
        self.served_max: dict[str, int] = {}
        self.served = 0
        self._vector_built: tuple[dict[str, int], VersionVector] | None = None  # see version_vector

    def covers_all(self, context: VersionVector) -> bool:
        """True when `context` names every served event: a new event then goes last."""
        get = context.get
        for peer, counter in self.served_max.items():
            if get(peer, 0) < counter:
                return False
        return True

    def version_vector(self) -> VersionVector:
        # A vector of many writers (`$topology` of a large mesh) is asked for on every
        # persist and sorting it anew cost a 500-peer simulation seconds. A copy of the dict
        # it was built from tells, in one C comparison, that it is still right, whichever
        # path changed `vector` meanwhile. When counters rose and writers were only added,
        # the writers already sorted are reused, the new ones inserted (no sort; all
        # positive, as the constructor would keep them).
        built, counters = self._vector_built, self.vector
        if built is not None and built[0] == counters:
            return built[1]
        if (built is not None and len(built[1]) == len(built[0]) and built[0].keys() <= counters.keys()
                and min(counters.values()) > 0):
            writers = list(built[1])
            for writer in sorted(counters.keys() - built[0].keys()):
                bisect.insort(writers, writer)
            vector = _new(VersionVector)
            vector._counters = dict(zip(writers, map(counters.__getitem__, writers)))  # noqa: SLF001
            vector._hash = None  # noqa: SLF001
        else:
            vector = VersionVector(counters)
        if len(counters) >= VECTOR_KEPT_PEERS_MIN:
            self._vector_built = (dict(counters), vector)
        return vector

    def describe(self) -> list:
        """The stream's small fields (the arrays go in `sections`)."""
        return [self.name, self.dirty, sorted(self.vector.items()), sorted(self.served_max.items()), self.served,
                sorted(self.logs)]

    def sections(self) -> list:
        found = [self.order]
        for peer in sorted(self.logs):
            log = self.logs[peer]
            found += [log.counters, log.rids, log.positions]
        return found

    @classmethod
    def from_snapshot(cls, sid: int, value: list, take) -> "StreamIndex":
        name, dirty, vector, served_max, served, peers = value
        stream = cls(name, sid)
        stream.order = take("I")
        stream.dirty = bool(dirty)
        for peer in peers:
            log = stream.logs[peer] = PeerLog()
            log.counters, log.rids, log.positions = take("Q"), take("I"), take("I")
            if not len(log.counters) == len(log.rids) == len(log.positions):
                raise ValueError("snapshot peer log arrays disagree in length")
        stream.vector = dict(vector)
        stream.served_max = dict(served_max)
        stream.served = served
        return stream


class StoreIndex:
    """Every index of one store, and the transitions that keep them consistent."""

    def __init__(self) -> None:
        self.streams: list[StreamIndex] = []
        self.stream_ids: dict[str, int] = {}
        self.peer_names: list[str] = []
        self.peer_ids: dict[str, int] = {}
        self.rid_stream = array("I")
        self.rid_peer = array("I")
        self.rid_counter = array("Q")
        self.rid_state = bytearray()
        self.keys = KeyIndex()
        self.changed_streams: set[int] = set()  # vectors changed since the last shard digest

    # -- lookups --
    def stream(self, name: str) -> StreamIndex | None:
        sid = self.stream_ids.get(name)
        return None if sid is None else self.streams[sid]

    def records(self) -> int:
        return len(self.rid_state)

    def dot_of(self, rid: int) -> Dot:
        return Dot(self.peer_names[self.rid_peer[rid]], self.rid_counter[rid])

    def rid_of_dot(self, stream: StreamIndex, dot: Dot) -> int:
        """The rid holding `dot` in `stream` (in any state), or -1."""
        log = stream.logs.get(dot.peer)
        if log is None:
            return -1
        index = log.index_of(dot.counter)
        return -1 if index < 0 else log.rids[index]

    # -- registering records --
    def _stream_for(self, name: str) -> StreamIndex:
        sid = self.stream_ids.get(name)
        if sid is None:
            sid = self.stream_ids[name] = len(self.streams)
            self.streams.append(StreamIndex(name, sid))
        return self.streams[sid]

    def _peer_id(self, peer: str) -> int:
        pid = self.peer_ids.get(peer)
        if pid is None:
            pid = self.peer_ids[peer] = len(self.peer_names)
            self.peer_names.append(peer)
        return pid

    def _register(self, sid: int, dot: Dot, state: int) -> int:
        rid = len(self.rid_state)
        self.rid_stream.append(sid)
        self.rid_peer.append(self._peer_id(dot.peer))
        self.rid_counter.append(dot.counter)
        self.rid_state.append(state)
        return rid

    def register_unknown(self) -> int:
        """A rid for a record too damaged to say what it was (found by a full scan)."""
        rid = len(self.rid_state)
        self.rid_stream.append(NO_STREAM)
        self.rid_peer.append(0)
        self.rid_counter.append(0)
        self.rid_state.append(CORRUPT)
        return rid

    def register_marker(self) -> int:
        """A rid for a record holding no event (a drop record): never served or scrubbed."""
        rid = self.register_unknown()
        self.rid_state[rid] = DEAD
        return rid

    def drop_stream(self, name: str) -> list[int]:
        """Forget every record of stream `name` (DEAD) and start it afresh; return the rids
        that held its dots. Their keys stay in the key table, skipped by state."""
        stream = self.stream(name)
        if stream is None:
            return []
        rids = [rid for log in stream.logs.values() for rid in log.rids]
        states = self.rid_state
        for rid in rids:
            states[rid] = DEAD
        self.streams[stream.sid] = StreamIndex(name, stream.sid)
        self.changed_streams.add(stream.sid)
        return rids

    def register_dead(self, stream_name: str, dot: Dot) -> int:
        """A rid for a record that adds nothing (a duplicate copy of a held dot)."""
        return self._register(self._stream_for(stream_name).sid, dot, DEAD)

    def add_event(self, event: Event, hashed: int) -> int:
        """Register a new LIVE event record; returns its rid."""
        stream = self._stream_for(event.stream)
        dot = event.dot
        rid = self._register(stream.sid, dot, LIVE)
        self.keys.add(hashed, rid)
        stream.served += 1
        if stream.served_max.get(dot.peer, 0) < dot.counter:
            goes_last = not stream.dirty and stream.covers_all(event.context)
            stream.served_max[dot.peer] = dot.counter
        else:
            goes_last = False
        self._place(stream, dot, rid, goes_last)
        return rid

    def add_events(self, events: list[Event], hashes: list[int]) -> int:
        """`add_event` for each of `events` (none of whose keys or dots is held here);
        returns the first rid. Each stream's run (a group commit may take `$topology` events
        with the data) of one peer's consecutive counters beyond its log (a master's batch,
        an `EnvelopeRun`) is registered with bulk array extends; anything else event by
        event (`_add_each`)."""
        if type(events) is EnvelopeRun:
            return self._add_run(events, hashes)
        first, streams = len(self.rid_state), list(map(_stream_of, events))
        cuts = [at for at in range(1, len(events)) if streams[at] != streams[at - 1]] if streams.count(
            streams[0] if streams else None) != len(streams) else []
        for start, end in zip([0] + cuts, cuts + [len(events)]):
            self._add_run(events[start:end], hashes[start:end])  # one stream
        return first

    def _add_run(self, events: list[Event], hashes: list[int]) -> int:
        count = len(events)
        if not count:
            return len(self.rid_state)
        if type(events) is EnvelopeRun:  # one peer's consecutive counters, no Event built
            dots, peer, counters, name = None, events.writer, list(events.counters()), events.stream
        else:
            dots = list(map(_dot_of, events))
            peer, counters, name = dots[0].peer, list(map(_counter_of, dots)), events[0].stream
        stream = self.stream(name)
        log = None if stream is None else stream.logs.get(peer)
        if (counters[-1] - counters[0] != count - 1 or (log is not None and log.counters and log.counters[-1] >= counters[0])
                or (dots is not None and list(map(_peer_of, dots)).count(peer) != count)
                or counters != list(range(counters[0], counters[-1] + 1))):
            return self._add_each(list(events), hashes)
        stream = stream or self._stream_for(name)
        first = len(self.rid_state)
        self.rid_stream.extend(array("I", [stream.sid]) * count)
        self.rid_peer.extend(array("I", [self._peer_id(peer)]) * count)
        self.rid_counter.extend(counters)
        self.rid_state.extend(bytes(count))  # LIVE
        self.keys.add_many(hashes, first)
        stream.served += count
        last = self._goes_last_count(stream, peer, events, counters)
        if log is None:
            log = stream.logs[peer] = PeerLog()
        if last:
            extended = not log.counters
            held = stream.vector.get(peer, 0)
            contiguous = counters[0] == held + 1 and (extended or log.counters[-1] == held)
            rids = range(first, first + last)
            log.counters.extend(counters[:last])
            log.rids.extend(rids)
            log.positions.extend(range(len(stream.order), len(stream.order) + last))
            stream.order.extend(rids)
            if contiguous:
                stream.vector[peer] = counters[last - 1]
                self.changed_streams.add(stream.sid)
            else:
                self._advance_vector(stream, peer, log)
        stream.served_max[peer] = counters[-1]
        for position in range(last, count):  # after one that does not go last, none does
            self._place(stream, events[position].dot, first + position, False)
        return first

    def _goes_last_count(self, stream: StreamIndex, peer: str, events: list[Event], counters: list[int]) -> int:
        """How many of a run of `peer`'s new events go last in the canonical order: each
        whose context covers every served event (`covers_all`), until one does not."""
        if stream.dirty:
            return 0
        served_max = stream.served_max
        top = served_max.get(peer, 0)
        others = [(other, seen) for other, seen in served_max.items() if other != peer]
        if type(events) is EnvelopeRun and events.writer_counts == [top] + counters[:-1] \
                and all(events.context_base.get(other, 0) >= seen for other, seen in others):
            return len(events)  # the single-master case, read off the run's columns
        contexts = list(map(_context_counters_of, events))
        if not others and list(map(dict.get, contexts, itertools.repeat(peer), itertools.repeat(0))) == \
                [top] + counters[:-1]:
            return len(events)  # the single-master case: each context is the one before it
        for position, context in enumerate(contexts):
            if context.get(peer, 0) < top:
                return position
            for other, seen in others:
                if context.get(other, 0) < seen:
                    return position
            top = counters[position]
        return len(events)

    def _add_each(self, events: list[Event], hashes: list[int]) -> int:
        """`add_events` one event at a time (mixed streams or peers, gaps, reordering).
        The usual case (the next dot of its peer) is inlined; anything else goes through
        `_place`."""
        first = rid = len(self.rid_state)
        stream_ids, streams, peer_ids = self.stream_ids, self.streams, self.peer_ids
        states, keys = self.rid_state, self.keys
        add_sid, add_pid, add_counter = self.rid_stream.append, self.rid_peer.append, self.rid_counter.append
        for event, hashed in zip(events, hashes):
            dot = event.dot
            peer, counter = dot.peer, dot.counter
            sid = stream_ids.get(event.stream)
            stream = self._stream_for(event.stream) if sid is None else streams[sid]
            pid = peer_ids.get(peer)
            add_sid(stream.sid)
            add_pid(self._peer_id(peer) if pid is None else pid)
            add_counter(counter)
            states.append(LIVE)
            keys.add(hashed, rid)
            stream.served += 1
            served_max = stream.served_max
            goes_last = False
            if served_max.get(peer, 0) < counter:
                if not stream.dirty:  # StreamIndex.covers_all, inlined
                    context, goes_last = event.context._counters, True
                    for other, seen in served_max.items():
                        if context.get(other, 0) < seen:
                            goes_last = False
                            break
                served_max[peer] = counter
            log = stream.logs.get(peer)
            if log is None or not goes_last or (log.counters and log.counters[-1] >= counter):
                self._place(stream, dot, rid, goes_last)
            else:  # goes last and is the peer's newest dot: append everywhere
                counters = log.counters
                counters.append(counter)
                log.rids.append(rid)
                log.positions.append(len(stream.order))
                stream.order.append(rid)
                vector = stream.vector
                held = vector.get(peer, 0)
                if counter == held + 1 and (len(counters) == 1 or counters[-2] == held):
                    vector[peer] = counter
                    self.changed_streams.add(stream.sid)
                else:
                    self._advance_vector(stream, peer, log)
            rid += 1
        return first

    def add_loser_dot(self, stream_name: str, dot: Dot) -> int:
        """Register a dot-only record (a conflict loser's dot); returns its rid."""
        stream = self._stream_for(stream_name)
        rid = self._register(stream.sid, dot, LOSER)
        self._place(stream, dot, rid, False)
        return rid

    def _place(self, stream: StreamIndex, dot: Dot, rid: int, goes_last: bool) -> None:
        """Put `rid` in the peer log (over a corrupt or dead holder of the same dot)."""
        log = stream.logs.get(dot.peer)
        if log is None:
            log = stream.logs[dot.peer] = PeerLog()
        live = self.rid_state[rid] == LIVE
        index = log.index_of(dot.counter)
        if index >= 0:  # a repair: take over the old holder's place in the order if it had one
            position = log.positions[index]
            log.rids[index] = rid
            if live and position != NO_POSITION and not stream.dirty:
                stream.order[position] = rid
            else:
                log.positions[index] = NO_POSITION
                stream.dirty = stream.dirty or live
        elif live and goes_last:
            log.insert(dot.counter, rid, len(stream.order))
            stream.order.append(rid)
        else:
            log.insert(dot.counter, rid, NO_POSITION)
            stream.dirty = stream.dirty or live
        self._advance_vector(stream, dot.peer, log)

    def _advance_vector(self, stream: StreamIndex, peer: str, log: PeerLog) -> None:
        held = stream.vector.get(peer, 0)
        if log.counters[-1] == held + 1 and self.rid_state[log.rids[-1]] in HELD_STATES:
            if len(log.counters) == 1 or log.counters[-2] == held:  # the next dot, appended last
                stream.vector[peer] = held + 1
                self.changed_streams.add(stream.sid)
                return
        start = log.index_of(held + 1)
        if start < 0:
            return
        counters, rids, states = log.counters, log.rids, self.rid_state
        index = start
        while index < len(counters) and counters[index] == held + 1 and states[rids[index]] in HELD_STATES:
            held += 1
            index += 1
        stream.vector[peer] = held
        self.changed_streams.add(stream.sid)

    # -- state changes --
    def set_state(self, rid: int, state: int) -> None:
        """Move a record to `state`, keeping served counts, order and vectors right."""
        old = self.rid_state[rid]
        if old == state:
            return
        self.rid_state[rid] = state
        sid = self.rid_stream[rid]
        if sid == NO_STREAM:
            return
        stream = self.streams[sid]
        if old == LIVE:
            stream.served -= 1
        peer, counter = self.peer_names[self.rid_peer[rid]], self.rid_counter[rid]
        log = stream.logs.get(peer)
        index = -1 if log is None else log.index_of(counter)
        if index < 0 or log.rids[index] != rid:
            return  # superseded: another record holds this dot now
        if old == LIVE and state != CORRUPT and log.positions[index] != NO_POSITION:
            stream.dirty = True  # leaves the order (a corrupt record keeps its place: reads skip it)
        if old in HELD_STATES and state not in HELD_STATES and counter <= stream.vector.get(peer, 0):
            if counter > 1:
                stream.vector[peer] = counter - 1
            else:
                del stream.vector[peer]
            self.changed_streams.add(sid)

    def mark_corrupt(self, rid: int) -> None:
        """A record failed its digest: stop serving it; its dot becomes a gap."""
        if self.rid_state[rid] in HELD_STATES:
            self.set_state(rid, CORRUPT)

    def set_order(self, stream: StreamIndex, rids: list[int]) -> None:
        """Install a freshly computed canonical order (of LIVE rids)."""
        stream.order = array("I", rids)
        positions = {rid: position for position, rid in enumerate(rids)}
        for log in stream.logs.values():
            log.positions = array("I", (positions.get(rid, NO_POSITION) for rid in log.rids))
        stream.dirty = False

    # -- snapshot --
    def snapshot(self) -> tuple[dict, list]:
        """(small fields, arrays): written raw by the store, read back by `from_snapshot`."""
        described = {"byteorder": sys.byteorder, "peers": self.peer_names,
                     "streams": [stream.describe() for stream in self.streams]}
        sections = [self.rid_stream, self.rid_peer, self.rid_counter, self.rid_state, *self.keys.sections()]
        for stream in self.streams:
            sections += stream.sections()
        return described, sections

    @classmethod
    def from_snapshot(cls, value: dict, take) -> "StoreIndex":
        """Rebuild from `snapshot` output; `take(typecode)` returns the next array.
        Raises ValueError/KeyError/TypeError if malformed."""
        if value["byteorder"] != sys.byteorder:
            raise ValueError("snapshot written on another byte order")
        index = cls()
        index.peer_names = list(value["peers"])
        index.peer_ids = {peer: pid for pid, peer in enumerate(index.peer_names)}
        index.rid_stream, index.rid_peer, index.rid_counter = take("I"), take("I"), take("Q")
        index.rid_state = take("y")
        index.keys = KeyIndex.from_sections(take)
        index.streams = [StreamIndex.from_snapshot(sid, item, take) for sid, item in enumerate(value["streams"])]
        index.stream_ids = {stream.name: stream.sid for stream in index.streams}
        records = len(index.rid_state)
        if not len(index.rid_stream) == len(index.rid_peer) == len(index.rid_counter) == records:
            raise ValueError("snapshot arrays disagree in length")
        index.changed_streams = set(range(len(index.streams)))
        return index
