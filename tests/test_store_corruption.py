"""Flipped bytes in a segment: detected on read and by scrub, other records still served,
repaired by a later append of the same event; `run_verify` names every bad record."""

from __future__ import annotations

import io
import json
import random

import pytest

from meshstream.clocks import VersionVector
from meshstream.envelope import Event
from meshstream.errors import CorruptRecord
from meshstream.store.api import AppendResult
from meshstream.store import records
from meshstream.store.memory import MemoryStore
from meshstream.store.records import HEADER_BYTES
from meshstream.store.segment import SegmentStore
from meshstream.store.verify import run_verify

EVENTS = 40


def chain(count: int) -> list[Event]:
    vector, events = VersionVector(), []
    for number in range(count):
        following, dot = vector.increment("n1")
        events.append(Event.sequence("s", b"key-%d" % number, bytes([number]) * 150, {}, dot, vector))
        vector = following
    return events


def build(directory: str) -> list[Event]:
    store = SegmentStore.open(directory)
    events = chain(EVENTS)
    store.append_batch(events)
    store.close()
    return events


def flip(segment_path, offset: int) -> None:
    with open(segment_path, "r+b") as file:
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ 0x40]))


def build_and_damage_one(directory, rng: random.Random) -> tuple[list[Event], list[int], int]:
    """A store of EVENTS events with one byte of one record (not the last: that one may be
    a torn tail) flipped: (events, record offsets, the damaged record's position)."""
    events = build(str(directory))
    offsets = record_offsets(events)
    victim = rng.randrange(1, EVENTS - 1)
    flip(directory / "00000001.seg", offsets[victim] + rng.randrange(HEADER_BYTES + len(events[victim].envelope)))
    return events, offsets, victim


def record_offsets(events: list[Event]) -> list[int]:
    offsets, position = [], 0
    for event in events:
        offsets.append(position)
        position += HEADER_BYTES + len(event.envelope)
    return offsets


@pytest.mark.parametrize("snapshot", [True, False])
def test_flipped_byte_anywhere_is_detected_and_others_served(tmp_path, snapshot):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for trial in range(6):
        directory = tmp_path / f"d{trial}"
        events, offsets, victim = build_and_damage_one(directory, rng)
        if not snapshot:
            (directory / "index.snapshot").unlink()
        store = SegmentStore.open(str(directory))
        served = store.read("s", VersionVector(), 1000)
        served_keys = {event.key for event in served}
        context = f"seed={seed} trial={trial} victim={victim}"
        assert served == [e for e in events if e.key in served_keys], context
        assert events[victim] not in served and len(served) == EVENTS - 1, context
        errors = store.corrupt_records()
        assert [error.offset for error in errors] == [offsets[victim]], context
        assert errors[0].segment == "00000001.seg"
        if snapshot:  # with the index we know which dot it was: it leaves the vector, repair works
            assert store.version_vector("s") == VersionVector({"n1": victim}), context
            with pytest.raises(CorruptRecord):
                store.get("s", events[victim].key)
            assert store.append_batch([events[victim]], on_conflict="resolve") == [AppendResult.REPAIRED]
            assert store.version_vector("s") == VersionVector({"n1": EVENTS}), context
            assert store.read("s", VersionVector(), 1000) == events, context
            assert store.corrupt_records() == []
        store.close()


def test_a_partner_is_never_sent_a_corrupt_envelope(tmp_path):
    """The anti-entropy read path checks digests without decoding: a flipped byte in a
    body or in its digest leaves that envelope out and marks the record corrupt."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for trial in range(6):
        directory = tmp_path / f"d{trial}"
        events, offsets, victim = build_and_damage_one(directory, rng)
        store = SegmentStore.open(str(directory))
        context = f"seed={seed} trial={trial} victim={victim}"
        sent = store.envelopes_missing("s", VersionVector(), 1000)
        assert sent == [e.envelope for i, e in enumerate(events) if i != victim], context
        assert [error.offset for error in store.corrupt_records()] == [offsets[victim]], context
        store.close()


def test_scrub_finds_corruption_before_any_read(tmp_path):
    directory = tmp_path / "data"
    events = build(str(directory))
    offsets = record_offsets(events)
    flip(directory / "00000001.seg", offsets[7] + 100)
    store = SegmentStore.open(str(directory))
    found = []
    while len(found) < 1 and store.scrub(10):
        pass
    found = store.corrupt_records()
    assert [(e.segment, e.offset) for e in found] == [("00000001.seg", offsets[7])]
    assert not store.has_dot("s", events[7].dot)
    store.close()


def test_repaired_record_survives_reopen(tmp_path):
    directory = tmp_path / "data"
    events = build(str(directory))
    flip(directory / "00000001.seg", record_offsets(events)[3] + 60)
    store = SegmentStore.open(str(directory))
    store.read("s", VersionVector(), 1000)
    store.append_batch([events[3]], on_conflict="resolve")
    store.close()
    for remove_snapshot in (False, True):
        if remove_snapshot:
            (directory / "index.snapshot").unlink()
        reopened = SegmentStore.open(str(directory))
        assert reopened.read("s", VersionVector(), 1000) == events
        reopened.close()


def test_memory_store_damage_behaves_like_disk():
    store = MemoryStore()
    events = chain(5)
    store.append_batch(events)
    assert store.damage("s", events[2].key)
    assert store.read("s", VersionVector(), 10) == events[:2] + events[3:]
    assert store.version_vector("s") == VersionVector({"n1": 2})
    assert store.append_batch([events[2]]) == [AppendResult.REPAIRED]
    assert store.read("s", VersionVector(), 10) == events


def test_run_verify_exit_codes_and_names_every_bad_record(tmp_path):
    directory = tmp_path / "data"
    events = build(str(directory))
    out = io.StringIO()
    assert run_verify(str(directory), False, out) == 0, out.getvalue()
    offsets = record_offsets(events)
    flip(directory / "00000001.seg", offsets[4] + 30)
    flip(directory / "00000001.seg", offsets[20] + 2)  # the magic: resynchronise on the next record
    out = io.StringIO()
    assert run_verify(str(directory), True, out) == 1
    report = json.loads(out.getvalue())
    assert [(bad["segment"], bad["offset"]) for bad in report["corrupt"]] == [
        ("00000001.seg", offsets[4]), ("00000001.seg", offsets[20])]
    assert report["events"] == EVENTS - 2
    out = io.StringIO()
    assert run_verify(str(directory), False, out) == 1
    assert f"offset {offsets[4]}" in out.getvalue() and f"offset {offsets[20]}" in out.getvalue()
    out = io.StringIO()
    assert run_verify(str(tmp_path / "missing"), False, out) == 2
    assert "cannot read data directory" in out.getvalue()


def test_verify_reports_torn_tail_as_clean(tmp_path):
    directory = tmp_path / "data"
    build(str(directory))
    segment = directory / "00000001.seg"
    segment.write_bytes(segment.read_bytes()[:-7])
    out = io.StringIO()
    assert run_verify(str(directory), True, out) == 0
    assert json.loads(out.getvalue())["torn_tail"]["segment"] == "00000001.seg"


def _uniform_chain(count: int) -> list[Event]:
    """Events whose records are all one length: fixed keys and data, counters 100 on
    (every counter and context entry a two-byte CBOR head)."""
    vector, events = VersionVector({"n1": 99}), []
    for number in range(count):
        following, dot = vector.increment("n1")
        events.append(Event.sequence("s", b"key-%04d" % number, bytes([number]) * 150, {}, dot, vector))
        vector = following
    return events


def test_scrub_by_columns_passes_sound_records_and_names_a_flipped_one(tmp_path, monkeypatch):
    """A scrub slice of records all of one length is checked by columns
    (`records.all_sound`); a flipped byte anywhere sends it record by record, which names
    the damaged record and no other."""
    columns = []
    all_sound = records.all_sound
    monkeypatch.setattr(records, "all_sound", lambda *args: columns.append(all_sound(*args)) or columns[-1])
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for trial in range(8):
        directory = tmp_path / f"d{trial}"
        store = SegmentStore.open(str(directory))
        events = _uniform_chain(EVENTS)
        store.append_batch(events)
        store.close()
        assert len({len(e.envelope) for e in events}) == 1
        offsets = record_offsets(events)
        victim = rng.randrange(1, EVENTS - 1)
        at = offsets[victim] + rng.randrange(HEADER_BYTES + len(events[victim].envelope))
        if trial:
            flip(directory / "00000001.seg", at)
        store = SegmentStore.open(str(directory))
        columns.clear()
        while store.scrub(EVENTS):
            pass
        found = [error.offset for error in store.corrupt_records()]
        context = f"seed={seed} trial={trial} victim={victim} at={at}"
        assert found == ([offsets[victim]] if trial else []), context
        assert columns and columns[0] is (trial == 0), context
        store.close()
