"""Reading a batch of envelopes as one writer's run without a CBOR decoder.

A catch-up batch and a master's push are runs: one writer's consecutive events in one
stream, no metadata, each in the context of the one before (`Event.seal_run`). Every body
of such a run is the same bytes but for its key, its data and two counters:

    87 01 <stream> | <key head> <key> | <data head> <data> | a0 82 <writer> <counter> <context>

where the context is the first event's with the writer's entry one less than the dot's
counter. `template_run(envelopes)` decodes and checks the first envelope by the full
rules (`decode_event`), builds the bytes every later body must end with, and for each
envelope only slices the key and the data out, compares the rest byte for byte and checks
the digest (BLAKE3 of the body). A CBOR decoder per body and the column checks of
`envelope_batch._run_of` cost ~3.7 us an event in a catch-up; this ~1.

What it accepts, `decode_event` accepts with the same fields: the bytes between the key
and the end of the body are the ones `seal_run` writes for fields that the first event's
full check passed (the stream, the writer, the other peers' names and counts); the key and
data heads are read as CBOR reads them (definite-length byte strings), and the key's and
the data's lengths are checked as `_decode_body` checks them. Anything else, a damaged or
unusual envelope included, makes it return None, and `decode_run`'s general path decides
(and raises the precise error).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from operator import itemgetter

import blake3
import cbor2

from meshstream import hashing, ids
from meshstream.clocks import COUNTER_MAX
from meshstream.envelope import DATA_BYTES_HARD_MAX, context_around, count_heads, decode_event
from meshstream.envelope_run import EnvelopeRun
from meshstream.errors import RemoteProtocolError

_blake3 = blake3.blake3
_DIGEST_MARK = b"\x58\x20"  # a 32-byte byte string
_RUN_EVENTS_MIN = 2  # one event: the general path costs as much, and is the one tested by every push


def template_run(envelopes: Sequence[bytes]) -> EnvelopeRun | None:
    """The run of `envelopes` when every one is a run event in the first one's template
    (see the module docstring); None otherwise. Never raises on bad input."""
    if len(envelopes) < _RUN_EVENTS_MIN or set(map(type, envelopes)) != {bytes}:
        return None
    try:
        first = decode_event(envelopes[0])
    except RemoteProtocolError:
        return None
    stream, writer, counter = first.stream, first.dot.peer, first.dot.counter
    context = dict(sorted(first.context.items()))
    if first.metadata or stream.startswith(ids.SYSTEM_PREFIX) or context.get(writer) != counter - 1 \
            or counter + len(envelopes) - 1 > COUNTER_MAX:
        return None
    start = b"\x87\x01" + cbor2.dumps(stream)
    before, after = context_around(context, writer)
    dot_start = b"\xa0\x82" + cbor2.dumps(writer)
    heads = count_heads(counter - 1, counter + len(envelopes))  # [i]: event i's context entry, [i + 1]: its dot
    # Each body's last bytes, and the digest's head after them (the envelope's second item).
    parts = zip(repeat(dot_start), heads[1:], repeat(before), heads, repeat(after + _DIGEST_MARK))
    tails = list(map(b"".join, parts))
    columns = _columns(envelopes, start, tails)
    if columns is None:
        return None
    keys, datas, digests = columns
    if min(map(len, keys)) < 1 or max(map(len, keys)) > ids.KEY_BYTES_MAX or max(map(len, datas)) > DATA_BYTES_HARD_MAX:
        return None
    del context[writer]
    return EnvelopeRun(stream, writer, counter, keys, datas, context, list(range(counter - 1, counter - 1 + len(keys))),
                       digests, list(envelopes))


def run_extent(envelopes: Sequence[bytes]) -> tuple[str, str, int] | None:
    """(stream, writer, last counter) of a batch whose first and last envelopes are one
    writer's events in one (non-system) stream, as many counters apart as the batch is
    long: the dots a run would cover, read from two envelopes before the batch is checked
    (a catch-up names them in its next pull while it checks this one). None otherwise, or
    when either envelope is bad. Only a guess about the envelopes between: `decode_run`
    decides what the batch is."""
    if len(envelopes) < _RUN_EVENTS_MIN or type(envelopes[0]) is not bytes or type(envelopes[-1]) is not bytes:
        return None
    try:
        first, last = decode_event(envelopes[0]), decode_event(envelopes[-1])
    except RemoteProtocolError:
        return None
    if first.stream != last.stream or first.dot.peer != last.dot.peer or first.stream.startswith(ids.SYSTEM_PREFIX) \
            or last.dot.counter - first.dot.counter != len(envelopes) - 1:
        return None
    return first.stream, first.dot.peer, last.dot.counter


def _columns(envelopes: Sequence[bytes], start: bytes, tails: list[bytes]) -> tuple[list, list, list] | None:
    """(keys, datas, digests) of envelopes whose bodies are `start`, a key, a data and
    `tails[i]` (which ends with the digest's head), each digest checked; None when one is
    not. Envelopes all laid out as the first (`_uniform_columns`) are read column by
    column; any other batch envelope by envelope."""
    uniform = _uniform_columns(envelopes, start, tails)
    if uniform is not None:
        return uniform
    keys: list[bytes] = []
    datas: list[bytes] = []
    digests: list[bytes] = []
    blake = _blake3
    for envelope, tail in zip(envelopes, tails):
        layout = _layout(envelope, start)
        if layout is None:
            return None
        body_at, end, at, key_end, data_at, data_end = layout
        if data_end + len(tail) != end + 2 or not envelope.startswith(tail, data_end):  # the tail ends in the mark
            return None
        digest = envelope[end + 2:]
        if blake(envelope[body_at:end]).digest() != digest:
            return None
        keys.append(envelope[at:key_end])
        datas.append(envelope[data_at:data_end])
        digests.append(digest)
    return keys, datas, digests


def _layout(envelope: bytes, start: bytes) -> tuple[int, int, int, int, int, int] | None:
    """(body start, body end, key start, key end, data start, data end) of an envelope
    whose body begins with `start` and then a key and a data as CBOR byte strings, its
    length what its heads say; None otherwise."""
    try:
        head = envelope[1]  # the body's head: 24-255 bytes (0x58) or 256-65535 (0x59)
        if head == 0x58 and envelope[0] == 0x82:
            body_at, end = 3, 3 + envelope[2]
        elif head == 0x59 and envelope[0] == 0x82:
            body_at, end = 4, 4 + ((envelope[2] << 8) | envelope[3])
        else:
            return None
        if len(envelope) != end + 34 or not envelope.startswith(start, body_at):
            return None
        at = body_at + len(start)
        head = envelope[at]  # the key: a byte string of 0-23 bytes, or 24-255
        if 0x40 <= head <= 0x57:
            at, key_end = at + 1, at + 1 + head - 0x40
        elif head == 0x58:
            at, key_end = at + 2, at + 2 + envelope[at + 1]
        else:
            return None
        head = envelope[key_end]  # the data: 0-23, 24-255 or 256-65535 bytes
        if 0x40 <= head <= 0x57:
            data_at, data_end = key_end + 1, key_end + 1 + head - 0x40
        elif head == 0x58:
            data_at, data_end = key_end + 2, key_end + 2 + envelope[key_end + 1]
        elif head == 0x59:
            data_at, data_end = key_end + 3, key_end + 3 + ((envelope[key_end + 1] << 8) | envelope[key_end + 2])
        else:
            return None
    except IndexError:  # a head past the end of a short envelope
        return None
    return body_at, end, at, key_end, data_at, data_end


def _uniform_columns(envelopes: Sequence[bytes], start: bytes, tails: list[bytes]) -> tuple[list, list, list] | None:
    """`_columns` of a batch whose envelopes are all as long as the first and carry its
    bytes up to the key and its data's head (so the same key and data lengths, each at the
    same place): every check and slice is one pass over the batch in C (map), ~1 us an
    event less than envelope by envelope. None when the batch is not so or fails a check;
    the caller's envelope-by-envelope pass then decides."""
    first = envelopes[0]
    layout = _layout(first, start)
    if layout is None:
        return None
    body_at, end, at, key_end, data_at, data_end = layout
    size, count = len(first), len(envelopes)
    if set(map(len, envelopes)) != {size} or set(map(len, tails)) != {end + 2 - data_end}:
        return None
    if not all(map(bytes.startswith, envelopes, repeat(first[:at]))) \
            or not all(map(bytes.startswith, envelopes, repeat(first[key_end:data_at]), repeat(key_end))) \
            or not all(map(bytes.startswith, envelopes, tails, repeat(data_end))):
        return None
    digests = list(map(itemgetter(slice(end + 2, size)), envelopes))
    bodies = map(itemgetter(slice(body_at, end)), envelopes)
    if hashing.digests(bodies) != digests:
        return None
    keys = list(map(itemgetter(slice(at, key_end)), envelopes))
    datas = list(map(itemgetter(slice(data_at, data_end)), envelopes))
    return (keys, datas, digests) if len(keys) == count else None
