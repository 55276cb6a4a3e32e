"""Framing and the frame MAC: two endpoints wired back to back, no network (h11 style)."""

from __future__ import annotations

import random

import pytest

from meshstream.cbor import dumps
from meshstream.errors import LocalProtocolError, RemoteProtocolError
from meshstream.wire import mac as mac_module
from meshstream.wire.framing import LENGTH_BYTES, NEED_DATA, FrameDecoder, FrameEncoder
from meshstream.wire.mac import MAC_BYTES, FrameMac, derive_cluster_key
from meshstream.wire.messages import Hello, ReadRequest, StatusReply, StatusRequest
from meshstream.clocks import VersionVector

FRAME_MAX = 1 << 20
KEY = derive_cluster_key(b"correct horse battery staple")
OTHER_KEY = derive_cluster_key(b"a different cluster secret")


def hello(name: str, nonce: bytes) -> Hello:
    return Hello("mesh", name, "peer", f"{name}:1", 1, 1, nonce)


def drain(decoder: FrameDecoder) -> list:
    out = []
    while (msg := decoder.next_message()) is not NEED_DATA:
        out.append(msg)
    return out


class Side:
    """One end of a connection: its MAC state, encoder and decoder."""

    def __init__(self, name: str, key: bytes | None, nonce: bytes) -> None:
        self.nonce = nonce
        self.mac = FrameMac(key, nonce) if key is not None else None
        self.encoder = FrameEncoder(self.mac)
        self.decoder = FrameDecoder(FRAME_MAX, self.mac)
        self.hello = hello(name, nonce)


def handshake(key_a: bytes | None = KEY, key_b: bytes | None = KEY) -> tuple[Side, Side]:
    a, b = Side("a", key_a, b"A" * 16), Side("b", key_b, b"B" * 16)
    to_b, to_a = a.encoder.encode(a.hello), b.encoder.encode(b.hello)
    b.decoder.receive_data(to_b)
    a.decoder.receive_data(to_a)
    assert drain(b.decoder) == [a.hello]
    assert drain(a.decoder) == [b.hello]
    return a, b


# -- plain framing --

def test_round_trip_one_and_many():
    encoder, decoder = FrameEncoder(), FrameDecoder(FRAME_MAX)
    messages = [StatusRequest(i) for i in range(50)] + [StatusReply(7, "{}")]
    decoder.receive_data(encoder.encode(messages[0]))
    decoder.receive_data(encoder.encode_many(messages[1:]))
    assert drain(decoder) == messages
    assert decoder.buffered_bytes == 0


def test_frame_layout_is_length_then_version_and_message():
    frame = FrameEncoder().encode(StatusRequest(5))
    payload = dumps([1, [6, 5]])
    assert frame == len(payload).to_bytes(4, "big") + payload


@pytest.mark.parametrize("seed", range(5))
def test_any_split_of_the_stream_decodes_the_same(seed):
    rng = random.Random(seed)
    messages = [ReadRequest(i, f"s{i}", VersionVector({"n1": i + 1}), 10, 0.5) for i in range(40)]
    stream = FrameEncoder().encode_many(messages)
    decoder, got = FrameDecoder(FRAME_MAX), []
    position = 0
    while position < len(stream):
        step = rng.randint(1, 40)
        decoder.receive_data(stream[position:position + step])
        position += step
        got.extend(drain(decoder))
    assert got == messages, f"seed={seed}"


def test_oversized_length_refused_before_the_body_is_buffered():
    decoder = FrameDecoder(1000)
    with pytest.raises(RemoteProtocolError, match="length"):
        decoder.receive_data((1001).to_bytes(4, "big"))  # only the prefix has arrived
    assert decoder.buffered_bytes == 0
    with pytest.raises(RemoteProtocolError, match="dead"):
        decoder.receive_data(b"x")
    with pytest.raises(RemoteProtocolError, match="dead"):
        decoder.next_message()


def test_zero_length_and_bad_version_and_garbage_are_refused():
    for payload in [b"", dumps([2, [6, 1]]), dumps([0, [6, 1]]), dumps([1, [6, 1], 3]), dumps({"a": 1}),
                    dumps([1, [999, 1]]), dumps([True, [6, 1]]), b"\xff\xff"]:
        decoder = FrameDecoder(FRAME_MAX)
        with pytest.raises(RemoteProtocolError):
            decoder.receive_data(len(payload).to_bytes(4, "big") + payload)
            decoder.next_message()


def test_truncated_frame_waits_then_fails_at_end_of_stream():
    frame = FrameEncoder().encode(StatusRequest(1))
    decoder = FrameDecoder(FRAME_MAX)
    decoder.receive_data(frame[:-1])
    assert decoder.next_message() is NEED_DATA
    with pytest.raises(RemoteProtocolError, match="inside a frame"):
        decoder.end_of_stream()
    clean = FrameDecoder(FRAME_MAX)
    clean.receive_data(frame)
    drain(clean)
    clean.end_of_stream()  # a close between frames is fine


def test_error_after_good_frames_kills_the_decoder():
    decoder = FrameDecoder(FRAME_MAX)
    good = FrameEncoder().encode(StatusRequest(1))
    decoder.receive_data(good + b"\x00\x00\x00\x02\xff\xff" + good)
    assert decoder.next_message() == StatusRequest(1)
    with pytest.raises(RemoteProtocolError):
        decoder.next_message()
    with pytest.raises(RemoteProtocolError, match="dead"):
        decoder.next_message()


def test_encoder_refuses_misuse():
    with pytest.raises(LocalProtocolError):
        FrameEncoder().encode(object())
    with pytest.raises(LocalProtocolError, match="frame_bytes_max"):
        FrameEncoder(frame_bytes_max=10).encode(StatusReply(1, "x" * 100))
    with pytest.raises(LocalProtocolError):
        FrameDecoder(0)


def test_buffer_is_compacted_not_grown_forever():
    encoder, decoder = FrameEncoder(), FrameDecoder(FRAME_MAX)
    frame = encoder.encode(StatusReply(1, "x" * 200))
    for _ in range(5000):
        decoder.receive_data(frame + frame[:100])
        assert drain(decoder) == [StatusReply(1, "x" * 200)]
        decoder.receive_data(frame[100:])
        assert drain(decoder) == [StatusReply(1, "x" * 200)]
        assert decoder.buffered_bytes == 0
        assert len(decoder._buffer) < 4 * len(frame)


# -- the MAC --

def test_mac_handshake_and_both_directions():
    a, b = handshake()
    b.decoder.receive_data(a.encoder.encode_many([StatusRequest(i) for i in range(3)]))
    a.decoder.receive_data(b.encoder.encode(StatusReply(0, "{}")))
    assert drain(b.decoder) == [StatusRequest(i) for i in range(3)]
    assert drain(a.decoder) == [StatusReply(0, "{}")]
    assert a.mac.confirmed and b.mac.confirmed
    frame = a.encoder.encode(StatusRequest(9))
    assert len(frame) == LENGTH_BYTES + len(dumps([1, [6, 9]])) + MAC_BYTES


def test_peer_without_the_key_is_refused_at_its_hello():
    for key_b in (OTHER_KEY, None):
        a = Side("a", KEY, b"A" * 16)
        b = Side("b", key_b, b"B" * 16)
        # without a key, b's Hello is followed by plain frames where a expects a tag
        a.decoder.receive_data(b.encoder.encode(b.hello) + b.encoder.encode_many([StatusRequest(1)] * 5)
                               if key_b is None else b.encoder.encode(b.hello))
        with pytest.raises(RemoteProtocolError):
            drain(a.decoder)
        assert a.mac.peer_nonce is None and not a.mac.confirmed


def test_first_frame_must_be_a_hello():
    a = Side("a", KEY, b"A" * 16)
    plain = FrameEncoder().encode(StatusRequest(1))
    a.decoder.receive_data(plain + bytes(MAC_BYTES))
    with pytest.raises(RemoteProtocolError, match="first frame must be a Hello"):
        a.decoder.next_message()


def test_replayed_reordered_dropped_or_tampered_frames_are_refused():
    for case in ("replay", "reorder", "drop", "tamper", "reflect", "truncate_tag"):
        a, b = handshake()
        frames = [a.encoder.encode(StatusRequest(i)) for i in range(3)]
        if case == "replay":
            stream = frames[0] + frames[0]
        elif case == "reorder":
            stream = frames[1] + frames[0]
        elif case == "drop":
            stream = frames[1]
        elif case == "tamper":
            stream = frames[0][:-1] + bytes([frames[0][-1] ^ 1])
        elif case == "reflect":  # a's own frame sent back to a
            a.decoder, stream = FrameDecoder(FRAME_MAX, a.mac), frames[0]
        else:  # the tag cut short and the connection closed
            stream = frames[0][:-1]
        target = a.decoder if case == "reflect" else b.decoder
        target.receive_data(stream)
        with pytest.raises(RemoteProtocolError):
            drain(target)
            target.end_of_stream()


def test_reflected_hello_is_refused():
    a = Side("a", KEY, b"A" * 16)
    a.decoder.receive_data(a.encoder.encode(a.hello))
    with pytest.raises(RemoteProtocolError, match="own nonce"):
        a.decoder.next_message()


def test_hello_replayed_on_a_new_connection_cannot_carry_anything_after_it():
    a, b = handshake()
    recorded = a.encoder.encode(StatusRequest(1))
    recorded_hello = FrameEncoder(FrameMac(KEY, b"A" * 16)).encode(a.hello)
    victim = Side("b", KEY, b"C" * 16)  # the same peer b, a new connection, a fresh nonce
    victim.decoder.receive_data(recorded_hello)
    assert drain(victim.decoder) == [a.hello]
    assert not victim.mac.confirmed
    victim.decoder.receive_data(recorded)
    with pytest.raises(RemoteProtocolError, match="MAC"):
        drain(victim.decoder)


def test_mac_misuse_is_a_local_error():
    side = Side("a", KEY, b"A" * 16)
    with pytest.raises(LocalProtocolError, match="Hello before"):
        side.encoder.encode(StatusRequest(1))
    side.encoder.encode(side.hello)
    with pytest.raises(LocalProtocolError, match="peer's Hello"):
        side.encoder.encode(StatusRequest(1))
    with pytest.raises(LocalProtocolError, match="exactly one Hello"):
        side.encoder.encode(side.hello)
    with pytest.raises(LocalProtocolError, match="nonce"):
        FrameEncoder(FrameMac(KEY, b"A" * 16)).encode(hello("a", b"Z" * 16))
    with pytest.raises(LocalProtocolError):
        FrameMac(b"short", b"A" * 16)
    with pytest.raises(LocalProtocolError):
        derive_cluster_key(b"too short\n")
    assert derive_cluster_key(b"correct horse battery staple\n") == KEY


def test_session_keys_differ_per_direction_and_connection():
    k = mac_module.session_key
    assert k(KEY, b"A" * 16, b"B" * 16) != k(KEY, b"B" * 16, b"A" * 16)
    assert k(KEY, b"A" * 16, b"B" * 16) != k(KEY, b"A" * 16, b"C" * 16)
    assert k(KEY, b"A" * 16, b"B" * 16) != k(OTHER_KEY, b"A" * 16, b"B" * 16)
