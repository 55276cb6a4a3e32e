"""Bulk envelope decoding (`wire.envelope_batch.decode_envelopes`, and `decode_run`, which
returns an `EnvelopeRun` for a run) accepts and rejects exactly what `decode_event` does,
one envelope at a time, and builds the same events."""

from __future__ import annotations

import blake3
import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshstream.clocks import VECTOR_PEERS_MAX, Dot, VersionVector
from meshstream.envelope import Event, decode_event
from meshstream.errors import RemoteProtocolError
from meshstream.envelope_run import EnvelopeRun
from meshstream.wire.envelope_batch import decode_envelopes, decode_run


def _run(count: int, stream: str = "catch-up", writer: str = "n1.abc") -> list[Event]:
    context = VersionVector({"n2.def": 7, "n3.ghi": 2})
    return Event.seal_run(stream, writer, 10, context, [(b"k%05d" % i, b"x" * 200, ()) for i in range(count)])


def _mixed() -> list[Event]:
    events = _run(20) + _run(5, "other", "n2.def")
    events.append(Event.sequence("meta", b"m1", b"d", {"content-type": "text/plain", "n": 3}, Dot("n1.abc", 1),
                                 VersionVector()))
    events.append(Event.sequence("$topology", b"t1", b"fact", {}, Dot("n3.ghi", 4), VersionVector({"n1.abc": 2})))
    events.append(Event.sequence("big", b"b1", b"y" * 70_000, {}, Dot("n1.abc", 1), VersionVector()))
    return events


def _outcome(envelopes: list[bytes]) -> list[Event] | str:
    try:
        return [decode_event(envelope) for envelope in envelopes]
    except RemoteProtocolError:
        return "rejected"


def _same(envelopes: list[bytes]) -> None:
    for decode in decode_envelopes, decode_run:
        _same_by(decode, envelopes)


def _same_by(decode, envelopes: list[bytes]) -> None:
    expected = _outcome(envelopes)
    if expected == "rejected":
        with pytest.raises(RemoteProtocolError):
            decode(envelopes)
        return
    got = list(decode(envelopes))
    assert got == expected
    for mine, theirs in zip(got, expected):
        assert (mine.envelope, mine.digest, mine.metadata) == (theirs.envelope, theirs.digest, theirs.metadata)
        assert type(mine) is Event and type(mine.dot) is Dot and type(mine.context) is VersionVector
        assert dict(mine.context.items()) == dict(theirs.context.items())


def _sealed(fields: list) -> bytes:
    """An envelope around a hand-built body, digest correct."""
    body = cbor2.dumps(fields)
    return _sealed_body(body)


def _sealed_body(body: bytes) -> bytes:
    return cbor2.dumps([body, blake3.blake3(body).digest()])


def test_valid_batches_decode_to_the_same_events() -> None:
    _same([event.envelope for event in _mixed()])
    _same([])


STREAM_OF_RUNS = "catch-up"


def _one_writer_run(count: int, stream: str = "catch-up", writer: str = "n1.abc", first: int = 5) -> list[Event]:
    """What a catch-up of a stream with one master brings: each event in the context of
    the one before."""
    return Event.seal_run(stream, writer, first - 1, VersionVector({writer: first - 2}),
                          [(b"k%05d" % i, b"x" * 200, ()) for i in range(count)])


def test_a_catch_up_batch_decodes_to_a_run_of_the_same_events() -> None:
    events = _one_writer_run(50)
    run = decode_run([event.envelope for event in events])
    assert type(run) is EnvelopeRun and (run.stream, run.writer, run.first, run.last) == ("catch-up", "n1.abc", 5, 54)
    _same([event.envelope for event in events])
    assert run.event_of(b"k00007") == events[7] and run.event_of(b"nope") is None


def test_a_run_after_a_change_of_master_keeps_the_old_writers_entries() -> None:
    events = _run(30)  # writer n1.abc, contexts naming n2.def and n3.ghi too
    run = decode_run([event.envelope for event in events])
    assert type(run) is EnvelopeRun and run.context_base == {"n2.def": 7, "n3.ghi": 2}
    assert run.writer_counts == list(range(10, 40))
    _same([event.envelope for event in events])


def _varying_other_writer() -> list[Event]:
    items = [(b"v%05d" % i, b"x", ()) for i in range(10)]
    return (Event.seal_run("catch-up", "n1.abc", 4, VersionVector({"n1.abc": 3, "n2.def": 1}), items[:5])
            + Event.seal_run("catch-up", "n1.abc", 9, VersionVector({"n1.abc": 8, "n2.def": 2}), items[5:]))


@pytest.mark.parametrize("batch", ["gap", "two writers", "two streams", "metadata", "varying other writer",
                                   "writer not in context", "system"])
def test_batches_that_are_not_runs_decode_to_events(batch: str) -> None:
    events = _one_writer_run(10)
    if batch == "gap":
        events = events[:4] + events[5:]
    elif batch == "two writers":
        events += _one_writer_run(3, writer="n2.def")
    elif batch == "two streams":
        events += _one_writer_run(3, stream="other", first=15)
    elif batch == "metadata":
        events.append(Event.sequence("catch-up", b"m", b"d", {"a": 1}, Dot("n1.abc", 15), VersionVector({"n1.abc": 14})))
    elif batch == "varying other writer":
        events = _varying_other_writer()
    elif batch == "writer not in context":
        events = Event.seal_run(STREAM_OF_RUNS, "n1.abc", 0, VersionVector({"n2.def": 3}), [(b"w", b"x", ())])
        events += Event.seal_run(STREAM_OF_RUNS, "n1.abc", 1, VersionVector({"n2.def": 3}), [(b"w2", b"x", ())])
    else:
        events = _one_writer_run(10, stream="$topology")
    assert type(decode_run([event.envelope for event in events])) is list
    _same([event.envelope for event in events])


RUN_GOOD = [1, "catch-up", b"k", b"data", {}, ["n1.abc", 9], ["n1.abc", 8]]
RUN_BAD = [
    (0, 2), (0, True), (1, ""), (1, b"catch-up"), (1, "bad\x00name"), (2, b""), (2, "k"), (2, b"k" * 201),
    (3, "data"), (4, []), (4, {"a": 1.5}), (5, ["n1.abc", 0]), (5, ["n1.abc", True]), (5, ["", 9]),
    (5, [["n1.abc"], 9]), (5, ["n1.abc", 9, 1]), (6, ["n1.abc", 0]), (6, ["n1.abc", True]), (6, [["x"], 8]),
    (6, ["n1.abc"]), (6, {"n1.abc": 8}), (6, ["n1.abc", 2**63]), (5, ["n1.abc", 2**63]),
]


@pytest.mark.parametrize("index", range(len(RUN_BAD)))
def test_a_bad_field_inside_a_run_is_rejected(index: int) -> None:
    position, value = RUN_BAD[index]
    envelopes = [event.envelope for event in _one_writer_run(8)]  # dots 5..12
    fields = [*RUN_GOOD]
    fields[position] = value
    envelopes[4] = _sealed(fields)
    with pytest.raises(RemoteProtocolError):
        decode_run(envelopes)
    _same(envelopes)


GOOD = [1, "s", b"k", b"data", {}, ["n1", 5], ["n1", 4, "n2", 9]]
BAD_FIELDS = [
    [2, *GOOD[1:]],  # version
    [True, *GOOD[1:]],
    [1, "", *GOOD[2:]],  # stream
    [1, "bad\x00name", *GOOD[2:]],
    [1, b"s", *GOOD[2:]],
    [1, "s", b"", *GOOD[3:]],  # key
    [1, "s", "k", *GOOD[3:]],
    [1, "s", b"k" * 201, *GOOD[3:]],
    [1, "s", b"k", "data", *GOOD[4:]],  # data
    [*GOOD[:4], [], *GOOD[5:]],  # metadata
    [*GOOD[:4], {"a": 1.5}, *GOOD[5:]],
    [*GOOD[:4], {"b": 1, "a": 2}, *GOOD[5:]],
    [*GOOD[:5], ["n1", 0], GOOD[6]],  # dot
    [*GOOD[:5], ["n1", True], GOOD[6]],
    [*GOOD[:5], ["", 1], GOOD[6]],
    [*GOOD[:5], [["n1"], 1], GOOD[6]],
    [*GOOD[:5], ["n1", 1, 2], GOOD[6]],
    [*GOOD[:6], ["n2", 1, "n1", 1]],  # context: unsorted
    [*GOOD[:6], ["n1", 1, "n1", 2]],
    [*GOOD[:6], ["n1", 0]],
    [*GOOD[:6], ["n1", True]],
    [*GOOD[:6], [["x"], 1]],
    [*GOOD[:6], ["n1"]],
    [*GOOD[:6], {"n1": 1}],
    GOOD[:6],  # 6 fields
    {"not": "a list"},
]


@pytest.mark.parametrize("index", range(len(BAD_FIELDS)))
def test_each_bad_field_is_rejected_alone_and_after_good_events(index: int) -> None:
    bad = _sealed(BAD_FIELDS[index])
    good = [event.envelope for event in _run(3)] + [_sealed(GOOD)]
    _same([bad])
    _same(good + [bad])
    _same(good)


def test_a_known_context_with_a_bad_counter_is_still_rejected() -> None:
    # The second event reuses the first one's context peers (checked once per batch).
    later = [*GOOD[:5], ["n1", 6], ["n1", 0, "n2", 9]]
    _same([_sealed(GOOD), _sealed(later)])
    later = [*GOOD[:5], ["n1", 0], GOOD[6]]
    _same([_sealed(GOOD), _sealed(later)])


def test_bodies_that_are_not_exactly_one_item_are_rejected() -> None:
    good = cbor2.dumps(GOOD)
    tagged = cbor2.dumps([1, "s", b"k", b"data", {}, ["n1", 5], ["n1", cbor2.CBORTag(4000, 4)]])
    for body in (good + b"\x00", good[:-1], tagged, b"\xd9\x0f\xa0" + good):
        _same([_sealed_body(body)])
        _same([_sealed_body(good), _sealed_body(body), _sealed_body(good)])
    # A truncated body followed by the bytes it lacks: one item spanning two bodies.
    _same([_sealed_body(good[:-3]), _sealed_body(good[-3:])])


def test_wrong_digest_and_odd_envelope_shapes() -> None:
    envelope = _run(1)[0].envelope
    flipped = envelope[:-1] + bytes([envelope[-1] ^ 1])
    _same([flipped])
    body = cbor2.dumps(GOOD)
    digest = blake3.blake3(body).digest()
    long_head = b"\x82\x59" + len(body).to_bytes(2, "big") + body + b"\x58\x20" + digest  # not minimal
    _same([long_head])
    indefinite = b"\x9f" + cbor2.dumps(body) + cbor2.dumps(digest) + b"\xff"
    _same([indefinite, envelope])
    _same([b"", envelope])
    _same([cbor2.dumps([body, digest, 1])])
    larger = Event.seal_run("s", "n1", 0, VersionVector(), [(b"k", b"x" * 300, ())])[0].envelope
    assert envelope[:2] == b"\x82\x58" and larger[:2] == b"\x82\x59"  # the two usual heads
    for usual in (envelope, larger):
        for cut in range(1, 40):  # cut short anywhere in or near the head
            _same([usual[:cut], usual])
        for change in (-1, 1, 40):  # a body length that does not fit the envelope
            length = len(usual) - (37 if usual[1] == 0x58 else 38) + change
            head = bytes([min(length, 255)]) if usual[1] == 0x58 else length.to_bytes(2, "big")
            _same([usual[:2] + head + usual[2 + len(head):]])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_damage_is_judged_as_decode_event_judges_it(data: st.DataObject) -> None:
    envelopes = [event.envelope for event in _mixed()[:6]] + [_sealed(GOOD)]
    position = data.draw(st.integers(0, len(envelopes) - 1), label="envelope")
    target = bytearray(envelopes[position])
    action = data.draw(st.sampled_from(["flip", "truncate", "insert", "reseal"]), label="action")
    at = data.draw(st.integers(0, len(target) - 1), label="at")
    if action == "flip":
        target[at] ^= data.draw(st.integers(1, 255), label="mask")
    elif action == "truncate":
        del target[at:]
    elif action == "insert":
        target[at:at] = data.draw(st.binary(min_size=1, max_size=4), label="bytes")
    else:  # damage the body, then seal it again: only the field checks can catch it
        body = bytearray(cbor2.loads(bytes(target))[0])
        spot = data.draw(st.integers(0, len(body) - 1), label="body_at")
        body[spot] ^= data.draw(st.integers(1, 255), label="body_mask")
        target = bytearray(_sealed_body(bytes(body)))
    envelopes[position] = bytes(target)
    _same(envelopes)


@pytest.mark.parametrize("context", ["unsorted", "twice", "bad name", "zero", "too many peers"])
def test_a_run_whose_every_context_is_bad_is_rejected(context: str) -> None:
    envelopes = []
    crowd = [entry for number in range(VECTOR_PEERS_MAX) for entry in ("p%05d" % number, 1)]
    for counter in range(5, 12):
        entries = {"unsorted": ["n2.def", 3, "n1.abc", counter - 1], "twice": ["n1.abc", counter - 1] * 2,
                   "bad name": ["", 3, "n1.abc", counter - 1], "zero": ["n1.abc", counter - 1, "n2.def", 0],
                   "too many peers": ["n1.abc", counter - 1, *crowd]}[context]
        envelopes.append(_sealed([1, "catch-up", b"k%d" % counter, b"d", {}, ["n1.abc", counter], entries]))
    with pytest.raises(RemoteProtocolError):
        decode_run(envelopes)
    _same(envelopes)
