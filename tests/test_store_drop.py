"""Dropping streams from a store (`drop_streams`): the contract on both stores, and the
segment log's durability: a reopened store never brings a dropped stream back, and a
crash in the middle of the drop record leaves the data or nothing, never a corrupt store."""

from __future__ import annotations

import os

import pytest

from meshstream.clocks import Dot, VersionVector
from meshstream.errors import LocalProtocolError
from meshstream.store import records
from meshstream.store.api import AppendResult
from meshstream.store.memory import MemoryStore
from meshstream.store.segment import SNAPSHOT_NAME, SegmentStore, list_segments, segment_name
from meshstream.store.verify import verify_directory
from tests.test_store_contract import chain, event

R = AppendResult


@pytest.fixture(params=["memory", "segment"])
def store(request, tmp_path):
    made = MemoryStore() if request.param == "memory" else SegmentStore.open(str(tmp_path / "data"))
    yield made
    made.close()


def test_drop_forgets_the_stream_and_keeps_the_others(store):
    kept, dropped = chain("kept", "n1", 4), chain("gone", "n1", 5)
    store.append_batch(kept + dropped)
    before = store.shard_digest(0, 1)
    assert store.drop_streams(["gone"]) is True
    assert store.read("gone", VersionVector(), 100) == []
    assert store.version_vector("gone") == VersionVector()
    assert store.event_count("gone") == 0 and store.streams() == ["kept"]
    assert store.get("gone", dropped[0].key) is None and not store.has_dot("gone", Dot("n1", 1))
    assert store.events_missing("gone", VersionVector(), 100) == []
    assert store.read("kept", VersionVector(), 100) == kept
    assert store.shard_digest(0, 1) != before
    assert store.scrub(1000) == [] and store.corrupt_records() == []


def test_a_dropped_stream_takes_its_events_again(store):
    events = chain("s", "n1", 6)
    store.append_batch(events[:4])
    assert store.drop_streams(["s"])
    assert store.append_batch(events, on_conflict="resolve") == [R.STORED] * 6
    assert store.read("s", VersionVector(), 100) == events
    assert store.version_vector("s") == VersionVector({"n1": 6})
    assert store.append_batch(events[:1], on_conflict="resolve") == [R.DUPLICATE]


def test_drop_is_refused_for_system_streams_and_waits_for_a_prepared_batch(store):
    with pytest.raises(LocalProtocolError):
        store.drop_streams(["$topology"])
    store.append_batch(chain("s", "n1", 2))
    prepared = store.prepare_batch([event("s", b"late", dot=Dot("n2", 1))])
    assert store.drop_streams(["s"]) is False  # a batch is on its way: try later
    store.write_prepared(prepared)
    store.commit_prepared(prepared)
    assert store.drop_streams(["s", "unknown"]) is True
    assert store.event_count("s") == 0
    assert store.drop_streams(["s"]) is True  # nothing left: a no-op


def test_memory_store_frees_the_dropped_events():
    store = MemoryStore()
    store.append_batch(chain("s", "n1", 3))
    store.drop_streams(["s"])
    assert all(record is None for record in store._records)


def _fill(directory: str):
    store = SegmentStore.open(directory)
    kept, dropped = chain("kept", "n1", 20), chain("gone", "n1", 30)
    store.append_batch(kept)
    store.append_batch(dropped)
    return store, kept, dropped


@pytest.mark.parametrize("snapshot", [True, False])
def test_a_dropped_stream_stays_dropped_after_reopen(tmp_path, snapshot):
    directory = str(tmp_path / "data")
    store, kept, dropped = _fill(directory)
    assert store.drop_streams(["gone"])
    again = chain("gone", "n2", 3)
    store.append_batch(again)
    store.close()
    if not snapshot:
        os.remove(os.path.join(directory, SNAPSHOT_NAME))
    reopened = SegmentStore.open(directory)
    try:
        assert reopened.read("gone", VersionVector(), 100) == again
        assert reopened.version_vector("gone") == VersionVector({"n2": 3})
        assert reopened.read("kept", VersionVector(), 100) == kept
        assert reopened.corrupt_records() == [] and reopened.scrub(10_000) == []
    finally:
        reopened.close()
    assert verify_directory(directory).clean


def test_a_drop_after_the_last_snapshot_is_replayed(tmp_path):
    directory = str(tmp_path / "data")
    store, kept, _dropped = _fill(directory)
    store.checkpoint()
    assert store.drop_streams(["gone"])
    store._lock_fd, lock = -1, store._lock_fd  # a crash: no checkpoint on the way out
    os.close(lock)
    reopened = SegmentStore.open(directory)
    try:
        assert reopened.recovery["snapshot"] and reopened.event_count("gone") == 0
        assert reopened.read("kept", VersionVector(), 100) == kept
    finally:
        reopened.close()


def test_a_crash_inside_the_drop_record_leaves_the_data_or_nothing(tmp_path):
    directory = str(tmp_path / "data")
    store, kept, dropped = _fill(directory)
    store.close()
    path = os.path.join(directory, segment_name(list_segments(directory)[-1]))
    size = os.path.getsize(path)
    record = records.encode_drop_record("gone")
    for cut in [*range(0, len(record), 3), len(record)]:
        with open(path, "r+b") as file:  # the drop record written up to `cut` bytes, then a crash
            file.truncate(size)
            file.seek(size)
            file.write(record[:cut])
        if os.path.exists(os.path.join(directory, SNAPSHOT_NAME)):
            os.remove(os.path.join(directory, SNAPSHOT_NAME))
        reopened = SegmentStore.open(directory)
        try:
            held = reopened.read("gone", VersionVector(), 100)
            assert held == (dropped if cut < len(record) else []), cut
            assert reopened.read("kept", VersionVector(), 100) == kept
            assert reopened.corrupt_records() == [], cut
        finally:
            reopened.close()
