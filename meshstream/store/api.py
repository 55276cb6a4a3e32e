"""The `EventStore` seam that the node reads and the drivers write.

Two implementations pass one contract suite (tests/test_store_contract.py): `MemoryStore`
(the simulator's; the simulator models fsync and crash loss itself) and `SegmentStore`
(the default on disk: append-only segments, BLAKE3 per record, group commit).

Natural keys: a store never serves two events with one `(stream, key)`.
- `on_conflict="raise"` (a client's write): an existing key with a different digest raises
  KeyConflict and nothing in the batch is written.
- `on_conflict="resolve"` (replication, merges after a partition): the event with the
  smaller digest wins everywhere; the loser's dot is still recorded as seen (so version
  vectors agree and anti-entropy settles) but the loser is never served.

Version vectors are contiguous: `version_vector(stream)[p] = c` means this store holds
(or has seen, for conflict losers) every dot (p, 1..c). Dots beyond a gap are stored and
served but do not raise the vector until the gap is filled. A record found corrupt is
dropped from the vector (its dot becomes a gap) so anti-entropy fetches it again.

Two-phase writes for drivers that fsync off their event loop: `prepare_batch` (caller's
thread; validation and encoding), `write_prepared` (any thread; file I/O and fsync only,
touches no index), `commit_prepared` (caller's thread; indexes). At most one prepared batch
exists at a time. `append_batch` runs the three in order.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any, Protocol

from meshstream.clocks import Dot, VersionVector
from meshstream.envelope import Event


class AppendResult(enum.Enum):
    STORED = "stored"  # new, now durable
    DUPLICATE = "duplicate"  # the same event (same digest) was already here
    WON = "won"  # replaced a conflicting event with a larger digest
    LOST = "lost"  # a conflicting event with a smaller digest is kept; only the dot is recorded
    REPAIRED = "repaired"  # replaced a record that was found corrupt


class EventStore(Protocol):
    def append_batch(self, events: Sequence[Event], *, on_conflict: str = "raise") -> list[AppendResult]:
        """Make `events` durable with one fsync. Raises KeyConflict (on_conflict="raise")."""

    def prepare_batch(self, events: Sequence[Event], *, on_conflict: str = "raise") -> Any: ...

    def write_prepared(self, prepared: Any) -> None: ...

    def commit_prepared(self, prepared: Any) -> list[AppendResult]: ...

    def get(self, stream: str, key: bytes) -> Event | None:
        """The event with this natural key, or None. Raises CorruptRecord if it is corrupt."""

    def get_dot(self, stream: str, dot: Dot) -> Event | None:
        """The served event with this dot, or None (also None for a conflict loser)."""

    def has_dot(self, stream: str, dot: Dot) -> bool:
        """True when the dot is held or recorded as a conflict loser (not when corrupt)."""

    def read(self, stream: str, cursor: VersionVector, limit: int) -> list[Event]:
        """Up to `limit` served events not in `cursor`, in canonical order. Corrupt records
        are skipped (reported through `corrupt_records`), never returned."""

    def events_missing(self, stream: str, have: VersionVector, limit: int) -> list[Event]:
        """Up to `limit` served events whose dots `have` lacks, in (peer, counter) order:
        what a partner with vector `have` is missing. Skips corrupt records."""

    def envelopes_missing(self, stream: str, have: VersionVector, limit: int) -> list[bytes]:
        """The envelopes of `events_missing`, digest-checked but not decoded."""

    def version_vector(self, stream: str) -> VersionVector: ...

    def streams(self) -> list[str]:
        """Every stream with at least one event, sorted."""

    def event_count(self, stream: str) -> int: ...

    def shard_digest(self, shard: int, shards: int) -> bytes:
        """16 bytes summarising the version vectors of the shard's streams (not `$` streams):
        equal digests mean equal vectors. Cheap: maintained incrementally."""

    def shard_digests(self, shards: Sequence[int], total: int) -> list[bytes]:
        """`shard_digest` of each of `shards`, in one call."""

    def scrub(self, records_max: int) -> list[Any]:
        """Check up to `records_max` more records (round robin), returning CorruptRecord
        errors for the bad ones, which are then dropped from the indexes."""

    def corrupt_records(self) -> list[Any]:
        """CorruptRecord errors found so far and not yet repaired."""

    def drop_streams(self, streams: Sequence[str]) -> bool:
        """Forget every event of `streams` durably (the peer no longer replicates them): a
        crash leaves all of a stream's events or none, a reopen never brings them back, and
        events of a stream written later are kept. False (nothing done) while a prepared
        batch is on its way to disk. Raises LocalProtocolError for a `$` stream."""

    def close(self) -> None: ...
