"""`records.read_run_envelopes` (a partner's catch-up batch) and `records.read_run` (a
reader's page): records of one length are checked column by column (`_uniform_envelopes`);
whatever is damaged, the answer is the record-by-record pass's, which names each unsound
record."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meshstream.clocks import VersionVector
from meshstream.envelope import Event
from meshstream.store import records


def _blob(count: int, data: bytes = b"x" * 120) -> tuple[bytes, list[int], list[int]]:
    events = Event.seal_run("s", "n1", 300, VersionVector({"n1": 300}),
                            [(b"key-%04d" % i, data, ()) for i in range(count)])
    encoded = [records.encode_event_record(event) for event in events]
    ats, at = [], 0
    for record in encoded:
        ats.append(at)
        at += len(record)
    return b"".join(encoded), ats, [len(record) for record in encoded]


def test_records_of_one_length_are_read_by_columns() -> None:
    data, ats, lengths = _blob(40)
    assert len(set(lengths)) == 1
    columns = records._uniform_envelopes(data, ats, lengths)
    assert columns is not None and (columns[0], []) == _reference(data, ats, lengths)
    assert records.read_run(data, ats, lengths) == _reference(data, ats, lengths, records.read_run)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_damage_gets_the_record_by_record_answer(data_strategy: st.DataObject) -> None:
    data, ats, lengths = _blob(8)
    damaged = bytearray(data)
    at = data_strategy.draw(st.integers(0, len(data) - 1), label="at")
    damaged[at] ^= data_strategy.draw(st.integers(1, 255), label="mask")
    blob = bytes(damaged)
    expected = _reference(blob, ats, lengths)
    assert records.read_run_envelopes(blob, ats, lengths) == expected
    record = max(i for i, start in enumerate(ats) if start <= at)
    assert expected[1] == [record], f"the flip at {at} is in record {record}"
    assert records.read_run(blob, ats, lengths) == _reference(blob, ats, lengths, records.read_run)


def _reference(blob: bytes, ats: list[int], lengths: list[int], reader=None):
    """What `reader` (read_run_envelopes) answers record by record, without the columns."""
    saved = records._uniform_envelopes
    records._uniform_envelopes = lambda *_: None
    try:
        return (reader or records.read_run_envelopes)(blob, ats, lengths)
    finally:
        records._uniform_envelopes = saved


def test_short_data_and_odd_lengths_are_left_to_the_record_by_record_pass() -> None:
    data, ats, lengths = _blob(5)
    assert records._uniform_envelopes(data[:-1], ats, lengths) is None
    assert records._uniform_envelopes(data, ats, [lengths[0]] * 4 + [lengths[0] + 1]) is None
    assert records._uniform_envelopes(data, [], []) is None


def test_an_entry_shorter_than_a_header_is_unsound_not_an_exception() -> None:
    data, ats, lengths = _blob(3)
    for reader in (records.read_run, records.read_run_envelopes):
        loaded, bad = reader(data, ats, [lengths[0], records.HEADER_BYTES - 2, lengths[2]])
        assert bad == [1] and loaded[1] == "bad record header", reader.__name__
    assert records.read_event(data, -1, lengths[0]) == "bad record header"
