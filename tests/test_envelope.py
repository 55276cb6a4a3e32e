"""The event envelope: round trips, canonical bytes, and rejection of any tampering."""

from __future__ import annotations

import blake3
import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshstream.cbor import canonical_items
from meshstream.clocks import Dot, VersionVector
from meshstream.envelope import ENVELOPE_VERSION, Event, decode_event
from meshstream.errors import LocalProtocolError, RemoteProtocolError

PEERS = ["n1", "n2", "n3", "peer-4"]
stream_names = st.one_of(
    st.sampled_from(["orders", "$topology", "a", "s" * 200, "émoji ✓"]),
    st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Cn", "Co", "Cf", "Zs")), min_size=1, max_size=200),
)
keys = st.binary(min_size=1, max_size=200)
metadata_values = st.one_of(st.text(max_size=20), st.integers(-(2**63), 2**63 - 1), st.binary(max_size=20))
metadata = st.dictionaries(st.text(min_size=1, max_size=10), metadata_values, max_size=5)
dots = st.builds(Dot, st.sampled_from(PEERS), st.integers(1, 2**63 - 1))
contexts = st.dictionaries(st.sampled_from(PEERS), st.integers(0, 2**63 - 1)).map(VersionVector)
events = st.builds(Event.sequence, stream_names, keys, st.binary(max_size=300), metadata, dots, contexts)


@given(events)
def test_envelope_round_trip(event):
    decoded = decode_event(event.envelope)
    assert decoded == event
    assert decoded.envelope == event.envelope
    assert decoded.metadata_dict() == event.metadata_dict()


@given(events)
def test_body_is_canonical_cbor_and_digest_is_blake3_of_it(event):
    body, digest = cbor2.loads(event.envelope)
    assert digest == event.digest == blake3.blake3(body).digest()
    fields = cbor2.loads(body)
    assert fields[0] == ENVELOPE_VERSION
    assert body == cbor2.dumps(fields, canonical=True)


@given(events, st.data())
def test_any_bit_flip_is_rejected(event, data):
    bit = data.draw(st.integers(0, len(event.envelope) * 8 - 1), label="bit")
    flipped = bytearray(event.envelope)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(RemoteProtocolError):
        decode_event(bytes(flipped))


@given(events, st.data())
def test_truncation_and_trailing_bytes_are_rejected(event, data):
    cut = data.draw(st.integers(0, len(event.envelope) - 1), label="cut")
    with pytest.raises(RemoteProtocolError):
        decode_event(event.envelope[:cut])
    with pytest.raises(RemoteProtocolError):
        decode_event(event.envelope + b"\x00")


@given(metadata, st.randoms(use_true_random=False))
def test_metadata_order_does_not_change_the_digest(meta, rng):
    items = list(meta.items())
    rng.shuffle(items)
    first = Event.sequence("s", b"k", b"d", meta, Dot("n1", 1), VersionVector())
    second = Event.sequence("s", b"k", b"d", dict(items), Dot("n1", 1), VersionVector())
    assert first.digest == second.digest and first.envelope == second.envelope
    assert [name for name, _ in first.metadata] == list(canonical_items(dict(meta)))


def test_resealed_body_with_valid_digest_but_bad_fields_is_rejected():
    for fields in (
        [ENVELOPE_VERSION + 1, "s", b"k", b"", {}, ["n1", 1], []],
        [ENVELOPE_VERSION, "", b"k", b"", {}, ["n1", 1], []],
        [ENVELOPE_VERSION, "s", b"", b"", {}, ["n1", 1], []],
        [ENVELOPE_VERSION, "s", b"k", "text", {}, ["n1", 1], []],
        [ENVELOPE_VERSION, "s", b"k", b"", {"bb": 1, "a": 1}, ["n1", 1], []],  # not canonical
        [ENVELOPE_VERSION, "s", b"k", b"", {"a": 1.5}, ["n1", 1], []],
        [ENVELOPE_VERSION, "s", b"k", b"", {}, ["n1", 0], []],
        [ENVELOPE_VERSION, "s", b"k", b"", {}, ["n1", 1], ["b", 1, "a", 1]],
        [ENVELOPE_VERSION, "s", b"k", b""],
    ):
        body = cbor2.dumps(fields)
        with pytest.raises(RemoteProtocolError):
            decode_event(cbor2.dumps([body, blake3.blake3(body).digest()]))


@pytest.mark.parametrize(("stream", "key", "meta"), [
    ("", b"k", {}),
    ("s" * 201, b"k", {}),
    ("bad\nname", b"k", {}),
    ("s", b"", {}),
    ("s", b"k" * 201, {}),
    ("s", "text-key", {}),
    ("s", b"k", {"flag": True}),
    ("s", b"k", {"big": 2**63}),
    ("s", b"k", {"": 1}),
    ("s", b"k", {"f": 1.5}),
])
def test_sequence_refuses_invalid_fields(stream, key, meta):
    with pytest.raises(LocalProtocolError):
        Event.sequence(stream, key, b"data", meta, Dot("n1", 1), VersionVector())


def test_user_streams_may_not_be_system_names_but_events_may():
    from meshstream.ids import validate_stream_name

    with pytest.raises(LocalProtocolError):
        validate_stream_name("$topology")
    assert Event.sequence("$topology", b"k", b"", {}, Dot("n1", 1), VersionVector()).stream == "$topology"


@given(stream_names, st.sampled_from(PEERS), st.integers(0, 50), contexts,
       st.lists(st.tuples(keys, st.binary(max_size=300), metadata), min_size=1, max_size=5))
def test_seal_run_gives_the_bytes_of_sequence_per_event(stream, writer, counter, context, items):
    """A master's run: each event in the context of the one before (as Node sequences)."""
    run = Event.seal_run(stream, writer, counter, context,
                         [(key, data, tuple(Event.sequence(stream, key, data, meta, Dot(writer, 1), context).metadata))
                          for key, data, meta in items])
    counters = dict(context)
    for (key, data, meta), event in zip(items, run):
        if counter:
            counters[writer] = counter
        counter += 1
        expected = Event.sequence(stream, key, data, meta, Dot(writer, counter), VersionVector(counters))
        assert (event, event.envelope) == (expected, expected.envelope)
        assert list(event.context) == list(expected.context) and hash(event) == hash(expected)
        assert decode_event(event.envelope) == expected


HEAD_EDGES = [0, 1, 22, 23, 24, 254, 255, 256, 65534, 65535, 65536, 2**32 - 2, 2**32 - 1, 2**32, 2**63 - 10]


@given(st.sampled_from(HEAD_EDGES), st.sampled_from([0, 23, 24, 255, 256, 65535, 65536, 70_000]),
       st.sampled_from([1, 23, 24, 200]), contexts, st.sampled_from(PEERS), st.booleans())
def test_seal_run_bytes_across_cbor_head_widths(counter, data_bytes, key_bytes, context, writer, with_meta):
    """seal_run joins bodies from CBOR heads it writes itself: at every head-width edge of
    counters, data and key lengths they must be the encoder's bytes."""
    meta = (("a", 1), ("bb", b"x")) if with_meta else ()
    items = [(b"k" * key_bytes, b"d" * data_bytes, meta), (b"j" * key_bytes, b"", ())]
    counters = dict(context)
    for offset, (event, (key, data, metadata)) in enumerate(zip(Event.seal_run("s", writer, counter, context, items), items)):
        if counter + offset:
            counters[writer] = counter + offset
        expected = Event.sequence("s", key, data, metadata, Dot(writer, counter + offset + 1), VersionVector(counters))
        assert event.envelope == expected.envelope and event == expected


@given(events, st.sampled_from([0, 1, 2]))
def test_envelopes_with_wide_length_heads_decode_the_same(event, widen):
    """Non-minimal (but valid) CBOR heads around the body decode as the minimal ones."""
    body, digest = cbor2.loads(event.envelope)
    head = [b"\x59" + len(body).to_bytes(2, "big"), b"\x5a" + len(body).to_bytes(4, "big"),
            b"\x5b" + len(body).to_bytes(8, "big")][widen]
    wide = b"\x82" + head + body + b"\x58\x20" + digest
    assert decode_event(wide) == event
    with pytest.raises(RemoteProtocolError):
        decode_event(wide[:-1] + bytes([wide[-1] ^ 1]))
    with pytest.raises(RemoteProtocolError):
        decode_event(b"\x82" + head + body + b"\x59\x00\x20" + digest + b"\x00")
