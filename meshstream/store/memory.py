"""`MemoryStore`: the EventStore the simulator uses; records live in a Python list.

It shares every rule with the segment log (`base.IndexedStore`); only the bytes' home
differs. Nothing here is durable: the simulator models fsync latency and crash loss itself.
`drop_streams` frees the dropped events at once. `damage(stream, key)` lets the simulator's disk model (and tests) corrupt a record; the
store then behaves exactly as the segment log does for a record that fails its digest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from meshstream.envelope import Event
from meshstream.errors import CorruptRecord
from meshstream.store.base import OP_EVENT, IndexedStore, Prepared
from meshstream.store.index import key_hash

MEMORY_SEGMENT = "memory"  # the `segment` named by a CorruptRecord from this store


class MemoryStore(IndexedStore):
    """An in-memory EventStore."""

    def __init__(self) -> None:
        super().__init__()
        self._records: list[Event | None] = []  # by rid; None for a dot-only record
        self._damaged: set[int] = set()

    def write_prepared(self, prepared: Any) -> None:
        """Nothing to write: memory is 'durable' as soon as the batch is committed."""
        assert isinstance(prepared, Prepared)
        prepared.written = True

    def _write_drops(self, streams: list[str]) -> list[Any]:
        return [None] * len(streams)

    def _place_marker(self, rid: int, location: Any) -> None:
        assert rid == len(self._records)
        self._records.append(None)

    def _released(self, rids: list[int]) -> None:
        records = self._records
        for rid in rids:
            records[rid] = None
            self._damaged.discard(rid)

    def _committed(self, prepared: Prepared) -> None:
        assert prepared.first_rid == len(self._records)
        self._records += prepared.events
        for position, how in prepared.special.items():
            if how.kind != OP_EVENT:
                self._records[prepared.first_rid + position] = None

    def _load_many(self, rids: Sequence[int]) -> list[Event | CorruptRecord]:
        return [self._corruption(rid) if rid in self._damaged else self._records[rid] for rid in rids]

    def _check(self, rid: int) -> CorruptRecord | None:
        return self._corruption(rid) if rid in self._damaged else None

    def _corruption(self, rid: int) -> CorruptRecord:
        return CorruptRecord(f"corrupt record {rid} in memory store", segment=MEMORY_SEGMENT, offset=rid)

    def damage(self, stream: str, key: bytes) -> bool:
        """Corrupt the stored record of a natural key (as a flipped bit would). True if found."""
        index = self._index
        sid = index.stream_ids.get(stream)
        for rid in index.keys.candidates(key_hash(stream, key)):
            record = self._records[rid]
            if index.rid_stream[rid] == sid and record is not None and record.key == key:
                self._damaged.add(rid)
                return True
        return False
