"""The natural-key table of a store's index: a stable 64-bit hash per natural key
(`key_hash`) and `KeyIndex`, hash -> rids in two flat arrays (see the class)."""

from __future__ import annotations

import itertools
from array import array
from collections import deque
from collections.abc import Sequence

import blake3

from meshstream import hashing

KEY_TABLE_SLOTS_MIN = 1 << 10  # a small store (the simulator runs hundreds) stays small
RECENT_ADDS_KEPT = 64  # adds remembered for `added_since` (a catch-up has 2 batches in flight)
_blake3 = blake3.blake3
_from_bytes = int.from_bytes


def key_hash(stream: str, key: bytes) -> int:
    """A stable 64-bit hash of a natural key (stable across processes, for snapshots)."""
    return _from_bytes(_blake3(stream.encode("utf-8") + b"\x00" + key).digest(length=8), "little")


def key_hashes(stream: str, keys: Sequence[bytes]) -> list[int]:
    """`key_hash` of each of `keys` in `stream` (an append, a run), through one hasher."""
    prefix = stream.encode("utf-8") + b"\x00"
    return list(map(_from_bytes, hashing.digests(map(prefix.__add__, keys), 8), itertools.repeat("little")))


class KeyIndex:
    """Natural key hash -> rids, as an open-addressing table (linear probing) in two flat
    arrays: a slot holds a hash (0 = empty; a hash of 0 is stored as 1) and its rid.

    Why not sorted buckets: a bisection over an array of 64-bit ints makes a Python int per
    probe and misses the cache on every one; at 1M keys that cost about 1 us a lookup and
    more an insert, so a full replay slowed per record as the store grew. Here a lookup
    touches one or two slots. Equal hashes are possible (and stored side by side in the
    probe run): callers check the key. Keys are never removed (a dead record's entry is
    skipped by its state), so probing needs no tombstones. The table doubles at 70% load.

    `added` counts the calls of `add` and `add_many`, and the hashes of the last
    RECENT_ADDS_KEPT are kept: `added_since(mark)` lets a caller that found keys absent at
    `mark` re-check them against what came since, with C set operations instead of probing
    (a catch-up's run is checked when it arrives and again when its batch is written).
    """

    __slots__ = ("hashes", "rids", "mask", "count", "added", "recent")

    def __init__(self, slots: int = KEY_TABLE_SLOTS_MIN) -> None:
        self.hashes = array("Q", bytes(8 * slots))
        self.rids = array("I", bytes(4 * slots))
        self.mask = slots - 1
        self.count = 0
        self.added = 0
        self.recent: deque[tuple[int, tuple[int, ...]]] = deque(maxlen=RECENT_ADDS_KEPT)

    def _reserve(self, more: int) -> None:
        slots = self.mask + 1
        if (self.count + more) * 10 <= slots * 7:
            return
        while (self.count + more) * 10 > slots * 7:
            slots *= 2
        old_hashes, old_rids = self.hashes, self.rids
        self.hashes, self.rids = array("Q", bytes(8 * slots)), array("I", bytes(4 * slots))
        self.mask, self.count = slots - 1, 0
        # Streamed from the old arrays: a list of the hashes would cost ~70 bytes an entry at the peak.
        self._insert(itertools.compress(old_hashes, old_hashes), itertools.compress(old_rids, old_hashes))

    def _insert(self, hashes, rids) -> None:
        table, table_rids, mask, count = self.hashes, self.rids, self.mask, 0
        for hashed, rid in zip(hashes, rids):
            hashed = hashed or 1
            slot = hashed & mask
            while table[slot]:
                slot = (slot + 1) & mask
            table[slot] = hashed
            table_rids[slot] = rid
            count += 1
        self.count += count

    def add(self, hashed: int, rid: int) -> None:
        self._reserve(1)
        self._insert((hashed,), (rid,))
        self._note((hashed,))

    def add_many(self, hashes: list[int], first: int) -> None:
        """`add(hashes[i], first + i)` for each i."""
        self._reserve(len(hashes))
        self._insert(hashes, range(first, first + len(hashes)))
        self._note(tuple(hashes))

    def _note(self, hashes: tuple[int, ...]) -> None:
        self.added += 1
        self.recent.append((self.added, hashes))

    def added_since(self, mark: int) -> list[int] | None:
        """The hashes added after `added` was `mark`; None when some of them are no
        longer kept (the caller then probes the table)."""
        if mark == self.added:
            return []
        if mark > self.added or not self.recent or self.recent[0][0] > mark + 1:
            return None
        return [hashed for number, hashes in self.recent if number > mark for hashed in hashes]

    def contains(self, hashed: int) -> bool:
        hashed = hashed or 1
        table, mask = self.hashes, self.mask
        slot = hashed & mask
        while True:
            found = table[slot]
            if found == hashed:
                return True
            if not found:
                return False
            slot = (slot + 1) & mask

    def absent_each(self, hashes: list[int]) -> list[bool]:
        """`[not self.contains(h) for h in hashes]`, in one loop (an append's keys)."""
        table, mask, result = self.hashes, self.mask, []
        append = result.append
        for hashed in hashes:
            hashed = hashed or 1
            slot = hashed & mask
            found = table[slot]
            while found and found != hashed:
                slot = (slot + 1) & mask
                found = table[slot]
            append(not found)
        return result

    def contains_any(self, hashes: list[int]) -> bool:
        """`any(self.contains(h) for h in hashes)` (a run's keys)."""
        return not all(self.absent_each(hashes))

    def candidates(self, hashed: int) -> list[int]:
        hashed = hashed or 1
        table, mask, found = self.hashes, self.mask, []
        slot = hashed & mask
        while table[slot]:
            if table[slot] == hashed:
                found.append(self.rids[slot])
            slot = (slot + 1) & mask
        return found

    def sections(self) -> list:
        return [self.hashes, self.rids]

    @classmethod
    def from_sections(cls, take) -> "KeyIndex":
        index = cls(1)
        index.hashes, index.rids = take("Q"), take("I")
        slots = len(index.hashes)
        if slots < 1 or slots & (slots - 1) or len(index.rids) != slots:
            raise ValueError("snapshot key table has a bad shape")
        index.mask, index.count = slots - 1, slots - index.hashes.count(0)
        if index.count * 10 > slots * 7 + 10:
            raise ValueError("snapshot key table is overfull")
        return index
