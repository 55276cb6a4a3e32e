"""Every decoder of outside bytes either decodes or raises RemoteProtocolError, nothing else.

Fed: random bytes, random CBOR structures (with tags), valid inputs truncated, bit-flipped
and with oversized length prefixes, and a corpus of hostile CBOR (huge declared lengths,
deep nesting, indefinite lengths, bad UTF-8, tags). Any other exception fails the test.
"""

from __future__ import annotations

import dataclasses
import random
import types
import typing

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshstream.cbor import loads_strict
from meshstream.clocks import Dot, VersionVector
from meshstream.envelope import Event, decode_event
from meshstream.errors import RemoteProtocolError
from meshstream.wire import schema
from meshstream.wire.framing import NEED_DATA, FrameDecoder, FrameEncoder
from meshstream.wire.mac import FrameMac, derive_cluster_key
from meshstream.wire.messages import AppendItem, AppendRequest, Hello, ReadReply, StatusReply, StatusRequest

FRAME_MAX = 64 * 1024
KEY = derive_cluster_key(b"fuzzing cluster secret")
EVENT = Event.sequence("orders", b"key-1", b"x" * 200, {"content-type": "text/plain", "n": 3},
                       Dot("n1", 7), VersionVector({"n1": 6, "n2": 3}))
MESSAGES = [
    StatusRequest(1),
    StatusReply(2, '{"ok": true}'),
    AppendRequest(3, "orders", (AppendItem(b"k", b"data", {"a": 1, "b": b"x"}),), "quorum"),
    ReadReply(4, (EVENT, EVENT), VersionVector({"n1": 7}), "", ""),
]


def refuses_cleanly(decode, data) -> None:
    try:
        decode(data)
    except RemoteProtocolError:
        pass


def feed_frames(data: bytes, chunk_sizes: list[int], mac: FrameMac | None = None) -> list:
    """Feed `data` to a fresh decoder in chunks; return the messages it produced.

    Stops at the first RemoteProtocolError (the decoder is dead then)."""
    decoder = FrameDecoder(FRAME_MAX, mac)
    got, position, turn = [], 0, 0
    try:
        while position < len(data):
            size = chunk_sizes[turn % len(chunk_sizes)] if chunk_sizes else len(data)
            decoder.receive_data(data[position:position + size])
            position, turn = position + size, turn + 1
            while (msg := decoder.next_message()) is not NEED_DATA:
                got.append(msg)
        decoder.end_of_stream()
    except RemoteProtocolError:
        pass
    return got


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=3) | st.integers(0, 3), inner, max_size=3)
    | st.builds(cbor2.CBORTag, st.sampled_from([0, 1, 2, 3, 4, 24, 30, 32, 258, 55799, 99999]), inner),
    max_leaves=15,
)
chunks = st.lists(st.integers(1, 64), min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(data):
    for decode in (loads_strict, decode_event, schema.message_from_bytes):
        refuses_cleanly(decode, data)
    feed_frames(data, [7])
    feed_frames(data, [3], FrameMac(KEY, b"L" * 16))


@settings(max_examples=300, deadline=None)
@given(cbor_values, st.integers(0, 80))
def test_random_cbor_structures(value, kind):
    try:
        data = cbor2.dumps(value)
    except (ValueError, TypeError, OverflowError):
        return  # cbor2 cannot encode it (e.g. an odd tag payload): nothing to feed
    for decode in (loads_strict, decode_event, schema.message_from_bytes):
        refuses_cleanly(decode, data)
    fields = value if isinstance(value, list) else [value]
    refuses_cleanly(schema.message_from_bytes, cbor2.dumps([kind, *fields]))
    payload = cbor2.dumps([1, [kind, *fields]])
    feed_frames(len(payload).to_bytes(4, "big") + payload, [])


POOL = [None, True, 0, -1, 2**64, 1.5, "", "n1", b"", b"\x00" * 16, [], [1], ["n1", 1], {}, {"a": 1},
        [b"x", b"y"], cbor2.CBORTag(1, 0), EVENT.envelope, [EVENT.envelope], [[b"k", b"d", {}]]]
SCALARS = {
    int: [0, 1, 3, -1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1],
    float: [0.0, 1.5, -1.0, 1e308, 7],
    bool: [True, False],
    str: ["", "n1", "peer", "client", "quorum", "master", "all", "$topology", "x" * 300],
    bytes: [b"", b"\x00" * 16, b"\x01" * 32, b"x" * 33],
    Dot: [["n1", 1], ["n1", 0], ["", 1]],
    VersionVector: [[], ["n1", 1], ["n2", 1, "n1", 1]],
    Event: [EVENT.envelope, EVENT.envelope[:-1], b"junk"],
}


def plausible(hint, rng: random.Random, depth: int = 0):
    """A CBOR value that mostly fits `hint` (so validation deep inside is reached), and
    sometimes anything at all."""
    if rng.random() < 0.15 or depth > 4:
        return rng.choice(POOL)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in SCALARS:
        return rng.choice(SCALARS[hint])
    if origin in (typing.Union, types.UnionType):
        return None if rng.random() < 0.3 else plausible(rng.choice(args), rng, depth + 1)
    if origin is tuple:
        return [plausible(args[0], rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if origin is dict:
        return {rng.choice(["a", "bb", ""]): plausible(args[1], rng, depth + 1) for _ in range(rng.randint(0, 2))}
    if dataclasses.is_dataclass(hint):
        return fields_for(hint, rng, depth + 1)
    return rng.choice(POOL)


def fields_for(cls: type, rng: random.Random, depth: int = 0) -> list:
    hints = typing.get_type_hints(cls)
    values = [plausible(hints[f.name], rng, depth) for f in dataclasses.fields(cls)]
    if rng.random() < 0.1:
        values = values[:-1] if values and rng.random() < 0.5 else values + [0]
    return values


@pytest.mark.parametrize("kind", sorted(schema.MESSAGE_KINDS))
def test_every_kind_with_random_fields(kind):
    seed = 1000 + kind
    rng = random.Random(seed)
    decoded = 0
    for attempt in range(400):
        fields = fields_for(schema.MESSAGE_KINDS[kind], rng)
        try:
            schema.message_from_bytes(cbor2.dumps([kind, *fields]))
            decoded += 1
        except RemoteProtocolError:
            pass
        except Exception as exc:
            raise AssertionError(f"seed={seed} kind {kind} attempt {attempt} fields {fields!r}: {exc!r}") from exc
    assert decoded, f"seed={seed}: no attempt decoded; the generator does not reach the validators"


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(MESSAGES), st.data())
def test_bit_flipped_messages_envelopes_and_frames(msg, data):
    encoded = schema.message_to_bytes(msg)
    refuses_cleanly(schema.message_from_bytes, flip(encoded, data.draw(st.integers(0, len(encoded) * 8 - 1))))
    envelope = EVENT.envelope
    with pytest.raises(RemoteProtocolError):
        decode_event(flip(envelope, data.draw(st.integers(0, len(envelope) * 8 - 1))))
    frames = FrameEncoder().encode_many([msg, StatusRequest(9)])
    feed_frames(flip(frames, data.draw(st.integers(0, len(frames) * 8 - 1))), data.draw(chunks))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(MESSAGES), st.data())
def test_truncated_inputs(msg, data):
    encoded = schema.message_to_bytes(msg)
    with pytest.raises(RemoteProtocolError):
        schema.message_from_bytes(encoded[:data.draw(st.integers(0, len(encoded) - 1))])
    with pytest.raises(RemoteProtocolError):
        decode_event(EVENT.envelope[:data.draw(st.integers(0, len(EVENT.envelope) - 1))])
    frame = FrameEncoder().encode(msg)
    cut = data.draw(st.integers(1, len(frame) - 1))
    assert feed_frames(frame[:cut], data.draw(chunks)) == []  # end_of_stream refuses the rest


@settings(max_examples=100, deadline=None)
@given(st.integers(FRAME_MAX + 1, 2**32 - 1), st.binary(max_size=64))
def test_oversized_length_prefix_is_refused_at_once(length, tail):
    decoder = FrameDecoder(FRAME_MAX)
    with pytest.raises(RemoteProtocolError):
        decoder.receive_data(length.to_bytes(4, "big") + tail)
    assert decoder.buffered_bytes == 0


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_authenticated_stream_survives_no_tampering(data):
    """Any single bit flip in a MACed stream is refused; no flipped frame is ever delivered."""
    sender, receiver = FrameMac(KEY, b"S" * 16), FrameMac(KEY, b"R" * 16)
    receiver_hello = FrameEncoder(receiver).encode(Hello("m", "r", "peer", "r:1", 1, 1, b"R" * 16))
    feed_frames(receiver_hello, [], sender)  # the sender learns the receiver's nonce
    hello = Hello("m", "s", "peer", "s:1", 1, 1, b"S" * 16)
    stream = FrameEncoder(sender).encode_many([hello, *MESSAGES])
    bit = data.draw(st.integers(0, len(stream) * 8 - 1), label="bit")
    got = feed_frames(flip(stream, bit), data.draw(chunks), receiver)
    assert got == [hello, *MESSAGES][:len(got)], f"bit {bit}: a tampered frame was delivered"
    assert len(got) < 1 + len(MESSAGES), f"bit {bit}: the flip went unnoticed"


HOSTILE_CBOR = [
    b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff",  # a byte string claiming 2^64-1 bytes
    b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff",  # an array claiming 2^64-1 items
    b"\xbb\x00\x00\x00\x01\x00\x00\x00\x00",  # a map claiming 2^32 pairs
    b"\x81" * 100_000,  # deep nesting
    b"\x9f" * 10_000,  # deep indefinite nesting
    b"\x5f\x41a\x41b\xff",  # indefinite byte string
    b"\x7f\x61a\xff",  # indefinite text string
    b"\x62\xff\xfe",  # invalid UTF-8
    b"\xc1\x1a\x00\x00\x00\x00",  # tag 1 (epoch datetime)
    b"\xd9\x01\x02\x82\x01\x01",  # tag 258 (set) with duplicates
    b"\xd9\x01\x02\x81\x80",  # tag 258 set of an unhashable list
    b"\xa1\x80\x01",  # a map with an array key
    b"\xa2\x01\x01\x01\x02",  # duplicate map keys
    b"\xc2\x5a\x00\x10\x00\x00" + b"\x01" * 16,  # a bignum claiming 1 MiB
    b"\xd8\x1d\x00",  # tag 29 shared reference to nothing
    b"\xd8\x1c\x81\xd8\x1d\x00",  # tag 28 shareable, self-reference
    b"\xf9\x7e\x00",  # half-float NaN
    b"\xfb\x7f\xf0\x00\x00\x00\x00\x00\x00",  # infinity
    b"\xff",  # a lone break
    b"\x1c",  # reserved additional info
    b"\xf8\x10",  # simple value 16
    b"",
]


@pytest.mark.parametrize("data", HOSTILE_CBOR, ids=range(len(HOSTILE_CBOR)))
def test_hostile_cbor(data):
    for decode in (loads_strict, decode_event, schema.message_from_bytes):
        refuses_cleanly(decode, data)
    for wrapped in (cbor2.dumps([1, [2]])[:-1] + data, b"\x82\x01" + data):  # inside a frame payload
        feed_frames(len(wrapped).to_bytes(4, "big") + wrapped, [])
