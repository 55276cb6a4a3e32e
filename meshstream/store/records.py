"""The on-disk record format of the segment log, and scanning a segment's bytes.

A record is a 24-byte header then a body:

    magic (4 bytes) | body length (u32, little-endian) | BLAKE3-128 of the body (16 bytes)

Two magics name the two kinds: `MSE1` (the body is an event envelope, `Event.envelope`)
and `MSD1` (a "dot-only" record, CBOR `[stream, peer, counter]`: the dot of a conflict
loser, kept so a reopened store has the same version vectors). The header digest lets a
scan or a scrub check a record without decoding it; reads check the envelope's own
digest (`decode_fast`), which covers the same bytes that matter.

`scan_segment` walks a segment and yields every record, resynchronising on the next magic
after a damaged one, so one flipped byte costs one record, never the rest of the file. A
damaged record with nothing valid after it that runs past the end of the data (or is a
zero-filled tail) is a *torn tail*, left by a crash mid-write: the caller truncates it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import blake3
import cbor2

from meshstream.clocks import Dot, VersionVector
from meshstream.envelope import DIGEST_BYTES, Event
from meshstream.errors import CorruptRecord

EVENT_MAGIC = b"MSE1"
DOT_MAGIC = b"MSD1"
KIND_EVENT = 1
KIND_DOT = 2
HEADER = struct.Struct("<4sI16s")
HEADER_BYTES = HEADER.size
RECORD_DIGEST_BYTES = 16
RECORD_BODY_BYTES_MAX = 80 * 1024 * 1024  # above the envelope's 64 MiB data ceiling
TORN = "torn"  # Scanned.error of a torn tail
PAST_END = "length runs past the end of the data"
_MAGICS = {EVENT_MAGIC: KIND_EVENT, DOT_MAGIC: KIND_DOT}
_blake3 = blake3.blake3
_loads = cbor2.loads
_dumps = cbor2.dumps


def record_digest(body: bytes | memoryview) -> bytes:
    return _blake3(body).digest(length=RECORD_DIGEST_BYTES)


def encode_event_record(event: Event) -> bytes:
    """Header and envelope of one event, ready to append."""
    body = event.envelope
    return HEADER.pack(EVENT_MAGIC, len(body), record_digest(body)) + body


def encode_dot_record(stream: str, dot: Dot) -> bytes:
    """A dot-only record: `dot` of `stream` has been seen (a conflict loser)."""
    body = _dumps([stream, dot.peer, dot.counter])
    return HEADER.pack(DOT_MAGIC, len(body), record_digest(body)) + body


def decode_dot_body(body: bytes) -> tuple[str, Dot]:
    """Raise ValueError unless body is a well-formed dot-only record body."""
    value = _loads(body)
    if not isinstance(value, list) or len(value) != 3:
        raise ValueError("a dot record must be [stream, peer, counter]")
    stream, peer, counter = value
    if not isinstance(stream, str) or not isinstance(peer, str) or type(counter) is not int or counter < 1:
        raise ValueError("a dot record must be [stream, peer, counter]")
    return stream, Dot(peer, counter)


# -- reading events fast --------------------------------------------------------------------
# decode_event re-validates every field (about 9.5 us an event). A record we wrote was a
# valid Event when written, so a read only has to prove the bytes are unchanged: the
# envelope digest over the body, then a plain decode (about 3 us). Anything odd is corrupt.

_EVENT_SLOTS = [Event.__dict__[name].__set__ for name in (
    "stream", "key", "data", "metadata", "dot", "context", "digest", "envelope")]
_DOT_PEER = Dot.__dict__["peer"].__set__
_DOT_COUNTER = Dot.__dict__["counter"].__set__
_new = object.__new__


def _split_envelope(envelope: bytes) -> tuple[memoryview, bytes]:
    """The body and digest of an envelope `[body, digest]`, without copying the body."""
    view = memoryview(envelope)
    info = envelope[1]
    if envelope[0] != 0x82 or info >> 5 != 2:
        raise ValueError("not an envelope")
    size, start = info & 0x1F, 2
    if size == 24:
        size, start = envelope[2], 3
    elif size == 25:
        size, start = int.from_bytes(envelope[2:4], "big"), 4
    elif size == 26:
        size, start = int.from_bytes(envelope[2:6], "big"), 6
    elif size > 23:
        raise ValueError("envelope body too large")
    end = start + size
    if envelope[end:end + 2] != b"\x58\x20" or len(envelope) != end + 2 + DIGEST_BYTES:
        raise ValueError("malformed envelope digest")
    return view[start:end], envelope[end + 2:]


def decode_fast(envelope: bytes, *, record_digest: bytes = b"") -> Event:
    """Decode an envelope this store wrote. Raises ValueError if a digest or shape is off.

    With `record_digest` (the header's) it checks that instead of the envelope's own
    digest: one hash either way, but the header digest covers every byte of the envelope,
    its digest field included, so no flipped byte gets through.
    """
    body, digest = _split_envelope(envelope)
    if record_digest:
        if _blake3(envelope).digest(length=RECORD_DIGEST_BYTES) != record_digest:
            raise ValueError("record digest does not match its body")
    elif _blake3(body).digest() != digest:
        raise ValueError("envelope digest does not match its body")
    version, stream, key, data, metadata, dot, context = _loads(body)
    event = _new(Event)
    dot_value = _new(Dot)
    _DOT_PEER(dot_value, dot[0])
    _DOT_COUNTER(dot_value, dot[1])
    setters = _EVENT_SLOTS
    setters[0](event, stream)
    setters[1](event, key)
    setters[2](event, data)
    setters[3](event, tuple(metadata.items()))
    setters[4](event, dot_value)
    setters[5](event, _vector(context))
    setters[6](event, digest)
    setters[7](event, envelope)
    return event


def _vector(flat: list) -> VersionVector:
    vector = _new(VersionVector)
    vector._counters = dict(zip(flat[::2], flat[1::2]))  # written sorted and positive
    vector._hash = None
    return vector


# -- scanning ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scanned:
    """One record found by a scan: kind, where it starts, its total length and its body.

    `error` is set (and `kind` 0) for a damaged record; its `length` then reaches the
    next good record (or the end of the data).
    """

    offset: int
    length: int
    kind: int
    body: bytes
    error: str = ""


def _check_at(data: bytes | memoryview, offset: int, end: int) -> tuple[int, int] | str:
    """(kind, total length) of a sound record at `offset`, or why it is not one."""
    if end - offset < HEADER_BYTES:
        return PAST_END
    magic, size, digest = HEADER.unpack_from(data, offset)
    kind = _MAGICS.get(bytes(magic))
    if kind is None:
        return "bad magic"
    if size > RECORD_BODY_BYTES_MAX or offset + HEADER_BYTES + size > end:
        return PAST_END
    body_start = offset + HEADER_BYTES
    if record_digest(data[body_start:body_start + size]) != digest:
        return "digest mismatch"
    return kind, HEADER_BYTES + size


def _next_sound(data: bytes, offset: int, end: int) -> int:
    """Offset of the next sound record after `offset`, or `end`."""
    position = offset + 1
    while position < end:
        found = [p for p in (data.find(EVENT_MAGIC, position, end), data.find(DOT_MAGIC, position, end)) if p >= 0]
        if not found:
            return end
        candidate = min(found)
        if isinstance(_check_at(data, candidate, end), tuple):
            return candidate
        position = candidate + 1
    return end


def scan_segment(data: bytes, start: int = 0) -> Iterator[Scanned]:
    """Every record of `data` from `start`; damaged ones carry `error`.

    A torn tail is reported as a final Scanned with error "torn" (the caller truncates
    at its offset). `data` must be bytes (or an mmap) for `find`.
    """
    offset, end = start, len(data)
    while offset < end:
        checked = _check_at(data, offset, end)
        if isinstance(checked, tuple):
            kind, length = checked
            yield Scanned(offset, length, kind, bytes(data[offset + HEADER_BYTES:offset + length]))
            offset += length
            continue
        following = _next_sound(data, offset, end)
        torn = following == end and (checked == PAST_END or not any(data[offset:end]))
        yield Scanned(offset, following - offset, 0, b"", TORN if torn else checked)
        offset = following


def check_record(data: bytes) -> str:
    """"" when `data` is exactly one sound record, else why not."""
    checked = _check_at(data, 0, len(data))
    if isinstance(checked, str):
        return checked
    return "" if checked[1] == len(data) else "record length does not match its index entry"


def corrupt_error(segment: str, offset: int, reason: str) -> CorruptRecord:
    return CorruptRecord(f"corrupt record in segment {segment} at offset {offset}: {reason}",
                         segment=segment, offset=offset)
