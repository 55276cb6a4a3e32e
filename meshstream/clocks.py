"""Dots and version vectors: the causal bookkeeping of every stream.

A `Dot(peer, counter)` names one event: the peer that sequenced it and that peer's counter
for the stream (1, 2, 3, ...). A `VersionVector` maps peers to counters and stands for the
set of dots {(p, 1..vv[p])}. Event `a` happened before `b` iff `a.dot in b.context`.

Both are immutable and hashable. Their CBOR form is compact: a dot is `[peer, counter]`,
a version vector a flat list `[peer1, counter1, peer2, counter2, ...]` sorted by peer.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from meshstream.errors import RemoteProtocolError

COUNTER_MAX = 2**63 - 1  # counters are CBOR uint64-safe and fit SQL/struct int64
PEER_CHARS_MAX = 64  # a clock peer is 1-64 characters
VECTOR_PEERS_MAX = 4096  # a vector names at most this many peers (the mesh tops out near 1000)


class Order(enum.Enum):
    EQUAL = "equal"
    BEFORE = "before"
    AFTER = "after"
    CONCURRENT = "concurrent"


@dataclass(frozen=True, slots=True, order=True)
class Dot:
    peer: str
    counter: int

    def to_cbor(self) -> list[Any]:
        return [self.peer, self.counter]

    @classmethod
    def from_cbor(cls, value: object) -> "Dot":
        """Raise RemoteProtocolError unless value is [peer: str, counter: 1..COUNTER_MAX]."""
        if not isinstance(value, list) or len(value) != 2:
            raise RemoteProtocolError("a dot must be [peer, counter]")
        peer, counter = value
        _check_entry(peer, counter)
        return cls(peer, counter)


def _check_entry(peer: object, counter: object) -> None:
    if not isinstance(peer, str) or not 1 <= len(peer) <= PEER_CHARS_MAX:
        raise RemoteProtocolError(f"clock peer must be 1-64 characters of text, got {peer!r}")
    if type(counter) is not int or not 1 <= counter <= COUNTER_MAX:
        raise RemoteProtocolError(f"clock counter must be 1..2^63-1, got {counter!r}")


class VersionVector(Mapping[str, int]):
    """An immutable map peer -> counter; absent peers count as 0."""

    __slots__ = ("_counters", "_hash")

    def __init__(self, counters: Mapping[str, int] | Iterable[tuple[str, int]] = ()) -> None:
        if type(counters) is dict:
            # The usual case, a plain dict (a store's or topology log's vector of ~N peers):
            # sorting the keys alone and dropping non-positive counts only when there are
            # any is ~2.5x cheaper than sorting (peer, count) pairs through a filter.
            peers = sorted(counters)
            ordered = dict(zip(peers, map(counters.__getitem__, peers)))
            if ordered and min(ordered.values()) <= 0:
                ordered = {peer: count for peer, count in ordered.items() if count > 0}
            self._counters: dict[str, int] = ordered
        else:
            items = counters.items() if isinstance(counters, Mapping) else counters
            self._counters = {peer: count for peer, count in sorted(items) if count > 0}
        self._hash: int | None = None

    # -- Mapping --
    def __getitem__(self, peer: str) -> int:
        return self._counters[peer]

    def __iter__(self) -> Iterator[str]:
        return iter(self._counters)

    def __len__(self) -> int:
        return len(self._counters)

    def get(self, peer: str, default: int = 0) -> int:  # type: ignore[override]
        return self._counters.get(peer, default)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, VersionVector):
            return self._counters == other._counters
        return NotImplemented

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(self._counters.items()))
        return self._hash

    def __repr__(self) -> str:
        inner = ", ".join(f"{peer}:{count}" for peer, count in self._counters.items())
        return f"VV({inner})"

    # -- causality --
    def contains(self, dot: Dot) -> bool:
        """True when the event named by `dot` is in the set this vector stands for."""
        return dot.counter <= self._counters.get(dot.peer, 0)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, Dot):
            return self.contains(item)
        return item in self._counters

    def increment(self, peer: str) -> tuple["VersionVector", Dot]:
        """The next dot of `peer`, and this vector with it added."""
        dot = Dot(peer, self._counters.get(peer, 0) + 1)
        return self.with_dot(dot), dot

    def with_dot(self, dot: Dot) -> "VersionVector":
        """This vector raised so that it contains `dot`."""
        if self.contains(dot):
            return self
        counters = dict(self._counters)
        counters[dot.peer] = dot.counter
        return VersionVector(counters)

    def merge(self, other: Mapping[str, int]) -> "VersionVector":
        """The pointwise maximum (the least upper bound)."""
        counters = dict(self._counters)
        for peer, count in other.items():
            if count > counters.get(peer, 0):
                counters[peer] = count
        return VersionVector(counters)

    def dominates(self, other: Mapping[str, int]) -> bool:
        """True when self >= other pointwise."""
        return all(self._counters.get(peer, 0) >= count for peer, count in other.items())

    def compare(self, other: "VersionVector") -> Order:
        ge = self.dominates(other)
        le = other.dominates(self)
        if ge and le:
            return Order.EQUAL
        if le:
            return Order.BEFORE
        if ge:
            return Order.AFTER
        return Order.CONCURRENT

    def total(self) -> int:
        """How many dots the vector stands for."""
        return sum(self._counters.values())

    # -- CBOR --
    def to_cbor(self) -> list[Any]:
        return list(itertools.chain.from_iterable(self._counters.items()))

    @classmethod
    def from_cbor(cls, value: object) -> "VersionVector":
        """Raise RemoteProtocolError unless value is a flat, peer-sorted [peer, counter, ...]."""
        if not isinstance(value, list) or len(value) % 2 or len(value) > 2 * VECTOR_PEERS_MAX:
            raise RemoteProtocolError("a version vector must be a flat list [peer, counter, ...]")
        peers, counts = value[0::2], value[1::2]
        counters = dict(zip(peers, counts)) if _plain_entries(peers, counts) else {}
        if len(counters) != len(peers):  # a bad entry, or a peer twice
            counters = _checked_entries(value)  # raises the error of the first bad one
        vector = cls.__new__(cls)
        vector._counters = counters
        vector._hash = None
        return vector


def vector_of_sorted(counters: dict[str, int]) -> VersionVector:
    """A vector over `counters`, which the caller already holds sorted by peer with every
    count positive (what the constructor would make of them). Not checked: for callers that
    keep a vector of ~N writers in order and would otherwise sort it on every build."""
    vector = VersionVector.__new__(VersionVector)
    vector._counters = counters  # noqa: SLF001
    vector._hash = None  # noqa: SLF001
    return vector


def _plain_entries(peers: list[Any], counts: list[Any]) -> bool:
    """True when every peer is 1-64 characters of text, in ascending order, and every
    count an int in 1..COUNTER_MAX. Each test is one pass in C: a `$topology` vector
    names every peer of the mesh and arrives in every anti-entropy pull of it, so
    checking it entry by entry in Python cost a 500-peer simulation seconds."""
    if not peers:
        return True
    return (set(map(type, peers)) == _STR and set(map(type, counts)) == _INT
            and min(counts) >= 1 and max(counts) <= COUNTER_MAX
            and "" not in peers and max(map(len, peers)) <= PEER_CHARS_MAX
            and peers == sorted(peers))


_STR, _INT = {str}, {int}


def _checked_entries(value: list[Any]) -> dict[str, int]:
    """The entries of a flat vector checked one by one in order; raises
    RemoteProtocolError for the first bad one (`_plain_entries` only says whether all pass)."""
    counters: dict[str, int] = {}
    previous = None
    for index in range(0, len(value), 2):
        peer, count = value[index], value[index + 1]
        _check_entry(peer, count)
        if previous is not None and peer <= previous:
            raise RemoteProtocolError("version vector peers must be sorted and unique")
        previous = peer
        counters[peer] = count
    return counters


EMPTY = VersionVector()
