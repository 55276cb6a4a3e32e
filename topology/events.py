"""Topology facts: who joined, who is alive, suspect, failed or gone, who masters a shard.

Every fact is a frozen, slotted dataclass. Its canonical CBOR form is a flat array
`[fact_kind, field1, field2, ...]` (kinds are append-only numbers, like message kinds),
which `encode_fact` produces and `decode_fact` checks strictly: anything malformed raises
RemoteProtocolError, because the bytes came from a peer or from disk.

A fact travels as an event of the reserved stream `$topology` whose natural key is
`fact_key(fact)`: the first 16 bytes of BLAKE3 of its encoding. Two peers publishing the
same fact (say the same refutation `MemberAlive(p, 3)` relayed twice) therefore make one
event, and the store's natural-key rule deduplicates it everywhere.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Union

import blake3

from meshstream.cbor import dumps, loads_strict
from meshstream.clocks import Dot, VersionVector
from meshstream.envelope import Event
from meshstream.errors import LocalProtocolError, RemoteProtocolError
from meshstream.ids import TOPOLOGY_STREAM, validate_peer_name

FACT_KEY_BYTES = 16  # 128 bits: collisions are out of reach for any mesh's lifetime
COUNT_MAX = 2**63 - 1  # incarnations, epochs: int64-safe everywhere
SHARDS_MAX = 65536  # matches Config's bound
REPLICATION_FACTOR_MAX = 1024  # matches Config's bound (full replication of a 1000-peer mesh)
ADDRESS_CHARS_MAX = 300  # HOST:PORT with a long DNS name, or a simulator name
FACT_CACHE_ENTRIES_MAX = 1 << 16  # decoded facts kept: a 1000-peer mesh's topology, a few MiB


def _check_count(name: str, value: object, minimum: int = 0) -> None:
    if type(value) is not int or not minimum <= value <= COUNT_MAX:
        raise LocalProtocolError(f"{name} must be an integer {minimum}..2^63-1, got {value!r}")


@dataclass(frozen=True, slots=True)
class MeshConfigured:
    shards: int
    replication_factor: int

    def __post_init__(self) -> None:
        _check_count("shards", self.shards, 1)
        _check_count("replication_factor", self.replication_factor, 1)
        if self.shards > SHARDS_MAX or self.replication_factor > REPLICATION_FACTOR_MAX:
            raise LocalProtocolError(f"mesh shape out of bounds: {self.shards} shards, rf {self.replication_factor}")


@dataclass(frozen=True, slots=True)
class MemberJoined:
    peer: str
    address: str
    incarnation: int

    def __post_init__(self) -> None:
        validate_peer_name(self.peer)
        if not isinstance(self.address, str) or not 1 <= len(self.address) <= ADDRESS_CHARS_MAX:
            raise LocalProtocolError(f"address must be 1-{ADDRESS_CHARS_MAX} characters, got {self.address!r}")
        _check_count("incarnation", self.incarnation)


@dataclass(frozen=True, slots=True)
class MemberAlive:
    peer: str
    incarnation: int

    def __post_init__(self) -> None:
        validate_peer_name(self.peer)
        _check_count("incarnation", self.incarnation)


@dataclass(frozen=True, slots=True)
class MemberSuspect:
    peer: str
    incarnation: int
    by: str  # the peer whose probe failed: two witnesses make two facts, same verdict

    def __post_init__(self) -> None:
        validate_peer_name(self.peer)
        validate_peer_name(self.by)
        _check_count("incarnation", self.incarnation)


@dataclass(frozen=True, slots=True)
class MemberFailed:
    peer: str
    incarnation: int
    by: str

    def __post_init__(self) -> None:
        validate_peer_name(self.peer)
        validate_peer_name(self.by)
        _check_count("incarnation", self.incarnation)


@dataclass(frozen=True, slots=True)
class MemberLeft:
    peer: str
    incarnation: int

    def __post_init__(self) -> None:
        validate_peer_name(self.peer)
        _check_count("incarnation", self.incarnation)


@dataclass(frozen=True, slots=True)
class MasterElected:
    shard: int
    peer: str
    epoch: int

    def __post_init__(self) -> None:
        _check_count("shard", self.shard)
        if self.shard >= SHARDS_MAX:
            raise LocalProtocolError(f"shard must be below {SHARDS_MAX}, got {self.shard}")
        validate_peer_name(self.peer)
        _check_count("epoch", self.epoch, 1)


TopologyFact = Union[MeshConfigured, MemberJoined, MemberAlive, MemberSuspect, MemberFailed, MemberLeft, MasterElected]

# Append-only: a number is never reused for another meaning.
FACT_KINDS: dict[int, type] = {
    1: MeshConfigured,
    2: MemberJoined,
    3: MemberAlive,
    4: MemberSuspect,
    5: MemberFailed,
    6: MemberLeft,
    7: MasterElected,
}
_KIND_OF: dict[type, int] = {cls: kind for kind, cls in FACT_KINDS.items()}


def encode_fact(fact: TopologyFact) -> bytes:
    """The canonical CBOR bytes of a fact: `[kind, fields...]` (arrays have one encoding)."""
    kind = _KIND_OF.get(type(fact))
    if kind is None:
        raise LocalProtocolError(f"not a topology fact: {fact!r}")
    values: list[Any] = [kind]
    values.extend(getattr(fact, name) for name in fact.__slots__)  # type: ignore[union-attr]
    return dumps(values)


def decode_fact(data: bytes) -> TopologyFact:
    """Decode and validate a fact. Raises RemoteProtocolError on anything malformed."""
    value = loads_strict(data)
    if not isinstance(value, list) or not value or type(value[0]) is not int:
        raise RemoteProtocolError("a topology fact must be [kind, fields...]")
    cls = FACT_KINDS.get(value[0])
    if cls is None:
        raise RemoteProtocolError(f"unknown topology fact kind {value[0]}")
    fields = value[1:]
    if len(fields) != len(cls.__slots__):
        raise RemoteProtocolError(f"{cls.__name__} needs {len(cls.__slots__)} fields, got {len(fields)}")
    try:
        fact = cls(*fields)
    except (LocalProtocolError, TypeError, ValueError) as exc:
        raise RemoteProtocolError(f"invalid {cls.__name__}: {exc}") from None
    # Only the canonical encoding is accepted, so one fact has exactly one natural key.
    if encode_fact(fact) != bytes(data):
        raise RemoteProtocolError(f"{cls.__name__} is not canonically encoded")
    return fact


def fact_key(fact: TopologyFact) -> bytes:
    """The natural key of a fact in `$topology`: 16 bytes of BLAKE3 of its encoding."""
    return blake3.blake3(encode_fact(fact)).digest(length=FACT_KEY_BYTES)


def topology_event(fact: TopologyFact, dot: Dot, context: VersionVector) -> Event:
    """Seal a fact as a `$topology` event sequenced at `dot` with causal `context`."""
    return Event.sequence(TOPOLOGY_STREAM, fact_key(fact), encode_fact(fact), {}, dot, context)


def fact_of(event: Event) -> TopologyFact:
    """The fact a `$topology` event carries.

    Raises RemoteProtocolError if the event is of another stream, its data is not a fact,
    or its key is not the fact's natural key (a forged or corrupted event).
    """
    if event.stream != TOPOLOGY_STREAM:
        raise RemoteProtocolError(f"event of stream {event.stream!r} is not a topology event")
    return _checked_fact(event.key, event.data)


@functools.lru_cache(maxsize=FACT_CACHE_ENTRIES_MAX)
def _checked_fact(key: bytes, data: bytes) -> TopologyFact:
    # Pure, so memoized: every peer decodes the same few thousand topology events again and
    # again (gossip, anti-entropy, joins), and in the simulator 500 peers share one process.
    # Errors are not cached (lru_cache does not keep exceptions).
    fact = decode_fact(data)
    if key != fact_key(fact):
        raise RemoteProtocolError("topology event key does not match its fact")
    return fact
