"""The on-disk record format of the segment log, and scanning a segment's bytes.

A record is a 24-byte header then a body:

    magic (4 bytes) | body length (u32, little-endian) | digest (16 bytes)

The magic names the kind: `MSE2` (the body is an event envelope, `Event.envelope`) and
`MSD1` (a "dot-only" record, CBOR `[stream, peer, counter]`: the dot of a conflict loser,
kept so a reopened store has the same version vectors). For `MSD1` the digest is
BLAKE3-128 of the body. For `MSE2` it is the first 16 bytes of the envelope's own BLAKE3
digest, which the event already carries: writing hashes nothing. Checking an `MSE2`
record (`event_sound`) hashes the envelope body once and compares both the envelope's
digest field and the header digest; the envelope's framing bytes are checked exactly
(`body_span`), so every byte of the record is covered and any flip is caught.
`MSE1` records (written before `MSE2`, digest = BLAKE3-128 of the whole envelope) are
still read. `MSR1` (a *drop* record, CBOR `[stream]`, digest BLAKE3-128 of the body) says
that every record of the stream before it is gone (the peer no longer replicates it); a
replay forgets them there, and records after it belong to the stream afresh.

`scan_segment` walks a segment and yields every record, resynchronising on the next magic
after a damaged one, so one flipped byte costs one record, never the rest of the file. A
damaged record with nothing valid after it that runs past the end of the data (or is a
zero-filled tail) is a *torn tail*, left by a crash mid-write: the caller truncates it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from itertools import repeat
from operator import add, itemgetter
from typing import NamedTuple

import blake3
import cbor2

from meshstream import hashing
from meshstream.clocks import Dot, VersionVector
from meshstream.envelope import DIGEST_BYTES, FAST_BUILD, Event, make_dot_unchecked, make_event_unchecked
from meshstream.envelope import DotShell as _DotShell, EventShell as _EventShell
from meshstream.errors import CorruptRecord

EVENT_MAGIC = b"MSE2"
EVENT_MAGIC_V1 = b"MSE1"
DOT_MAGIC = b"MSD1"
DROP_MAGIC = b"MSR1"
KIND_EVENT = 1
KIND_DOT = 2
KIND_DROP = 3
HEADER = struct.Struct("<4sI16s")
HEADER_BYTES = HEADER.size
HEADER_DIGEST_AT = struct.calcsize("<4sI")  # where the header's digest prefix starts
RECORD_DIGEST_BYTES = 16
RECORD_BODY_BYTES_MAX = 80 * 1024 * 1024  # above the envelope's 64 MiB data ceiling
TORN = "torn"  # Scanned.error of a torn tail
PAST_END = "length runs past the end of the data"
MISMATCH = "digest mismatch"
_MAGICS = {EVENT_MAGIC: KIND_EVENT, EVENT_MAGIC_V1: KIND_EVENT, DOT_MAGIC: KIND_DOT, DROP_MAGIC: KIND_DROP}
_blake3 = blake3.blake3
_loads = cbor2.loads
_dumps = cbor2.dumps
_pack = HEADER.pack


def record_digest(body: bytes | memoryview) -> bytes:
    return _blake3(body).digest(length=RECORD_DIGEST_BYTES)


def encode_event_record(event: Event) -> bytes:
    """Header and envelope of one event, ready to append (no hashing: see the docstring)."""
    body = event.envelope
    return _pack(EVENT_MAGIC, len(body), event.digest[:RECORD_DIGEST_BYTES]) + body


def event_header(event: Event) -> bytes:
    """The header alone, for callers that gather a batch into one buffer."""
    return _pack(EVENT_MAGIC, len(event.envelope), event.digest[:RECORD_DIGEST_BYTES])


def encode_dot_record(stream: str, dot: Dot) -> bytes:
    """A dot-only record: `dot` of `stream` has been seen (a conflict loser)."""
    body = _dumps([stream, dot.peer, dot.counter])
    return _pack(DOT_MAGIC, len(body), record_digest(body)) + body


def decode_dot_body(body: bytes) -> tuple[str, Dot]:
    """Raise ValueError unless body is a well-formed dot-only record body."""
    value = _loads(body)
    if not isinstance(value, list) or len(value) != 3:
        raise ValueError("a dot record must be [stream, peer, counter]")
    stream, peer, counter = value
    if not isinstance(stream, str) or not isinstance(peer, str) or type(counter) is not int or counter < 1:
        raise ValueError("a dot record must be [stream, peer, counter]")
    return stream, Dot(peer, counter)


def encode_drop_record(stream: str) -> bytes:
    """A drop record: the records of `stream` written before it are gone."""
    body = _dumps([stream])
    return _pack(DROP_MAGIC, len(body), record_digest(body)) + body


def decode_drop_body(body: bytes) -> str:
    """The stream a drop record names. Raise ValueError unless the body is `[stream]`."""
    value = _loads(body)
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], str):
        raise ValueError("a drop record must be [stream]")
    return value[0]


# -- checking and reading events fast -------------------------------------------------------
# decode_event re-validates every field (about 9.5 us an event). A record we wrote was a
# valid Event when written, so a read only has to prove the bytes are unchanged (one hash
# of the envelope body, `event_sound`), then decode with one plain cbor2.loads.
#
# Building the Event: the frozen dataclass's __init__ goes through object.__setattr__ per
# field. Instead a plain slotted "shell" with the same slots is filled by ordinary slot
# stores and then becomes an Event by `__class__` assignment, which CPython allows between
# classes of identical layout (same slots, same base). About 2x cheaper than calling each
# slot descriptor's __set__. meshstream.envelope holds the shells and checks them once at
# import (FAST_BUILD); elsewhere the ordinary constructors stand in.


_new = object.__new__
SHELLS = FAST_BUILD
make_event = make_event_unchecked
make_dot = make_dot_unchecked


def _vector(context: list) -> VersionVector:
    vector = _new(VersionVector)  # written sorted and positive: no checks needed
    vector._counters = {context[0]: context[1]} if len(context) == 2 else dict(zip(context[::2], context[1::2]))
    vector._hash = None
    return vector


def body_span(envelope: bytes | memoryview) -> tuple[int, int]:
    """(start, end) of the body of an envelope `[body, digest]`; (0, 0) if malformed.

    Exact: the envelope must end with its 32-byte digest right after the body, so a flip
    in any framing byte changes a length and is caught here.
    """
    size = len(envelope)
    if size < 36 or envelope[0] != 0x82:
        return 0, 0
    info = envelope[1]
    length, start = info & 0x1F, 2
    if info >> 5 != 2:
        return 0, 0
    if length == 25:
        length, start = (envelope[2] << 8) | envelope[3], 4
    elif length == 24:
        length, start = envelope[2], 3
    elif length == 26:
        length, start = int.from_bytes(envelope[2:6], "big"), 6
    elif length > 23:
        return 0, 0
    end = start + length
    if end + 2 + DIGEST_BYTES != size or envelope[end] != 0x58 or envelope[end + 1] != 0x20:
        return 0, 0
    return start, end


def event_sound(envelope: bytes | memoryview, header_digest: bytes, magic: bytes = EVENT_MAGIC) -> str:
    """"" when an event record's envelope matches its header digest, else why not."""
    if magic == EVENT_MAGIC_V1:
        return "" if _blake3(envelope).digest(length=RECORD_DIGEST_BYTES) == header_digest else MISMATCH
    start, end = body_span(envelope)
    if not end:
        return "malformed envelope"
    digest = bytes(envelope[end + 2:])
    if digest[:RECORD_DIGEST_BYTES] != header_digest or _blake3(envelope[start:end]).digest() != digest:
        return MISMATCH
    return ""


def decode_trusted(envelope: bytes, start: int, end: int, body: bytes | None = None) -> Event:
    """Build the Event of an envelope already checked (`event_sound`) whose body spans
    envelope[start:end] (`body`, when the caller has sliced it already). Raises
    ValueError/TypeError if the body is not an event's."""
    version, stream, key, data, metadata, dot, context = _loads(envelope[start:end] if body is None else body)
    return make_event(stream, key, data, tuple(metadata.items()) if metadata else (), make_dot(dot[0], dot[1]),
                      _vector(context), envelope[end + 2:], envelope)


def decode_fast(envelope: bytes, *, record_digest: bytes = b"", magic: bytes = EVENT_MAGIC) -> Event:
    """Check and decode an envelope this store wrote. Raises ValueError if anything is off.

    With `record_digest` (the header's) the header digest is checked as well.
    """
    if record_digest:
        problem = event_sound(envelope, record_digest, magic)
        if problem:
            raise ValueError(problem)
    start, end = body_span(envelope)
    if not end:
        raise ValueError("malformed envelope")
    if not record_digest and _blake3(envelope[start:end]).digest() != envelope[end + 2:]:
        raise ValueError("envelope digest does not match its body")
    return decode_trusted(envelope, start, end)


# -- scanning ------------------------------------------------------------------------------


class Scanned(NamedTuple):
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
    body = data[body_start:body_start + size]
    if kind == KIND_EVENT:
        problem = event_sound(body, digest, bytes(magic))
        if problem:
            return problem
    elif record_digest(body) != digest:
        return MISMATCH
    return kind, HEADER_BYTES + size


def _next_sound(data: bytes, offset: int, end: int) -> int:
    """Offset of the next sound record after `offset`, or `end`."""
    position = offset + 1
    while position < end:
        found = [p for p in (data.find(magic, position, end) for magic in _MAGICS) if p >= 0]
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


_unpack_header = HEADER.unpack_from


def read_event(data: bytes, at: int, length: int) -> Event | str:
    """The event of the record at data[at:at + length], or why it is unsound (never raises).

    The read path: one hash of the envelope body (it covers every byte, see the module
    docstring), then one plain decode of the same body bytes.
    """
    if length < HEADER_BYTES or at < 0 or len(data) < at + length:  # an index entry too short for a header
        return "bad record header"
    magic, size, header_digest = _unpack_header(data, at)
    if size != length - HEADER_BYTES:
        return "bad record header"
    envelope = data[at + HEADER_BYTES:at + length]
    if magic != EVENT_MAGIC:
        if magic != EVENT_MAGIC_V1:
            return "bad record header"
        problem = event_sound(envelope, header_digest, magic)
        if problem:
            return problem
    start, end = body_span(envelope)
    if not end:
        return "malformed envelope"
    body = envelope[start:end]
    if magic == EVENT_MAGIC:
        digest = envelope[end + 2:]
        if digest[:RECORD_DIGEST_BYTES] != header_digest or _blake3(body).digest() != digest:
            return MISMATCH
    try:
        return decode_trusted(envelope, start, end, body)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, cbor2.CBORDecodeError) as exc:
        return f"undecodable body: {exc}"


def _frame_of(size: int) -> tuple[bytes, int, int] | None:
    """(prefix, body start, body end) of a well-formed envelope of `size` bytes written
    with minimal CBOR lengths (as cbor2 writes them): `[body, digest]` is then fully fixed
    by its size. None if no such envelope has this size."""
    for header, low, high, mark in _BYTE_STRING_HEADERS:
        length = size - 1 - header - len(_DIGEST_MARK) - DIGEST_BYTES
        if low <= length < high:
            argument = bytes([0x40 | length]) if header == 1 else bytes([mark]) + length.to_bytes(header - 1, "big")
            return b"\x82" + argument, 1 + header, 1 + header + length
    return None


# (header bytes, least and bound of the lengths it encodes minimally, its first byte)
_BYTE_STRING_HEADERS = ((1, 0, 24, 0x40), (2, 24, 256, 0x58), (3, 256, 65536, 0x59), (5, 65536, 1 << 32, 0x5A))
_DIGEST_MARK = b"\x58\x20"
_frames: dict[int, tuple[bytes, int, int] | None] = {}
_FRAMES_MAX = 4096  # distinct envelope sizes remembered


def _frame(size: int) -> tuple[bytes, int, int] | None:
    frame = _frames.get(size, False)
    if frame is False:
        if len(_frames) >= _FRAMES_MAX:
            _frames.clear()
        frame = _frames[size] = _frame_of(size)
    return frame


def _build(envelope: bytes, start: int, end: int, header_digest: bytes) -> Event | str:
    """The Event of a framed MSE2 envelope after checking its digest, or why not."""
    digest, body = envelope[end + 2:], envelope[start:end]
    if not digest.startswith(header_digest) or _blake3(body).digest() != digest:
        return MISMATCH
    return _build_checked(envelope, start, end)


def _build_checked(envelope: bytes, start: int, end: int) -> Event | str:
    """`_build` of an envelope whose digests were checked already."""
    try:
        digest = envelope[end + 2:]
        version, stream, key, payload, metadata, dot, context = _loads(envelope[start:end])
        made_dot = _DotShell()
        made_dot.peer, made_dot.counter = dot
        made_dot.__class__ = Dot
        vector = _new(VersionVector)
        vector._counters = {context[0]: context[1]} if len(context) == 2 else dict(zip(context[::2], context[1::2]))
        vector._hash = None
        event = _EventShell()
        event.stream, event.key, event.data, event.dot, event.context = stream, key, payload, made_dot, vector
        event.metadata = tuple(metadata.items()) if metadata else ()
        event.digest, event.envelope = digest, envelope
        event.__class__ = Event
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, cbor2.CBORDecodeError) as exc:
        return f"undecodable body: {exc}"
    return event


def _framed(data: bytes, at: int, length: int) -> tuple[bytes, int, int, bytes] | None:
    """(envelope, body start, body end, header digest) of the record at data[at:at +
    length] when it is the usual one (MSE2, its envelope framed as this store writes it:
    the framing bytes are those its size implies); None for anything else."""
    if not len(data) >= at + length >= at + HEADER_BYTES:
        return None
    magic, size, header_digest = _unpack_header(data, at)
    frame = (_frames.get(size) or _frame(size)) if magic == EVENT_MAGIC and size == length - HEADER_BYTES else None
    if frame is None:
        return None
    prefix, start, end = frame
    envelope = data[at + HEADER_BYTES:at + length]
    if not envelope.startswith(prefix) or not envelope.startswith(_DIGEST_MARK, end):
        return None
    return envelope, start, end, header_digest


def read_run(data: bytes, ats: list[int], lengths: list[int]) -> tuple[list[Event | str], list[int]]:
    """`read_event` for each record at data[at:at + length] (the read path for runs), and
    the positions of the unsound ones (whose entries are strings saying why).

    The usual record (MSE2, envelope framed as this store writes it) is checked by
    comparing its framing bytes with those its size implies, then one hash of the body
    and one decode (`_build`); anything else goes through `read_event`.
    """
    uniform = _uniform_envelopes(data, ats, lengths) if SHELLS else None
    if uniform is not None:  # all sound: one decode each
        envelopes, start, end = uniform
        events = list(map(_build_checked, envelopes, repeat(start), repeat(end)))
        if str not in set(map(type, events)):
            return events, []
    result: list[Event | str] = []
    bad: list[int] = []
    append, framed, build = result.append, _framed, _build
    for at, length in zip(ats, lengths):
        found = framed(data, at, length) if SHELLS else None
        loaded = build(*found) if found is not None else None
        if loaded is None:  # anything unusual: the general path
            loaded = read_event(data, at, length)
        if type(loaded) is str:
            bad.append(len(result))
        append(loaded)
    return result, bad


def read_run_envelopes(data: bytes, ats: list[int], lengths: list[int]) -> tuple[list[bytes | str], list[int]]:
    """The envelope bytes of each record at data[at:at + length], checked but not decoded
    (what a partner is sent: it decodes them itself), and the positions of the unsound
    ones (whose entries say why). The digest covers every byte of the body, so one hash
    per usual record is the whole check; anything unusual goes through `read_event`."""
    uniform = _uniform_envelopes(data, ats, lengths)
    if uniform is not None:
        return uniform[0], []
    result: list[bytes | str] = []
    bad: list[int] = []
    append, framed, blake = result.append, _framed, _blake3
    for at, length in zip(ats, lengths):
        loaded: bytes | str | None = None
        found = framed(data, at, length)
        if found is not None:
            envelope, start, end, header_digest = found
            digest = envelope[end + 2:]
            sound = digest.startswith(header_digest) and blake(envelope[start:end]).digest() == digest
            loaded = envelope if sound else MISMATCH
        if loaded is None:  # anything unusual: the general path
            event = read_event(data, at, length)
            loaded = event if type(event) is str else event.envelope
        if type(loaded) is str:
            bad.append(len(result))
        append(loaded)
    return result, bad


def all_sound(data: bytes, ats: list[int], lengths: list[int]) -> bool:
    """True when the records at data[at:at + length] are all the usual event record, of
    one length, and sound (a scrub's slice, checked by columns); False says nothing about
    which are not (ask `check_record`)."""
    return _uniform_envelopes(data, ats, lengths) is not None


def _uniform_envelopes(data: bytes, ats: list[int], lengths: list[int]) -> tuple[list[bytes], int, int] | None:
    """(envelopes, body start, body end) of records that are all the usual one, all of
    one length and all sound: each check and slice is one pass over the records in C
    (map), not a Python loop per record (a partner's catch-up batch: 2,048 records; a
    reader's page). None when they are not all so; the caller's record-by-record pass
    then says which."""
    if not ats or len(set(lengths)) != 1 or min(ats) < 0 or max(ats) + lengths[0] > len(data):
        return None
    size = lengths[0] - HEADER_BYTES
    frame = (_frames.get(size) or _frame(size)) if size > 0 else None
    if frame is None:
        return None
    prefix, start, end = frame
    starts = list(map(add, ats, repeat(HEADER_BYTES)))
    if not all(map(data.startswith, repeat(EVENT_MAGIC + size.to_bytes(4, "little")), ats)) \
            or not all(map(data.startswith, repeat(prefix), starts)) \
            or not all(map(data.startswith, repeat(_DIGEST_MARK), map(add, starts, repeat(end)))):
        return None
    envelopes = list(map(data.__getitem__, map(slice, starts, map(add, starts, repeat(size)))))
    digests = list(map(itemgetter(slice(end + 2, size)), envelopes))
    header_digests = map(data.__getitem__, map(slice, map(add, ats, repeat(HEADER_DIGEST_AT)), starts))
    if not all(map(bytes.startswith, digests, header_digests)):
        return None
    if hashing.digests(map(itemgetter(slice(start, end)), envelopes)) != digests:
        return None
    return envelopes, start, end


def scan_run(data: bytes, offset: int, end: int, count_max: int) -> tuple[list[Event], list[int], list[int]]:
    """Sound, usually framed event records from `offset` on (at most `count_max`), as
    (events, offsets, lengths); stops before the first record that is anything else
    (a dot record, a damaged one, the end), which the caller hands to `scan_segment`."""
    events: list[Event] = []
    ats: list[int] = []
    lengths: list[int] = []
    frames, unpack, build = _frames, _unpack_header, _build
    while offset + HEADER_BYTES <= end and len(events) < count_max and SHELLS:
        magic, size, header_digest = unpack(data, offset)
        stop = offset + HEADER_BYTES + size
        frame = (frames.get(size) or _frame(size)) if magic == EVENT_MAGIC and stop <= end else None
        if frame is None:
            break
        prefix, start, body_end = frame
        envelope = data[offset + HEADER_BYTES:stop]
        if not envelope.startswith(prefix) or not envelope.startswith(_DIGEST_MARK, body_end):
            break
        event = build(envelope, start, body_end, header_digest)
        if type(event) is str:
            break
        events.append(event)
        ats.append(offset)
        lengths.append(stop - offset)
        offset = stop
    return events, ats, lengths
