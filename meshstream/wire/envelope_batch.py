"""Checking and decoding a batch of event envelopes from a peer in one pass.

`decode_envelopes(envelopes)` returns exactly what `[decode_event(e) for e in envelopes]`
returns, and raises RemoteProtocolError for exactly the batches where that would raise: a
catch-up brings hundreds of thousands of envelopes, and `decode_event` spent ~7 us on each
(a CBOR decoder object and a byte stream built per body, every field re-validated by
generic helpers). Here, per batch:

- each envelope of the usual shape (`[body, digest]` with a definite-length body and a
  32-byte digest filling the rest) is split by slicing and its body hashed (BLAKE3) and
  compared with its digest; any other shape goes through `decode_event` itself;
- the bodies are decoded by ONE strict CBOR decoder (unknown tags rejected) reading them
  back to back; after each item the decoder must stand exactly at the end of that body, so
  a truncated body or trailing bytes are caught as `loads_strict` would catch them (the
  decoder's shared-value and string-reference state does not outlive an item: cbor2 >= 5.5);
- fields are checked inline with the rules of `envelope._decode_body`: a stream name, a peer
  name or a key seen earlier in the batch is not checked again (the same text passes the
  same test). An event with metadata (rare in bulk) goes through `decode_event`.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Sequence

import blake3
import cbor2

from meshstream import ids
from meshstream.clocks import COUNTER_MAX, VECTOR_PEERS_MAX, Dot, VersionVector
from meshstream.envelope import DATA_BYTES_HARD_MAX, DIGEST_BYTES, ENVELOPE_VERSION, Event, decode_event
from meshstream.envelope import make_dot_unchecked, make_event_unchecked
from meshstream.envelope_run import EnvelopeRun
from meshstream.errors import LocalProtocolError, RemoteProtocolError
from meshstream.wire.run_template import template_run

_blake3 = blake3.blake3
_new = object.__new__
_DIGEST_MARK = b"\x58\x20"  # a 32-byte byte string
_DECODE_ERRORS = (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError, MemoryError,
                  IndexError, KeyError, UnicodeDecodeError, EOFError)


def _reject_tag(decoder: object, tag: cbor2.CBORTag) -> object:
    raise RemoteProtocolError(f"CBOR tag {tag.tag} is not allowed")


def _split(envelope: bytes) -> tuple[int, int]:
    """(start, end) of the body of an envelope of the usual shape; (0, 0) otherwise."""
    if type(envelope) is not bytes or len(envelope) <= 36 or envelope[0] != 0x82:
        return 0, 0
    info = envelope[1]
    if info >> 5 != 2:
        return 0, 0
    length, start = info & 0x1F, 2
    if length == 24:
        length, start = envelope[2], 3
    elif length == 25:
        length, start = (envelope[2] << 8) | envelope[3], 4
    elif length == 26:
        length, start = int.from_bytes(envelope[2:6], "big"), 6
    elif length > 23:
        return 0, 0
    end = start + length
    if end + 2 + DIGEST_BYTES != len(envelope) or not envelope.startswith(_DIGEST_MARK, end):
        return 0, 0
    return start, end


def decode_envelopes(envelopes: Sequence[bytes]) -> list[Event]:
    """The events of `envelopes`, in order. Raises RemoteProtocolError if any is malformed,
    invalid or tampered (as `decode_event` would for it)."""
    bodies, digests, slow = _checked_bodies(envelopes)
    return _build(envelopes, digests, _decode_bodies(bodies, slow), slow)


def decode_run(envelopes: Sequence[bytes]) -> EnvelopeRun | list[Event]:
    """`decode_envelopes`, as an `EnvelopeRun` when the events form one (one writer's
    consecutive dots in one stream, no metadata, one-peer contexts: a catch-up batch or a
    master's push); the same checks, the same errors. A run as `seal_run` writes it is
    read by its template (run_template.py), with no CBOR decoder; anything else here."""
    run = template_run(envelopes)
    if run is not None:
        return run
    bodies, digests, slow = _checked_bodies(envelopes)
    fields = _decode_bodies(bodies, slow)
    run = _run_of(envelopes, digests, fields) if not slow and envelopes else None
    return run if run is not None else _build(envelopes, digests, fields, slow)


def _checked_bodies(envelopes: Sequence[bytes]) -> tuple[list[bytes], list[bytes], dict[int, Event]]:
    """(bodies, digests, slow): each usual envelope's body, its digest checked; an unusual
    one decoded by `decode_event` into `slow` (its body and digest left empty)."""
    bodies: list[bytes] = []
    digests: list[bytes] = []
    slow: dict[int, Event] = {}  # position -> event decoded by decode_event
    blake, split = _blake3, _split
    for position, envelope in enumerate(envelopes):
        # `_split` inline for the usual heads: a body of 24-255 bytes (0x58) or 256-65535 (0x59)
        head = envelope[1] if type(envelope) is bytes and len(envelope) > 36 and envelope[0] == 0x82 else 0
        if head == 0x58:
            start, end = 3, 3 + envelope[2]
        elif head == 0x59:
            start, end = 4, 4 + ((envelope[2] << 8) | envelope[3])
        else:
            start = end = 0
        if not (end and end + 2 + DIGEST_BYTES == len(envelope) and envelope.startswith(_DIGEST_MARK, end)):
            start, end = split(envelope)
        if not end:
            slow[position] = decode_event(envelope)
            bodies.append(b"")
            digests.append(b"")
            continue
        body = envelope[start:end]
        digest = blake(body).digest()
        if digest != envelope[end + 2:]:
            raise RemoteProtocolError("envelope digest does not match its body")
        bodies.append(body)
        digests.append(digest)
    return bodies, digests, slow


def _decode_bodies(bodies: list[bytes], slow: dict[int, Event]) -> list[list | None]:
    """Each body decoded by one strict decoder; None where `slow` already holds the event."""
    stream = io.BytesIO(b"".join(bodies))
    decode, tell = cbor2.CBORDecoder(stream, tag_hook=_reject_tag).decode, stream.tell
    decoded: list[list | None] = []
    append = decoded.append
    try:
        for position, boundary in enumerate(itertools.accumulate(map(len, bodies))):
            if slow and position in slow:
                append(None)
                continue
            append(decode())
            if tell() != boundary:
                raise RemoteProtocolError("malformed CBOR: an envelope body is not exactly one item")
    except RemoteProtocolError:
        raise
    except _DECODE_ERRORS as exc:
        raise RemoteProtocolError(f"malformed CBOR: {exc}") from None
    except Exception as exc:  # the C decoder has raised unexpected types on hostile input
        raise RemoteProtocolError(f"malformed CBOR: {type(exc).__name__}: {exc}") from None
    return decoded


def _run_of(envelopes: Sequence[bytes], digests: list[bytes], decoded: list) -> EnvelopeRun | None:
    """The run of decoded bodies, every field checked as `_build` checks it but column by
    column (a set of a column's types, its least and largest length or value: C loops),
    the stream name and each peer name once. None when the events are not a run, or
    anything is wrong (`_build` then decides event by event and raises the precise error)."""
    head = decoded[0]  # most batches that are not runs show it here ($topology gossip)
    if type(head) is not list or len(head) != 7 or type(head[1]) is not str or head[1].startswith(ids.SYSTEM_PREFIX):
        return None
    if set(map(type, decoded)) != {list} or set(map(len, decoded)) != {7}:
        return None
    versions, streams, keys, datas, metadatas, dots, contexts = zip(*decoded)
    if set(map(type, versions)) != {int} or set(map(type, streams)) != {str} or set(map(type, keys)) != {bytes} \
            or set(map(type, datas)) != {bytes} or set(map(type, metadatas)) != {dict}:
        return None  # (types first: a set of the values fails on an unhashable one)
    if len(set(streams)) != 1 or set(versions) != {ENVELOPE_VERSION} or any(metadatas):
        return None
    if min(map(len, keys)) < 1 or max(map(len, keys)) > ids.KEY_BYTES_MAX or max(map(len, datas)) > DATA_BYTES_HARD_MAX:
        return None
    if set(map(type, dots)) != {list} or set(map(len, dots)) != {2} or set(map(type, contexts)) != {list}:
        return None
    writers, counters = zip(*dots)
    if set(map(type, writers)) != {str} or len(set(writers)) != 1 or not _counts(counters) \
            or counters != tuple(range(counters[0], counters[0] + len(counters))):
        return None
    writer = writers[0]
    context = _run_context(contexts, writer)
    if context is None:
        return None
    try:
        _check_stream(streams[0])
        for name in [writer, *context[0]]:
            Dot.from_cbor([name, 1])  # the peer-name rule
    except RemoteProtocolError:
        return None
    return EnvelopeRun(streams[0], writer, counters[0], list(keys), list(datas), context[0], context[1], digests,
                       list(envelopes))


def _counts(column: tuple) -> bool:
    """Every value an int in 1..COUNTER_MAX (bool is not int here)."""
    return set(map(type, column)) == {int} and min(column) >= 1 and max(column) <= COUNTER_MAX


def _run_context(contexts: tuple, writer: str) -> tuple[dict[str, int], list[int]] | None:
    """(the other writers' entries, the writer's count per event) of a run's contexts:
    flat lists of one length naming the same peers, in ascending order with the writer
    among them, only the writer's count varying. None for anything else."""
    lengths = set(map(len, contexts))
    if len(lengths) != 1 or (size := lengths.pop()) < 2 or size & 1 or size > 2 * VECTOR_PEERS_MAX:
        return None
    columns = list(zip(*contexts))
    names = []
    for column in columns[0::2]:
        if set(map(type, column)) != {str} or len(set(column)) != 1:
            return None
        names.append(column[0])
    if names != sorted(set(names)) or writer not in names:
        return None
    base: dict[str, int] = {}
    for name, column in zip(names, columns[1::2]):
        if not _counts(column):
            return None
        if name == writer:
            writer_counts = list(column)
        elif len(set(column)) == 1:
            base[name] = column[0]
        else:
            return None
    return base, writer_counts


def _build(envelopes: Sequence[bytes], digests: list[bytes], decoded: list[list | None],
           slow: dict[int, Event]) -> list[Event]:
    """Events from decoded bodies, every field checked as `envelope._decode_body` does."""
    events: list[Event] = []
    streams: set[str] = set()  # names that passed validate_stream_name in this batch
    peers: set[str] = set()  # dot peers that passed the peer check
    known: set[tuple] = set()  # the peer names of context vectors that passed the vector check
    singles: set[str] = set()  # ... those of one peer (a stream with one writer), by name
    key_max, data_max, counter_max = ids.KEY_BYTES_MAX, DATA_BYTES_HARD_MAX, COUNTER_MAX
    append = events.append
    for position, fields in enumerate(decoded):
        if fields is None:
            append(slow[position])
            continue
        if type(fields) is not list or len(fields) != 7:
            raise RemoteProtocolError("an envelope body must have 7 fields")
        version, stream, key, data, metadata, dot, context = fields
        if metadata or type(metadata) is not dict:
            append(decode_event(envelopes[position]))  # metadata, or not a map: the full rules
            continue
        if version != ENVELOPE_VERSION or type(version) is not int:
            raise RemoteProtocolError(f"unsupported envelope version {version!r}")
        if type(data) is not bytes or len(data) > data_max:
            raise RemoteProtocolError("event data must be a byte string within the size limit")
        if type(stream) is not str or stream not in streams:
            _check_stream(stream)
            streams.add(stream)
        if type(key) is not bytes or not 1 <= len(key) <= key_max:
            _check_key(key)
        if type(dot) is not list or len(dot) != 2:
            raise RemoteProtocolError("a dot must be [peer, counter]")
        peer, counter = dot
        if type(peer) is not str or peer not in peers or type(counter) is not int or not 1 <= counter <= counter_max:
            Dot.from_cbor(dot)  # raises the precise error
            peers.add(peer)
        if type(context) is list and len(context) == 2 and type(context[0]) is str and context[0] in singles \
                and type(context[1]) is int and 1 <= context[1] <= counter_max:
            vector = _new(VersionVector)  # the usual context: one writer, its name checked before
            vector._counters = {context[0]: context[1]}
            vector._hash = None
        else:
            vector = _vector(context, known)
            if len(context) == 2:
                singles.add(context[0])
        append(make_event_unchecked(stream, key, data, (), make_dot_unchecked(peer, counter), vector,
                                    digests[position], envelopes[position]))
    return events


def _vector(context: object, known: set[tuple]) -> VersionVector:
    """`VersionVector.from_cbor(context)`, with the peer names (text, sorted, unique) checked
    once per batch for each list of names: a run of events shares one (~2.5 us an event)."""
    if type(context) is not list or len(context) & 1:
        return VersionVector.from_cbor(context)  # raises
    names = tuple(context[0::2])
    counts = context[1::2]
    try:
        seen = names in known
    except TypeError:  # an unhashable name: not text
        seen = False
    if not seen:
        vector = VersionVector.from_cbor(context)  # checks everything, or raises
        known.add(names)
        return vector
    for count in counts:
        if type(count) is not int or not 1 <= count <= COUNTER_MAX:
            return VersionVector.from_cbor(context)  # raises
    vector = _new(VersionVector)
    vector._counters = dict(zip(names, counts))
    vector._hash = None
    return vector


def _check_stream(stream: object) -> None:
    try:
        ids.validate_stream_name(stream, allow_system=True)
    except LocalProtocolError as exc:
        raise RemoteProtocolError(f"invalid event: {exc}") from None


def _check_key(key: object) -> None:
    try:
        ids.validate_key(key)
    except LocalProtocolError as exc:
        raise RemoteProtocolError(f"invalid event: {exc}") from None
