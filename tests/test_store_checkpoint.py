"""The store's own checkpoints as it grows: written by a background thread from a copy of
the indexes, so commits go on meanwhile; a write that fails loses nothing."""

from __future__ import annotations

import logging
import os
import threading

import pytest

from meshstream.clocks import Dot, VersionVector
from meshstream.envelope import Event
from meshstream.store import segment
from meshstream.store.segment import SegmentStore

BATCH_EVENTS = 40


def _batch(number: int) -> list[Event]:
    first = number * BATCH_EVENTS + 1
    return [Event.sequence("grown", f"k{counter}".encode(), b"v" * 50, {}, Dot("n1", counter),
                           VersionVector({"n1": counter - 1}))
            for counter in range(first, first + BATCH_EVENTS)]


def _crash(store: SegmentStore) -> None:
    """Release the directory as a killed process would: no checkpoint on the way out."""
    store._join_checkpoint()
    store._lock_fd, lock = -1, store._lock_fd
    os.close(lock)


@pytest.fixture(autouse=True)
def _small_snapshot_interval(monkeypatch):
    monkeypatch.setattr(segment, "SNAPSHOT_EVERY_RECORDS_MIN", 100)
    monkeypatch.setattr(segment, "SNAPSHOT_EVERY_FRACTION", 1_000_000)


def test_commits_go_on_while_a_checkpoint_is_being_written(tmp_path, monkeypatch):
    directory = str(tmp_path / "data")
    store = SegmentStore.open(directory)
    release = threading.Event()
    started = threading.Event()
    write = SegmentStore._write_snapshot

    def slow_write(self, header, sections):
        started.set()
        assert release.wait(10), "the test never released the checkpoint"
        write(self, header, sections)

    monkeypatch.setattr(SegmentStore, "_write_snapshot", slow_write)
    for number in range(3):  # 120 records: the third commit starts a checkpoint
        store.append_batch(_batch(number), on_conflict="resolve")
    assert started.wait(10), "no checkpoint started after 120 new records"
    for number in range(3, 6):  # committed while the snapshot waits to be written
        store.append_batch(_batch(number), on_conflict="resolve")
    assert store.version_vector("grown") == VersionVector({"n1": 6 * BATCH_EVENTS})
    release.set()
    _crash(store)
    reopened = SegmentStore.open(directory)
    try:
        assert reopened.recovery["snapshot"], reopened.recovery
        assert 0 < reopened.recovery["replayed"] < 6 * BATCH_EVENTS, reopened.recovery
        assert len(reopened.read("grown", VersionVector(), 1000)) == 6 * BATCH_EVENTS
    finally:
        reopened.close()


def test_a_checkpoint_that_cannot_be_written_loses_nothing(tmp_path, monkeypatch, caplog):
    directory = str(tmp_path / "data")
    store = SegmentStore.open(directory)

    write = SegmentStore._write_snapshot

    def failing_write(self, header, sections):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SegmentStore, "_write_snapshot", failing_write)
    with caplog.at_level(logging.WARNING, logger="meshstream.store"):
        for number in range(4):
            store.append_batch(_batch(number), on_conflict="resolve")
        store._join_checkpoint()
    assert any("index snapshot not written" in record.message for record in caplog.records)
    _crash(store)
    monkeypatch.setattr(SegmentStore, "_write_snapshot", write)  # the disk has room again
    reopened = SegmentStore.open(directory)
    try:
        assert not reopened.recovery["snapshot"], reopened.recovery
        assert len(reopened.read("grown", VersionVector(), 1000)) == 4 * BATCH_EVENTS
    finally:
        reopened.close()


def test_the_snapshot_interval_bounds_the_replay_after_a_crash(monkeypatch):
    """A crash leaves at most the records since the last snapshot to replay: a quarter of
    the store once it is large (bench/store_bench.py times opening 1M events so)."""
    monkeypatch.undo()  # the real interval, not this file's small one
    intervals = {records: segment.records_between_snapshots(records) for records in (0, 10**5, 10**6, 10**7)}
    assert intervals[0] == intervals[10**5] == intervals[10**6] == segment.SNAPSHOT_EVERY_RECORDS_MIN == 250_000
    assert intervals[10**7] == 10**7 // 4
