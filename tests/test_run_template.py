"""Reading a run by its template (`wire.run_template.template_run`): what it accepts,
`decode_event` accepts with the same fields, and it never raises; `decode_run` takes it
for the batches a catch-up and a master's push bring."""

from __future__ import annotations

import blake3
import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshstream.clocks import VersionVector
from meshstream.envelope import Event, decode_event
from meshstream.envelope_run import EnvelopeRun
from meshstream.errors import RemoteProtocolError
from meshstream.wire.envelope_batch import decode_run
from meshstream.wire.run_template import run_extent, template_run


def _run(count: int, data: bytes = b"x" * 200, counter: int = 40, writer: str = "n1.abc") -> list[Event]:
    context = VersionVector({"a.peer": 3, writer: counter, "z.peer": 9})  # the writer between two others
    return Event.seal_run("catch-up", writer, counter, context, [(b"k%05d" % i, data, ()) for i in range(count)])


def _resealed(body: bytes) -> bytes:
    return cbor2.dumps([body, blake3.blake3(body).digest()])


def _judged(envelopes: list[bytes]) -> list[Event] | None:
    try:
        return [decode_event(envelope) for envelope in envelopes]
    except RemoteProtocolError:
        return None


def _agrees(envelopes: list[bytes]) -> EnvelopeRun | None:
    """`template_run`'s answer, checked against `decode_event` event by event."""
    run = template_run(envelopes)
    if run is not None:
        expected = _judged(envelopes)
        assert expected is not None, "the template accepted what decode_event rejects"
        got = list(run)
        assert got == expected
        for mine, theirs in zip(got, expected):
            assert (mine.envelope, mine.digest, dict(mine.context.items())) == \
                (theirs.envelope, theirs.digest, dict(theirs.context.items()))
    return run


@pytest.mark.parametrize("data", [b"", b"d", b"y" * 23, b"y" * 24, b"y" * 255, b"y" * 256, b"y" * 5000])
def test_a_sealed_run_is_read_by_its_template(data: bytes) -> None:
    events = _run(30, data)
    run = _agrees([event.envelope for event in events])
    assert run is not None and (run.first, run.last, run.writer) == (41, 70, "n1.abc")
    assert run.context_base == {"a.peer": 3, "z.peer": 9} and run.writer_counts == list(range(40, 70))


def test_decode_run_takes_the_template_for_a_run(monkeypatch) -> None:
    envelopes = [event.envelope for event in _run(10)]
    monkeypatch.setattr("meshstream.wire.envelope_batch._checked_bodies", None)  # the general path would fail
    assert list(decode_run(envelopes)) == [decode_event(envelope) for envelope in envelopes]


def test_counters_crossing_a_head_size_are_read() -> None:
    for counter in (20, 250, 65_530):  # the dot's and the context's heads grow inside the run
        _agrees_and_taken([event.envelope for event in _run(12, counter=counter)])


def _agrees_and_taken(envelopes: list[bytes]) -> None:
    assert _agrees(envelopes) is not None


def test_what_is_not_a_run_in_its_template_is_left_to_the_general_path() -> None:
    run = [event.envelope for event in _run(6)]
    other_writer = [event.envelope for event in _run(2, writer="n2.def")]
    cases = {
        "one event": run[:1],
        "a gap": run[:2] + run[3:],
        "two writers": run[:3] + other_writer,
        "first of the writer": [e.envelope for e in Event.seal_run("s", "n1", 0, VersionVector(),
                                                                   [(b"a", b"", ()), (b"b", b"", ())])],
        "metadata": [Event.sequence("s", b"m", b"", {"content-type": "text/plain"},
                                    _run(1)[0].dot, VersionVector({"n1.abc": 40})).envelope] + run[1:],
        "not bytes": [run[0], bytearray(run[1])],
        "wrong digest": run[:2] + [run[2][:-1] + bytes([run[2][-1] ^ 1])],
        "cut short": run[:2] + [run[2][:40]],
    }
    for name, envelopes in cases.items():
        assert _agrees(envelopes) is None, name


def test_an_over_long_key_is_left_to_the_general_path_which_rejects_it() -> None:
    envelopes = [event.envelope for event in _run(3)]
    body = cbor2.loads(envelopes[1])[0]
    long_key = body.replace(b"\x46k00001", b"\x58\xc9" + b"k" * 201)  # 201 bytes: one more than allowed
    envelopes[1] = _resealed(long_key)
    assert _agrees(envelopes) is None
    with pytest.raises(RemoteProtocolError):
        decode_run(envelopes)


def test_a_key_head_in_a_longer_form_is_read_as_cbor_reads_it() -> None:
    envelopes = [event.envelope for event in _run(3)]
    body = cbor2.loads(envelopes[1])[0]
    envelopes[1] = _resealed(body.replace(b"\x46k00001", b"\x58\x06k00001"))  # valid CBOR, not the shortest
    assert _agrees(envelopes) is not None


def test_heads_in_a_longer_form_in_an_envelope_as_long_as_the_others_are_read_as_cbor_reads_them() -> None:
    """The batch is uniform in length, so only the heads tell that this envelope's key or
    data is laid out differently (what the column-by-column reading must not miss)."""
    longer_forms = {
        "data": (b"\x58\x20" + b"y" * 32, b"\x59\x00\x1f" + b"y" * 31),  # 32 bytes; 31 in a 3-byte head
        "key": (b"\x46k00001", b"\x58\x05k0000"),  # 6 bytes; 5 in a 2-byte head
    }
    for name, (usual, longer) in longer_forms.items():
        envelopes = [event.envelope for event in _run(4, data=b"y" * 32)]
        body = cbor2.loads(envelopes[1])[0]
        assert usual in body, name
        envelopes[1] = _resealed(body.replace(usual, longer))
        assert len(set(map(len, envelopes))) == 1, name
        run = _agrees(envelopes)  # event by event as decode_event reads them
        assert run is not None, name
        expected = decode_event(envelopes[1])
        assert (run.keys[1], run.datas[1]) == (expected.key, expected.data), name


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_damage_to_a_run_is_never_accepted_wrongly(data: st.DataObject) -> None:
    envelopes = [event.envelope for event in _run(5, data=b"d" * data.draw(st.sampled_from([3, 30, 300])))]
    position = data.draw(st.integers(0, 4), label="envelope")
    body = bytearray(cbor2.loads(envelopes[position])[0])
    action = data.draw(st.sampled_from(["flip", "truncate", "insert"]), label="action")
    at = data.draw(st.integers(0, len(body) - 1), label="at")
    if action == "flip":
        body[at] ^= data.draw(st.integers(1, 255), label="mask")
    elif action == "truncate":
        del body[at:]
    else:
        body[at:at] = data.draw(st.binary(min_size=1, max_size=3), label="bytes")
    envelopes[position] = _resealed(bytes(body))  # the digest matches: only the parse can catch it
    _agrees(envelopes)
    if _judged(envelopes) is None:
        with pytest.raises(RemoteProtocolError):
            decode_run(envelopes)



def test_the_extent_of_a_run_is_read_from_its_first_and_last_envelopes() -> None:
    envelopes = [event.envelope for event in _run(6)]
    assert run_extent(envelopes) == ("catch-up", "n1.abc", 46)
    other_writer = [event.envelope for event in _run(2, writer="n2.def")]
    system = [e.envelope for e in Event.seal_run("$topology", "n1", 4, VersionVector({"n1": 4}),
                                                 [(b"a", b"", ()), (b"b", b"", ())])]
    cases = {
        "one event": envelopes[:1],
        "a gap": envelopes[:2] + envelopes[3:],
        "two writers": envelopes[:3] + other_writer[1:],
        "a system stream": system,
        "a bad last envelope": envelopes[:-1] + [envelopes[-1][:-1] + bytes([envelopes[-1][-1] ^ 1])],
        "not bytes": envelopes[:-1] + [bytearray(envelopes[-1])],
    }
    for name, batch in cases.items():
        assert run_extent(batch) is None, name
