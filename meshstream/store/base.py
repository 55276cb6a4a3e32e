"""`IndexedStore`: the EventStore behaviour both stores share, over `index.StoreIndex`.

A subclass supplies where record bytes live: `_load_many(rids)` (events or CorruptRecord
errors, never raising for a bad record; `_load_envelopes` may skip the decoding),
`_locate(prepared)` (lay a prepared batch out), `write_prepared` and `_committed(prepared)`
(record locations). Everything else, the
natural-key rules, conflict resolution, version vectors, canonical order, cursors, shard
digests (kept by `shard_digests.ShardDigests`) and scrubbing, lives here once, so the two
stores cannot drift apart.

Conflict rules (see store/api.py): a batch is decided in `prepare_batch` against the index
plus the batch itself (two events of one key in one batch follow the same rules), and
applied unchanged by `commit_prepared`.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import blake3

from meshstream.clocks import EMPTY, Dot, VersionVector
from meshstream.envelope import Event
from meshstream.envelope_run import EnvelopeRun
from meshstream.errors import CorruptRecord, KeyConflict, LocalProtocolError
from meshstream.ids import SYSTEM_PREFIX
from meshstream.ordering import canonical_order
from meshstream.store.api import AppendResult
from meshstream.store.index import (CORRUPT, DEAD, HELD_STATES, LIVE, LOSER, NO_POSITION, StoreIndex,
                                    key_hash)
from meshstream.store.key_table import key_hashes
from meshstream.store.runs import prepare_run, run_is_new
from meshstream.store.shard_digests import ShardDigests

OP_EVENT, OP_DOT = 1, 2
CONFLICT_MODES = ("raise", "resolve")
# Key hashes `unheld` and `absent_keys` computed, kept for prepare_batch (a catch-up has ~6k
# events in flight); beyond, all are dropped (some never reach a batch: a simulated crash).
KEY_HASHES_KEPT_MAX = 1 << 14
_from_bytes = int.from_bytes
_blake3 = blake3.blake3


class Special:
    """How a record that is not a plain new event applies (rare: kept off the fast path)."""

    __slots__ = ("kind", "replaces", "replaces_position", "replaced_state", "previous")

    def __init__(self, kind: int, replaces: int | None = None, replaces_position: int = -1,
                 replaced_state: int = DEAD, previous: int = -1) -> None:
        self.kind = kind  # OP_EVENT, or OP_DOT for a loser's dot-only record
        self.replaces = replaces  # a rid this record supersedes, or None
        self.replaces_position = replaces_position  # or an earlier record of the same batch
        self.replaced_state = replaced_state
        self.previous = previous  # a corrupt record holding this dot, retired on commit


class Prepared:
    """A decided, encoded batch, as parallel lists: record i writes `events[i]` (an event
    record, or the dot of one when `special[i].kind` is OP_DOT) and becomes rid
    `first_rid + i` on commit. Only records that are not plain new events get a `special`
    entry, so the usual batch builds no per-event object beyond its list slots."""

    __slots__ = ("events", "hashes", "special", "results", "by_hash", "dots", "payload", "segment", "offset",
                 "lengths", "written", "first_rid")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.hashes: list[int] = []  # natural-key hash per record (0 for a dot-only record)
        self.special: dict[int, Special] = {}
        self.results: list[AppendResult] = []
        self.by_hash: dict[int, int] = {}  # key hash -> latest record of the batch holding a key with it
        self.dots: set[tuple[str, str, int]] | None = None  # (stream, peer, counter), built on first need
        self.payload: bytes | bytearray = b""
        self.segment = 0
        self.offset = 0
        self.lengths: list[int] = []  # record length per record, laid out back to back from `offset`
        self.written = False
        self.first_rid = -1

    def add(self, event: Event, hashed: int, special: Special | None = None) -> None:
        """Append a record decided off the fast path."""
        position = len(self.events)
        self.events.append(event)
        self.hashes.append(hashed)
        if special is not None:
            self.special[position] = special
        if special is None or special.kind == OP_EVENT:
            self.by_hash[hashed] = position
        if self.dots is not None:
            self.dots.add((event.stream, event.dot.peer, event.dot.counter))

    def holder(self, stream: str, key: bytes, hashed: int) -> int:
        """The position of the batch's latest event record with this natural key, or -1."""
        position = self.by_hash.get(hashed)
        if position is None:
            return -1
        events, special = self.events, self.special
        for position in range(position, -1, -1):  # the first try is the latest; others only on a collision
            event = events[position]
            kind = special[position].kind if position in special else OP_EVENT
            if kind == OP_EVENT and self.hashes[position] == hashed and event.key == key and event.stream == stream:
                return position
        return -1

    def has_dot(self, stream: str, dot: Dot) -> bool:
        if self.dots is None:
            self.dots = {(event.stream, event.dot.peer, event.dot.counter) for event in self.events}
        return (stream, dot.peer, dot.counter) in self.dots


class IndexedStore:
    """EventStore over a StoreIndex; subclasses store the bytes."""

    def __init__(self) -> None:
        self._index = StoreIndex()
        self._pending: Prepared | None = None
        self._corrupt: dict[int, CorruptRecord] = {}
        self._scrub_next = 0
        self._digests = ShardDigests()
        # natural key -> its key hash, from `unheld` and `absent_keys`, taken by prepare_batch
        self._key_hashes: dict[tuple[str, bytes], int] = {}

    # -- subclass hooks --
    def _load_many(self, rids: Sequence[int]) -> list[Event | CorruptRecord]:
        raise NotImplementedError

    def _check(self, rid: int) -> CorruptRecord | None:
        """Verify one record's bytes (any kind) without serving it."""
        raise NotImplementedError

    def _load_envelopes(self, rids: Sequence[int]) -> list[bytes | CorruptRecord]:
        """`_load_many`'s envelope bytes; a store that can skip decoding overrides it."""
        return [item.envelope if type(item) is Event else item for item in self._load_many(rids)]

    def _locate(self, prepared: Prepared) -> None:
        """Lay out and encode the batch (caller's thread)."""

    def _committed(self, prepared: Prepared) -> None:
        """Record where the batch's records are (caller's thread)."""

    def write_prepared(self, prepared: Any) -> None:
        raise NotImplementedError

    def _write_drops(self, streams: list[str]) -> list[Any]:
        """Make one drop record per stream durable (one fsync); return their locations."""
        raise NotImplementedError

    def _place_marker(self, rid: int, location: Any) -> None:
        """Record where the drop record `rid` is."""

    def _released(self, rids: list[int]) -> None:
        """The records `rids` are dropped: their bytes may be freed."""

    def close(self) -> None:
        self._pending = None

    # -- fetching --
    def _fetch_many(self, rids: Sequence[int]) -> list[Event]:
        """The events of LIVE `rids`, skipping (and recording) corrupt ones."""
        return self._sound(rids, self._load_many(rids), Event)

    def _sound(self, rids: Sequence[int], loaded: list[Any], kind: type) -> list[Any]:
        """`loaded` (one item per rid) without its CorruptRecords, each recorded."""
        if all(type(item) is kind for item in loaded):
            return loaded
        kept = []
        for rid, item in zip(rids, loaded):
            if isinstance(item, CorruptRecord):
                self._note_corrupt(rid, item)
            else:
                kept.append(item)
        return kept

    def _note_corrupt(self, rid: int, error: CorruptRecord) -> None:
        self._index.mark_corrupt(rid)
        self._corrupt[rid] = error

    def _lookup(self, stream: str, key: bytes, hashed: int) -> tuple[int | None, Event | None]:
        """(rid, event) of the holder of a natural key, (rid, None) if it is corrupt."""
        index = self._index
        sid = index.stream_ids.get(stream)
        if sid is None:
            return None, None
        corrupt = None
        for rid in index.keys.candidates(hashed):
            if index.rid_stream[rid] != sid:
                continue
            state = index.rid_state[rid]
            if state == LIVE:
                loaded = self._load_many([rid])[0]
                if isinstance(loaded, CorruptRecord):
                    self._note_corrupt(rid, loaded)
                    corrupt = rid
                elif loaded.key == key:
                    return rid, loaded
            elif state == CORRUPT:
                corrupt = rid
        return corrupt, None

    def _dot_holder(self, stream: str, dot: Dot) -> int:
        found = self._index.stream(stream)
        return -1 if found is None else self._index.rid_of_dot(found, dot)

    def unheld(self, events: Sequence[Event]) -> list[bool]:
        """For each event, True when this store certainly holds neither its dot nor any
        record of its natural key (`has_dot` and `get` would say False and None): the dot
        is beyond every counter held for its (stream, peer), and no key in the key index
        has its key's hash. False: it may (ask them). What a catch-up or an eager push
        brings is almost all of the first kind; one key hash each, kept for
        `prepare_batch` (the same events come back to it in a Persist). Always False for
        a system stream's events (the node keeps those apart: no hash is spent on them)."""
        index = self._index
        stream_ids, streams, key_known = index.stream_ids, index.streams, index.keys.contains
        table, mask = index.keys.hashes, index.keys.mask  # an empty first slot: unknown (KeyIndex.contains)
        kept, blake, from_bytes = self._key_hashes, _blake3, _from_bytes
        if len(kept) + len(events) > KEY_HASHES_KEPT_MAX:
            kept.clear()  # some never reached a batch (a node that crashed in the simulator)
        result: list[bool] = []
        name = peer = None
        prefix, held, system = b"", 0, False
        for event in events:
            dot = event.dot
            if event.stream != name or dot.peer != peer:  # a new (stream, peer) run
                name, peer = event.stream, dot.peer
                prefix = name.encode("utf-8") + b"\x00"
                sid = stream_ids.get(name)
                log = None if sid is None else streams[sid].logs.get(peer)
                held = log.counters[-1] if log is not None and log.counters else 0
                system = name.startswith(SYSTEM_PREFIX)
            if system:
                result.append(False)
                continue
            hashed = from_bytes(blake(prefix + event.key).digest(length=8), "little")  # index.key_hash
            new = dot.counter > held and not (table[(hashed or 1) & mask] and key_known(hashed))
            if new:
                kept[name, event.key] = hashed
            result.append(new)
        return result

    def unheld_run(self, run: EnvelopeRun) -> bool:
        """`unheld` for a whole run: True when no dot and no key of it is held (runs.py)."""
        return run_is_new(self._index, run)

    def absent_keys(self, stream: str, keys: Sequence[bytes]) -> list[bool]:
        """For each key, True when no record of the store has a natural key with its hash
        (`get(stream, key)` would say None); False: it may (ask `get`). A master checks
        each key of an append so; the hashes are kept for `prepare_batch`."""
        kept = self._key_hashes
        if len(kept) + len(keys) > KEY_HASHES_KEPT_MAX:
            kept.clear()
        hashes = key_hashes(stream, keys)
        result = self._index.keys.absent_each(hashes)
        for key, hashed, absent in zip(keys, hashes, result):
            if absent:  # it will be sequenced and come back in a batch; a duplicate will not
                kept[stream, key] = hashed
        return result

    def absent_key_hashes(self, stream: str, keys: Sequence[bytes]) -> tuple[list[int], list[bool]]:
        """(the keys' hashes, `absent_keys`' answers), none kept: a master's run carries them."""
        return (hashes := key_hashes(stream, keys)), self._index.keys.absent_each(hashes)

    # -- writing --
    def append_batch(self, events: Sequence[Event], *, on_conflict: str = "raise") -> list[AppendResult]:
        prepared = self.prepare_batch(events, on_conflict=on_conflict)
        self.write_prepared(prepared)
        return self.commit_prepared(prepared)

    def prepare_batch(self, events: Sequence[Event], *, on_conflict: str = "raise") -> Prepared:
        """Decide and encode a batch. Raises KeyConflict (raise mode), LocalProtocolError.

        The common case, a key and a dot nobody holds, is decided inline: the dot is
        beyond every counter its (stream, peer) holds here and earlier in the batch, and
        the key's hash is neither in the batch nor in the key index. Anything else goes
        through `_decide`, which checks exactly."""
        if on_conflict not in CONFLICT_MODES:
            raise LocalProtocolError(f"on_conflict must be one of {CONFLICT_MODES}, got {on_conflict!r}")
        if self._pending is not None and self._pending.written:
            raise LocalProtocolError("a prepared batch is written but not committed")
        prepared = Prepared()
        if type(events) is EnvelopeRun:  # decided as a whole when it is all new (runs.py)
            if prepare_run(self._index, events, prepared):
                self._locate(prepared)
                self._pending = prepared
                return prepared
            events = events.events()
        index = self._index
        stream_ids, streams, key_known = index.stream_ids, index.streams, index.keys.contains
        table, mask = index.keys.hashes, index.keys.mask  # an empty first slot: unknown (KeyIndex.contains)
        records, hashes, by_hash, results = prepared.events, prepared.hashes, prepared.by_hash, prepared.results
        stored, blake, from_bytes = AppendResult.STORED, _blake3, _from_bytes
        kept = self._key_hashes
        take = kept.pop if kept else None
        tops: dict[tuple[str, str], int] = {}  # (stream, peer) -> largest counter of the batch so far
        name = peer = None
        prefix, top, held = b"", 0, 0
        for event in events:
            if type(event) is not Event and not isinstance(event, Event):
                raise LocalProtocolError(f"append_batch takes Events, got {type(event).__name__}")
            dot = event.dot
            if event.stream != name or dot.peer != peer:  # a new (stream, peer) run
                if name is not None:
                    tops[name, peer] = top
                name, peer = event.stream, dot.peer
                prefix, top = name.encode("utf-8") + b"\x00", tops.get((name, peer), 0)
                sid = stream_ids.get(name)
                log = None if sid is None else streams[sid].logs.get(peer)
                held = log.counters[-1] if log is not None and log.counters else 0
            counter = dot.counter
            hashed = take((name, event.key), None) if take else None
            if hashed is None:
                hashed = from_bytes(blake(prefix + event.key).digest(length=8), "little")  # index.key_hash
            if counter > top and counter > held and hashed not in by_hash and not (
                    table[(hashed or 1) & mask] and key_known(hashed)):
                by_hash[hashed] = len(records)
                records.append(event)
                hashes.append(hashed)
                results.append(stored)
                if prepared.dots is not None:
                    prepared.dots.add((name, peer, counter))
                top = counter
            else:
                count = len(records)
                results.append(self._decide(event, on_conflict, prepared, hashed))
                if len(records) > count and counter > top:
                    top = counter
        self._locate(prepared)
        self._pending = prepared
        return prepared

    def _decide(self, event: Event, mode: str, batch: Prepared, hashed: int) -> AppendResult:
        """Decide one event exactly, adding its record (if any) to `batch`."""
        position = batch.holder(event.stream, event.key, hashed)
        if position >= 0:
            holder, holder_event = None, batch.events[position]
        else:
            holder, holder_event = self._lookup(event.stream, event.key, hashed)
        if holder is not None and holder_event is None:
            batch.add(event, hashed, Special(OP_EVENT, holder, -1, DEAD))
            return AppendResult.REPAIRED
        if holder_event is not None:
            if holder_event.digest == event.digest:
                return AppendResult.DUPLICATE
            if mode == "raise":
                raise KeyConflict(event.stream, event.key)
            if event.digest < holder_event.digest:
                batch.add(event, hashed, Special(OP_EVENT, holder, position, LOSER))
                return AppendResult.WON
            if self._dot_is_held(event, batch):
                return AppendResult.LOST
            batch.add(event, 0, Special(OP_DOT, previous=self._dot_holder(event.stream, event.dot)))
            return AppendResult.LOST
        holder_rid = self._dot_holder(event.stream, event.dot)
        state = self._index.rid_state[holder_rid] if holder_rid >= 0 else None
        if state in HELD_STATES or batch.has_dot(event.stream, event.dot):  # a peer's bug
            if mode == "raise":
                raise LocalProtocolError(f"dot {event.dot} already names another event in {event.stream!r}")
            return AppendResult.LOST
        if state == CORRUPT:
            batch.add(event, hashed, Special(OP_EVENT, previous=holder_rid))
            return AppendResult.REPAIRED
        batch.add(event, hashed)
        return AppendResult.STORED

    def _dot_is_held(self, event: Event, batch: Prepared) -> bool:
        if batch.has_dot(event.stream, event.dot):
            return True
        rid = self._dot_holder(event.stream, event.dot)
        return rid >= 0 and self._index.rid_state[rid] in HELD_STATES

    def commit_prepared(self, prepared: Any) -> list[AppendResult]:
        """Apply a written batch to the indexes (caller's thread)."""
        if prepared is not self._pending or not prepared.written:
            raise LocalProtocolError("commit_prepared needs the current batch, written")
        index, events, hashes = self._index, prepared.events, prepared.hashes
        first = prepared.first_rid = index.records()
        start = 0
        for position in sorted(prepared.special):  # runs of plain new events between specials
            if start < position:
                index.add_events(events[start:position], hashes[start:position])
            self._apply_special(events[position], hashes[position], prepared.special[position], first)
            start = position + 1
        if start < len(events):
            index.add_events(events[start:] if start else events, hashes[start:] if start else hashes)
        assert index.records() == first + len(events)
        self._committed(prepared)
        self._pending = None
        return prepared.results

    def _apply_special(self, event: Event, hashed: int, special: Special, first: int) -> None:
        index, previous = self._index, special.previous
        if special.kind == OP_EVENT:
            index.add_event(event, hashed)
        else:
            index.add_loser_dot(event.stream, event.dot)
        replaced = first + special.replaces_position if special.replaces_position >= 0 else special.replaces
        if replaced is not None:
            self._retire(replaced, special.replaced_state)
        if previous >= 0 and previous != replaced and index.rid_state[previous] == CORRUPT:
            self._retire(previous, DEAD)

    def _retire(self, rid: int, state: int) -> None:
        self._index.set_state(rid, state)
        if state == DEAD:
            self._corrupt.pop(rid, None)

    # -- dropping --
    def drop_streams(self, streams: Sequence[str]) -> bool:
        """Forget every event of `streams` (the peer no longer replicates them), durably.

        One drop record per stream is made durable first (one fsync), then the indexes
        forget: a crash before the fsync leaves the data, after it nothing, and a reopened
        store replays the drop. Events of a stream written later are kept. Returns False,
        doing nothing, while a prepared batch is on its way to disk (try again later).
        Raises LocalProtocolError for a system (`$`) stream or a non-string."""
        for name in streams:
            if not isinstance(name, str) or name.startswith(SYSTEM_PREFIX):
                raise LocalProtocolError(f"cannot drop stream {name!r}")
        if self._pending is not None:
            return False
        index = self._index
        names = [name for name in sorted(set(streams)) if (found := index.stream(name)) is not None and found.logs]
        if not names:
            return True
        locations = self._write_drops(names)
        for name, location in zip(names, locations):
            self._forget(name)
            self._place_marker(index.register_marker(), location)
        return True

    def _forget(self, name: str) -> None:
        """Apply a drop record of stream `name` to the indexes (live and on replay)."""
        sid = self._index.stream_ids[name]
        rids = self._index.drop_stream(name)
        for rid in [rid for rid in self._corrupt if self._index.rid_stream[rid] == sid]:
            del self._corrupt[rid]
        self._released(rids)

    # -- reading --
    def get(self, stream: str, key: bytes) -> Event | None:
        """The event with this natural key, or None. Raises CorruptRecord if it is corrupt."""
        rid, event = self._lookup(stream, key, key_hash(stream, key))
        if rid is not None and event is None:
            raise self._corrupt.get(rid) or CorruptRecord(f"record for key {key!r} in {stream!r} is corrupt")
        return event

    def get_dot(self, stream: str, dot: Dot) -> Event | None:
        rid = self._dot_holder(stream, dot)
        if rid < 0 or self._index.rid_state[rid] != LIVE:
            return None
        events = self._fetch_many([rid])
        return events[0] if events else None

    def has_dot(self, stream: str, dot: Dot) -> bool:
        rid = self._dot_holder(stream, dot)
        return rid >= 0 and self._index.rid_state[rid] in HELD_STATES

    def read(self, stream: str, cursor: VersionVector, limit: int) -> list[Event]:
        """Up to `limit` served events not in `cursor`, in canonical order."""
        _check_limit(limit)
        found = self._index.stream(stream)
        if found is None or limit == 0:
            return []
        if found.dirty:
            self._reorder(found)
        index = self._index
        seen = [cursor.get(peer, 0) for peer in index.peer_names]
        states, peers, counters = index.rid_state, index.rid_peer, index.rid_counter
        position, result, order = self._first_unseen(found, cursor), [], found.order
        while position < len(order) and len(result) < limit:
            # A slice of the order as long as what is still wanted, filtered in one
            # comprehension: the next round starts where this slice ended.
            chunk = order[position:position + limit - len(result)]
            position += len(chunk)
            wanted = [rid for rid in chunk if states[rid] == LIVE and counters[rid] > seen[peers[rid]]]
            result += self._fetch_many(wanted)
        return result

    def _first_unseen(self, stream, cursor: VersionVector) -> int:
        """The least order position of an event `cursor` lacks (chains keep positions rising)."""
        start = len(stream.order)
        for peer, log in stream.logs.items():
            at = bisect.bisect_right(log.counters, cursor.get(peer, 0))
            positions = log.positions
            while at < len(positions) and positions[at] == NO_POSITION:
                at += 1
            if at < len(positions) and positions[at] < start:
                start = positions[at]
        return start

    def _reorder(self, stream) -> None:
        rids = [rid for log in stream.logs.values() for rid in log.rids if self._index.rid_state[rid] == LIVE]
        by_digest = {}
        for rid, loaded in zip(rids, self._load_many(rids)):
            if isinstance(loaded, CorruptRecord):
                self._note_corrupt(rid, loaded)
            else:
                by_digest[loaded.digest] = (rid, loaded)
        ordered = canonical_order(event for _, event in by_digest.values())
        self._index.set_order(stream, [by_digest[event.digest][0] for event in ordered])

    def events_missing(self, stream: str, have: VersionVector, limit: int) -> list[Event]:
        """Up to `limit` served events whose dots `have` lacks, in (peer, counter) order."""
        return self._fetch_many(self._missing_rids(stream, have, limit))

    def envelopes_missing(self, stream: str, have: VersionVector, limit: int) -> list[bytes]:
        """The envelopes of `events_missing`, checked but not decoded (a partner's batch)."""
        rids = self._missing_rids(stream, have, limit)
        return self._sound(rids, self._load_envelopes(rids), bytes)

    def _missing_rids(self, stream: str, have: VersionVector, limit: int) -> list[int]:
        _check_limit(limit)
        found = self._index.stream(stream)
        if found is None or limit == 0:
            return []
        states, wanted = self._index.rid_state, []
        for peer in sorted(found.logs):
            log = found.logs[peer]
            at = bisect.bisect_right(log.counters, have.get(peer, 0))
            for rid in log.rids[at:]:
                if len(wanted) >= limit:
                    break
                if states[rid] == LIVE:
                    wanted.append(rid)
        return wanted

    def version_vector(self, stream: str) -> VersionVector:
        found = self._index.stream(stream)
        return EMPTY if found is None or not found.vector else found.version_vector()

    def streams(self) -> list[str]:
        return sorted(stream.name for stream in self._index.streams if stream.served or stream.vector)

    def event_count(self, stream: str) -> int:
        found = self._index.stream(stream)
        return 0 if found is None else found.served

    # -- anti-entropy digests --
    def shard_digest(self, shard: int, shards: int) -> bytes:
        """XOR of per-stream vector hashes of the shard's streams (shard_digests.py)."""
        return self._digests.digests(self._index, [shard], shards)[0]

    def shard_digests(self, shards: Sequence[int], total: int) -> list[bytes]:
        """`shard_digest` of each of `shards` (an anti-entropy round asks for every shard
        either peer holds: 256 with the CLI's default, 20 times a second)."""
        return self._digests.digests(self._index, shards, total)

    # -- corruption --
    def scrub(self, records_max: int) -> list[Any]:
        """Check up to `records_max` more held records (round robin); return new errors.

        Cheap per record (one hash, no decoding) and bounded by `records_max`, so the node
        can call it from its event loop with a small budget."""
        _check_limit(records_max)
        index, found = self._index, []
        total = index.records()
        states, wanted = index.rid_state, []
        for _ in range(min(records_max, total)):
            rid = self._scrub_next % total
            self._scrub_next = rid + 1
            if states[rid] in HELD_STATES:
                wanted.append(rid)
        for rid, error in zip(wanted, self._check_many(wanted)):
            if error is not None:
                self._note_corrupt(rid, error)
                found.append(error)
        return found

    def _check_many(self, rids: list[int]) -> list[CorruptRecord | None]:
        return [self._check(rid) for rid in rids]

    def corrupt_records(self) -> list[Any]:
        return [self._corrupt[rid] for rid in sorted(self._corrupt)]


def _check_limit(limit: object) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise LocalProtocolError(f"limit must be a non-negative integer, got {limit!r}")
