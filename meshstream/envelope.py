"""Events and their envelope: canonical CBOR bytes sealed with a BLAKE3 digest.

An `Event` is one immutable fact in a stream: its natural key, data, metadata, the dot of
the peer that sequenced it and its causal context. On the wire and on disk it travels as an
*envelope*: the CBOR array `[body, digest]` where `body` is the canonical CBOR encoding of

    [ENVELOPE_VERSION, stream, key, data, metadata, dot, context]

and `digest` is BLAKE3-256 of `body`. Checking an envelope hashes `body` as received, with
no re-encoding. `decode_event` raises RemoteProtocolError for any envelope that is
malformed or whose digest does not match; the store turns that into CorruptRecord.

Metadata is a small map of text to text, integer or bytes, kept as a tuple of pairs in
canonical key order so that events are hashable and encode to one byte string.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Union

import blake3
import cbor2

from meshstream import ids
from meshstream.cbor import canonical_items, canonical_text_key, dumps, loads_strict
from meshstream.clocks import Dot, VersionVector
from meshstream.errors import LocalProtocolError, RemoteProtocolError

ENVELOPE_VERSION = 1
DIGEST_BYTES = 32
DATA_BYTES_HARD_MAX = 64 * 1024 * 1024  # decoder sanity ceiling; Config.event_bytes_max is the policy
METADATA_ENTRIES_HARD_MAX = 256
METADATA_VALUE_BYTES_HARD_MAX = 64 * 1024
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

MetadataValue = Union[str, int, bytes]
Metadata = tuple[tuple[str, MetadataValue], ...]


@dataclass(frozen=True, slots=True)
class Event:
    stream: str
    key: bytes
    data: bytes
    metadata: Metadata
    dot: Dot
    context: VersionVector
    digest: bytes
    envelope: bytes = field(repr=False, compare=False)

    @classmethod
    def sequence(
        cls,
        stream: str,
        key: bytes,
        data: bytes,
        metadata: Mapping[str, MetadataValue] | Metadata,
        dot: Dot,
        context: VersionVector,
    ) -> "Event":
        """Build and seal an event. Raises LocalProtocolError for invalid fields."""
        ids.validate_stream_name(stream, allow_system=True)
        ids.validate_key(key)
        if not isinstance(data, bytes) or len(data) > DATA_BYTES_HARD_MAX:
            raise LocalProtocolError("event data must be bytes within the size limit")
        pairs = normalize_metadata(metadata)
        body = dumps(
            [ENVELOPE_VERSION, stream, key, data, canonical_items(dict(pairs)), dot.to_cbor(), context.to_cbor()]
        )
        digest = blake3.blake3(body).digest()
        return cls(stream, key, data, pairs, dot, context, digest, dumps([body, digest]))

    @classmethod
    def seal(cls, stream: str, key: bytes, data: bytes, metadata: Metadata, dot: Dot,
             context: VersionVector) -> "Event":
        """`sequence` without the checks, for fields the caller has validated and metadata
        already normalized (a master's batch after `validate_append`): the same bytes."""
        body = _dumps([ENVELOPE_VERSION, stream, key, data, dict(metadata), dot.to_cbor(), context.to_cbor()])
        digest = _blake3(body).digest()
        return _make_event(stream, key, data, metadata, dot, context, digest, _envelope(body, digest))

    @classmethod
    def seal_run(cls, stream: str, writer: str, counter: int, context: VersionVector,
                 items: Sequence[tuple[bytes, bytes, Metadata]]) -> list["Event"]:
        """`seal` for a writer's run of new events in one stream, each in the context of
        the one before: the i-th item gets dot (writer, counter + i + 1) and `context`
        with the writer's entry set to the counter before it (left as it is for the first
        item when `counter` is 0). Items are (key, data, normalized metadata), validated
        by the caller. The same bytes as `seal`: the parts every event of the run shares
        (stream, writer, the other peers of the context) are encoded once, and each body
        is joined from them and the heads of its key, data and counters (a master seals
        every event it takes: the encoder cost ~3 us an event, this ~1 us)."""
        ordered = dict(context.items())
        if counter:
            ordered[writer] = counter
        ordered = {peer: ordered[peer] for peer in sorted(ordered)}
        start = b"\x87\x01" + _dumps(stream)  # [ENVELOPE_VERSION, stream, ...
        dot_start = b"\x82" + _dumps(writer)  # [writer, counter]
        held = ordered.get(writer)  # the writer's entry in the next event's context
        around = context_around(ordered, writer) if held is not None else (_dumps(_flatten(ordered)), b"")
        held_head = b"" if held is None else _head(0, held)
        events: list[Event] = []
        for key, data, metadata in items:
            counter += 1
            size, counter_head = len(data), _head(0, counter)
            body = b"".join((start, _BYTES_HEADS[len(key)] if len(key) < 256 else _head(0x40, len(key)), key,
                             _BYTES_HEADS[size] if size < 256 else _head(0x40, size), data,
                             _dumps(dict(metadata)) if metadata else b"\xa0", dot_start, counter_head,
                             around[0], held_head, around[1]))
            digest = _blake3(body).digest()
            size = len(body)
            envelope = b"".join((b"\x82\x59" + size.to_bytes(2, "big") if 0x100 <= size < 0x10000 else _envelope_head(size),
                                 body, _DIGEST_HEAD, digest))  # _envelope, inline for the usual size
            events.append(_make_event(stream, key, data, metadata, _make_dot(writer, counter),
                                      _make_vector(dict(ordered)), digest, envelope))
            if held is None:  # the writer's first event in this stream: it joins the context
                ordered[writer] = counter
                ordered = {peer: ordered[peer] for peer in sorted(ordered)}
                around = context_around(ordered, writer)
            ordered[writer] = held = counter
            held_head = counter_head  # the next event's context holds this event's counter
        return events

    @staticmethod
    def seal_run_envelopes(stream: str, writer: str, counter: int, context_base: Mapping[str, int],
                           keys: Sequence[bytes], datas: Sequence[bytes]) -> tuple[list[bytes], list[bytes]]:
        """(digests, envelopes) of the events `seal_run` would seal for items (key, data,
        no metadata) after a `counter` of at least 1, in a context of `context_base` (the
        other writers' entries) plus the writer's: the same bytes, built column by column
        with no `Event`, `Dot` or `VersionVector` (a master's usual batch is kept as an
        `EnvelopeRun`). Keys are 1..255 bytes (`ids.validate_key`)."""
        assert counter >= 1 and writer not in context_base
        ordered = {**context_base, writer: counter}
        before, after = context_around({peer: ordered[peer] for peer in sorted(ordered)}, writer)
        start, dot_start = b"\x87\x01" + _dumps(stream), b"\x82" + _dumps(writer)
        heads = count_heads(counter, counter + len(keys) + 1)  # heads[i]: event i's context, heads[i + 1]: its dot
        key_heads, data_heads = _BYTES_HEADS, [_BYTES_HEADS[n] if n < 256 else _head(0x40, n) for n in map(len, datas)]
        join = b"".join
        bodies = [join((start, key_heads[len(key)], key, data_head, data, b"\xa0", dot_start, dot_head, before,
                        held_head, after))
                  for key, data_head, data, dot_head, held_head in zip(keys, data_heads, datas, heads[1:], heads)]
        blake = _blake3
        digests = [blake(body).digest() for body in bodies]
        short, head = _ENVELOPE_HEADS, _envelope_head
        envelopes = [join((short[size] if size < 0x100 else b"\x82\x59" + size.to_bytes(2, "big") if size < 0x10000
                           else head(size), body, _DIGEST_HEAD, digest))
                     for size, body, digest in zip(map(len, bodies), bodies, digests)]
        return digests, envelopes

    def metadata_dict(self) -> dict[str, MetadataValue]:
        return dict(self.metadata)

    def same_content(self, other: "Event") -> bool:
        """True when both carry the same stream, key, data and metadata (dots may differ)."""
        return (self.stream, self.key, self.data, self.metadata) == (
            other.stream,
            other.key,
            other.data,
            other.metadata,
        )

    @property
    def natural_key(self) -> tuple[str, bytes]:
        return (self.stream, self.key)

    def size(self) -> int:
        return len(self.envelope)


def normalize_metadata(metadata: Mapping[str, MetadataValue] | Metadata) -> Metadata:
    """Validate metadata and return it as pairs in canonical key order.

    Raises LocalProtocolError for a non-text key, a value that is not text, int64 or bytes,
    or a map beyond the hard limits.
    """
    items = metadata.items() if isinstance(metadata, Mapping) else metadata
    result: dict[str, MetadataValue] = {}
    for pair in items:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise LocalProtocolError("metadata must be a map of text to text, integer or bytes")
        name, value = pair
        if not isinstance(name, str) or not 1 <= len(name) <= 128 or name in result:
            raise LocalProtocolError(f"metadata keys must be unique text of 1-128 characters: {name!r}")
        if isinstance(value, bool) or not isinstance(value, (str, int, bytes)):
            raise LocalProtocolError(f"metadata {name!r}: values must be text, integers or bytes")
        if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
            raise LocalProtocolError(f"metadata {name!r}: integers must fit in 64 bits")
        if isinstance(value, (str, bytes)) and len(value) > METADATA_VALUE_BYTES_HARD_MAX:
            raise LocalProtocolError(f"metadata {name!r}: value too long")
        result[name] = value
    if len(result) > METADATA_ENTRIES_HARD_MAX:
        raise LocalProtocolError(f"metadata has {len(result)} entries; at most {METADATA_ENTRIES_HARD_MAX}")
    return tuple((name, result[name]) for name in sorted(result, key=canonical_text_key))


def decode_event(envelope: bytes) -> Event:
    """Check and decode one envelope. Raises RemoteProtocolError if malformed or tampered."""
    body, digest = _split(envelope)
    if _blake3(body).digest() != digest:
        raise RemoteProtocolError("envelope digest does not match its body")
    return _decode_body(body, digest, bytes(envelope))


def _split(envelope: bytes) -> tuple[bytes, bytes]:
    """(body, digest) of an envelope `[body, digest]`. The usual shape (a definite-length
    byte string, then a 32-byte one filling the rest) is read by slicing, which yields
    exactly what the CBOR decoder would; anything else goes through the decoder."""
    if type(envelope) is bytes and len(envelope) > 36 and envelope[0] == 0x82 and envelope[1] >> 5 == 2:
        info = envelope[1] & 0x1F
        start = 2 + (0 if info < 24 else _LENGTH_BYTES.get(info, 9))
        if start <= 6:
            length = int.from_bytes(envelope[2:start], "big") if start > 2 else info
            end = start + length
            if end + 34 == len(envelope) and envelope[end] == 0x58 and envelope[end + 1] == 0x20:
                return envelope[start:end], envelope[end + 2:]
    outer = loads_strict(envelope)
    if not isinstance(outer, list) or len(outer) != 2:
        raise RemoteProtocolError("an envelope must be [body, digest]")
    body, digest = outer
    if not isinstance(body, bytes) or not isinstance(digest, bytes) or len(digest) != DIGEST_BYTES:
        raise RemoteProtocolError("an envelope must hold a byte-string body and a 32-byte digest")
    return body, digest


def _decode_body(body: bytes, digest: bytes, envelope: bytes) -> Event:
    fields = loads_strict(body)
    if not isinstance(fields, list) or len(fields) != 7:
        raise RemoteProtocolError("an envelope body must have 7 fields")
    version, stream, key, data, metadata, dot, context = fields
    if version != ENVELOPE_VERSION or type(version) is not int:
        raise RemoteProtocolError(f"unsupported envelope version {version!r}")
    if not isinstance(data, bytes) or len(data) > DATA_BYTES_HARD_MAX:
        raise RemoteProtocolError("event data must be a byte string within the size limit")
    if not isinstance(metadata, dict):
        raise RemoteProtocolError("event metadata must be a map")
    try:
        ids.validate_stream_name(stream, allow_system=True)
        ids.validate_key(key)
        pairs = normalize_metadata(tuple(metadata.items())) if metadata else ()
    except LocalProtocolError as exc:
        raise RemoteProtocolError(f"invalid event: {exc}") from None
    if metadata and list(metadata) != [name for name, _ in pairs]:
        raise RemoteProtocolError("event metadata keys are not in canonical order")
    return _make_event(stream, key, data, pairs, Dot.from_cbor(dot), VersionVector.from_cbor(context), digest,
                       envelope)


# -- building events fast ---------------------------------------------------------------
# A master seals, and a replica decodes, every event of every write: these helpers keep
# the per-event cost to the encoding and the hash. They build exactly what the public
# constructors would (checked once at import, `_fast_build_works`).

_dumps = cbor2.dumps  # maps are built in canonical order by the callers (see cbor.dumps)
_blake3 = blake3.blake3
_new = object.__new__
_LENGTH_BYTES = {24: 1, 25: 2, 26: 4}  # CBOR additional info -> length bytes (0-23: none)
_DIGEST_HEAD = b"\x58\x20"  # a 32-byte byte string


def _envelope(body: bytes, digest: bytes) -> bytes:
    """`dumps([body, digest])` without the encoder: the same bytes."""
    return b"".join((_envelope_head(len(body)), body, _DIGEST_HEAD, digest))


def _envelope_head(size: int) -> bytes:
    """The envelope's array head and its body's byte-string head."""
    if size < 24:
        head = bytes((0x82, 0x40 | size))
    elif size < 0x100:
        head = bytes((0x82, 0x58, size))
    elif size < 0x10000:
        head = b"\x82\x59" + size.to_bytes(2, "big")
    elif size < 0x100000000:
        head = b"\x82\x5a" + size.to_bytes(4, "big")
    else:
        head = b"\x82\x5b" + size.to_bytes(8, "big")
    return head


_ENVELOPE_HEADS = tuple(_envelope_head(size) for size in range(256))  # a body of 0-255 bytes (most events)
_BYTES_HEADS = tuple(bytes((0x40 | n,)) if n < 24 else bytes((0x58, n)) for n in range(256))


def _head(major: int, value: int) -> bytes:
    """The CBOR head of major type `major` (0x00 unsigned, 0x40 bytes...) with argument
    `value`, in its shortest form, as cbor2 writes it."""
    if value < 24:
        return bytes((major | value,))
    if value < 0x100:
        return bytes((major | 24, value))
    if value < 0x10000:
        return bytes((major | 25,)) + value.to_bytes(2, "big")
    if value < 0x100000000:
        return bytes((major | 26,)) + value.to_bytes(4, "big")
    return bytes((major | 27,)) + value.to_bytes(8, "big")


def count_heads(start: int, stop: int) -> list[bytes]:
    """`_head(0, n)` for each n in range(start, stop), one comprehension per head size."""
    heads: list[bytes] = []
    for low, high, head in ((0, 24, None), (24, 0x100, b"\x18"), (0x100, 0x10000, b"\x19"),
                            (0x10000, 0x100000000, b"\x1a"), (0x100000000, 1 << 64, b"\x1b")):
        span = range(max(start, low), min(stop, high))
        if not span:
            continue
        if head is None:
            heads += [bytes((n,)) for n in span]
        else:
            width = len(_head(0, low)) - 1
            heads += [head + n.to_bytes(width, "big") for n in span]
    return heads


def context_around(counters: dict[str, int], writer: str) -> tuple[bytes, bytes]:
    """The flat CBOR vector of `counters` (sorted, holding `writer`) in two parts: the
    bytes before the writer's counter and those after it."""
    flat = _flatten(counters)
    slot = flat.index(writer) + 1
    assert slot % 2 == 1, "peer names and counters alternate"
    return (_head(0x80, len(flat)) + b"".join([_dumps(value) for value in flat[:slot]]),
            b"".join([_dumps(value) for value in flat[slot + 1:]]))


def _flatten(counters: dict[str, int]) -> list:
    flat: list = []
    for peer, count in counters.items():
        flat += (peer, count)
    return flat


class _EventShell:
    __slots__ = Event.__slots__


class _DotShell:
    __slots__ = Dot.__slots__


def _make_event(stream, key, data, metadata, dot, context, digest, envelope) -> Event:
    # A frozen dataclass's __init__ sets each field through object.__setattr__; a plain
    # slotted shell of the same layout is filled directly and then becomes an Event.
    event = _EventShell()
    event.stream, event.key, event.data, event.metadata = stream, key, data, metadata
    event.dot, event.context, event.digest, event.envelope = dot, context, digest, envelope
    event.__class__ = Event
    return event


def _make_dot(peer: str, counter: int) -> Dot:
    dot = _DotShell()
    dot.peer, dot.counter = peer, counter
    dot.__class__ = Dot
    return dot


def _make_vector(counters: dict[str, int]) -> VersionVector:
    """A vector over `counters`, which must already be sorted by peer with positive counts
    (what VersionVector's constructor would make of them)."""
    vector = _new(VersionVector)
    vector._counters = counters
    vector._hash = None
    return vector


def _fast_build_works() -> bool:
    try:
        dot, context = _make_dot("p", 1), _make_vector({"p": 1})
        built = _make_event("s", b"k", b"d", (), dot, context, b"x", b"y")
        return (type(built) is Event and type(dot) is Dot and dot == Dot("p", 1) and context == VersionVector({"p": 1})
                and built == Event("s", b"k", b"d", (), Dot("p", 1), VersionVector({"p": 1}), b"x", b""))
    except TypeError:
        return False


if not _fast_build_works():  # another interpreter: the ordinary constructors
    _make_event = Event  # type: ignore[assignment]  # noqa: F811
    _make_dot = Dot  # type: ignore[assignment]  # noqa: F811

FAST_BUILD = _make_event is not Event  # the shells work on this interpreter
# For callers that hold fields already validated (the store's read path builds events from
# records whose digest it has just checked): no validation, no sealing.
make_event_unchecked = _make_event
make_dot_unchecked = _make_dot
EventShell, DotShell = _EventShell, _DotShell  # for loops that inline the fill (gate on FAST_BUILD)
