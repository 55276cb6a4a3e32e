"""The EventStore contract (store/api.py), run against MemoryStore and SegmentStore."""

from __future__ import annotations

import random

import pytest

from meshstream.clocks import Dot, VersionVector
from meshstream.envelope import Event
from meshstream.envelope_run import EnvelopeRun
from meshstream.errors import KeyConflict, LocalProtocolError
from meshstream.ordering import canonical_order
from meshstream.store.api import AppendResult
from meshstream.store.memory import MemoryStore
from meshstream.store.segment import SegmentStore
from meshstream.wire.envelope_batch import decode_run

R = AppendResult


@pytest.fixture(params=["memory", "segment"])
def store(request, tmp_path):
    if request.param == "memory":
        made = MemoryStore()
    else:
        made = SegmentStore.open(str(tmp_path / "data"))
    yield made
    made.close()


def chain(stream: str, peer: str, count: int, start: VersionVector = VersionVector(), prefix: str = "k"):
    vector, events = start, []
    for number in range(count):
        following, dot = vector.increment(peer)
        events.append(Event.sequence(stream, f"{prefix}{peer}{dot.counter}".encode(), b"d%d" % number, {}, dot,
                                     vector))
        vector = following
    return events


def event(stream="s", key=b"k", data=b"x", dot=Dot("n1", 1), context=VersionVector()):
    return Event.sequence(stream, key, data, {}, dot, context)


def test_append_then_get_read_and_vector(store):
    events = chain("s", "n1", 5)
    assert store.append_batch(events) == [R.STORED] * 5
    assert store.get("s", events[2].key) == events[2]
    assert store.get("s", b"missing") is None
    assert store.read("s", VersionVector(), 100) == events
    assert store.read("s", VersionVector({"n1": 3}), 100) == events[3:]
    assert store.read("s", VersionVector(), 2) == events[:2]
    assert store.version_vector("s") == VersionVector({"n1": 5})
    assert store.event_count("s") == 5
    assert store.streams() == ["s"]
    assert store.get_dot("s", Dot("n1", 4)) == events[3]
    assert store.has_dot("s", Dot("n1", 4)) and not store.has_dot("s", Dot("n1", 6))


def test_duplicate_returns_existing_and_conflict_raises_atomically(store):
    first = event()
    assert store.append_batch([first]) == [R.STORED]
    assert store.append_batch([first]) == [R.DUPLICATE]
    other = event(key=b"new", dot=Dot("n1", 2))
    with pytest.raises(KeyConflict):
        store.append_batch([other, event(data=b"different", dot=Dot("n2", 1))])
    assert store.get("s", b"new") is None  # nothing of the failed batch was written
    assert store.event_count("s") == 1


def test_resolve_keeps_smaller_digest_and_records_loser_dot(store):
    a = event(data=b"a", dot=Dot("n1", 1))
    b = event(data=b"b", dot=Dot("n2", 1))
    winner, loser = sorted([a, b], key=lambda e: e.digest)
    assert store.append_batch([loser], on_conflict="resolve") == [R.STORED]
    assert store.append_batch([winner], on_conflict="resolve") == [R.WON]
    assert store.append_batch([loser], on_conflict="resolve") == [R.LOST]
    assert store.get("s", b"k") == winner
    assert store.has_dot("s", loser.dot) and store.get_dot("s", loser.dot) is None
    assert store.read("s", VersionVector(), 10) == [winner]
    assert store.version_vector("s") == VersionVector({"n1": 1, "n2": 1})


def test_resolve_in_either_order_gives_one_outcome(store, tmp_path):
    a = event(data=b"a", dot=Dot("n1", 1))
    b = event(data=b"b", dot=Dot("n2", 1))
    winner = min([a, b], key=lambda e: e.digest)
    results = store.append_batch([a, b], on_conflict="resolve")
    assert sorted(r.value for r in results) in (["stored", "won"], ["lost", "stored"])
    assert store.get("s", b"k") == winner
    other = MemoryStore()
    other.append_batch([b, a], on_conflict="resolve")
    assert other.version_vector("s") == store.version_vector("s")


def test_vector_is_contiguous_and_gap_fill_reorders(store):
    events = chain("s", "n1", 4)
    store.append_batch([events[0], events[2], events[3]], on_conflict="resolve")
    assert store.version_vector("s") == VersionVector({"n1": 1})
    assert store.has_dot("s", Dot("n1", 3))
    assert store.read("s", VersionVector(), 10) == canonical_order([events[0], events[2], events[3]])
    store.append_batch([events[1]], on_conflict="resolve")
    assert store.version_vector("s") == VersionVector({"n1": 4})
    assert store.read("s", VersionVector(), 10) == events


def test_concurrent_branches_read_in_canonical_order(store):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    base = chain("s", "n1", 3)
    top = VersionVector({"n1": 3})
    left, right = chain("s", "n2", 4, top, "l"), chain("s", "n3", 4, top, "r")
    every = base + left + right
    shuffled = every[:]
    rng.shuffle(shuffled)
    for start in range(0, len(shuffled), 3):
        store.append_batch(shuffled[start:start + 3], on_conflict="resolve")
    expected = canonical_order(every)
    assert store.read("s", VersionVector(), 100) == expected, f"seed={seed}"
    cursor = VersionVector({"n1": 3, "n2": 2})
    assert store.read("s", cursor, 100) == [e for e in expected if not cursor.contains(e.dot)], f"seed={seed}"
    assert store.events_missing("s", cursor, 100) == left[2:] + right


def test_events_missing_in_peer_counter_order_with_limit(store):
    events = chain("s", "n2", 3) + chain("s", "n1", 3, prefix="o")
    store.append_batch(events, on_conflict="resolve")
    missing = store.events_missing("s", VersionVector({"n1": 1}), 3)
    assert [e.dot for e in missing] == [Dot("n1", 2), Dot("n1", 3), Dot("n2", 1)]


def test_envelopes_missing_are_the_envelopes_of_events_missing(store):
    events = chain("s", "n2", 5) + chain("s", "n1", 4, prefix="o")
    store.append_batch(events, on_conflict="resolve")
    for have, limit in [(VersionVector(), 100), (VersionVector({"n1": 2}), 4), (VersionVector({"n1": 4, "n2": 5}), 9)]:
        expected = [e.envelope for e in store.events_missing("s", have, limit)]
        assert store.envelopes_missing("s", have, limit) == expected, (have, limit)


def _as_run(events):
    run = decode_run([event.envelope for event in events])
    assert type(run) is EnvelopeRun
    return run


def test_a_run_is_stored_as_its_events_are(store):
    """A run is decided whole when it is all new (no Event built), and event by event
    when any of its dots or keys is held: either way as the same events as a list are."""
    events = chain("s", "n1", 30)
    rival = Event.sequence("s", events[25].key, b"rival", {}, Dot("n2", 1), VersionVector())
    reused = Event.seal_run("s", "n1", 27, VersionVector({"n1": 26}), [(b"z%d" % i, b"d", ()) for i in range(5)])
    reference = MemoryStore()
    for batch, run in [(events[:1], False), (events[1:10], True), (events[5:15], True), ([rival], False),
                       (events[15:30], True), (reused, True)]:  # reused: dots 28-30 name other events here
        expected = reference.append_batch(batch, on_conflict="resolve")
        assert store.append_batch(_as_run(batch) if run else batch, on_conflict="resolve") == expected
        assert store.read("s", VersionVector(), 100) == reference.read("s", VersionVector(), 100)
        assert store.version_vector("s") == reference.version_vector("s")
        assert store.get("s", events[25].key) == reference.get("s", events[25].key)
    assert store.events_missing("s", VersionVector(), 100) == reference.events_missing("s", VersionVector(), 100)


def test_a_run_of_a_new_master_goes_after_the_old_masters_events(store):
    old = chain("s", "n1", 10)
    first = Event.seal_run("s", "n2", 0, VersionVector({"n1": 10}), [(b"n2-1", b"d", ())])
    following = Event.seal_run("s", "n2", 1, VersionVector({"n1": 10}), [(b"n2-%d" % i, b"d", ()) for i in range(2, 30)])
    stale = Event.seal_run("s", "n3", 0, VersionVector({"n1": 4}), [(b"n3-1", b"d", ())])  # concurrent: reorders
    reference = MemoryStore()
    for batch in [old[:1], old[1:], first, following[:10], stale, following[10:]]:
        run = decode_run([event.envelope for event in batch])
        assert store.append_batch(run, on_conflict="resolve") == reference.append_batch(batch, on_conflict="resolve")
        assert store.read("s", VersionVector(), 100) == reference.read("s", VersionVector(), 100)
    assert [e.key for e in store.read("s", VersionVector(), 100)][10:12] == [b"n2-1", b"n2-2"]


def test_a_stored_run_survives_a_reopen(tmp_path):
    events = chain("s", "n1", 40)
    store = SegmentStore.open(str(tmp_path / "data"))
    store.append_batch(events[:1])
    store.append_batch(_as_run(events[1:40]), on_conflict="resolve")
    store.close()
    reopened = SegmentStore.open(str(tmp_path / "data"))
    assert reopened.read("s", VersionVector(), 100) == events
    assert reopened.version_vector("s") == VersionVector({"n1": 40})
    reopened.close()


def test_shard_digest_equal_iff_vectors_equal(store):
    other = MemoryStore()
    events = chain("s", "n1", 3) + chain("t", "n1", 2)
    shards = 4
    assert store.shard_digest(0, shards) == other.shard_digest(0, shards)
    store.append_batch(events)
    other.append_batch(list(reversed(events)), on_conflict="resolve")
    for shard in range(shards):
        assert store.shard_digest(shard, shards) == other.shard_digest(shard, shards)
    store.append_batch(chain("s", "n2", 1, VersionVector({"n1": 3}), "z"))
    differing = [s for s in range(shards) if store.shard_digest(s, shards) != other.shard_digest(s, shards)]
    assert len(differing) == 1


def test_shard_digests_are_the_shard_digest_of_each(store):
    shards = 8
    fresh = store.shard_digests([5, 0, 7], shards)  # before any table is built
    assert fresh == [store.shard_digest(s, shards) for s in (5, 0, 7)]
    store.append_batch(chain("s", "n1", 3) + chain("t", "n1", 2) + chain("u", "n2", 4))
    assert store.shard_digests(list(range(shards)), shards) == [store.shard_digest(s, shards) for s in range(shards)]
    store.append_batch(chain("s", "n3", 1, VersionVector({"n1": 3}), "z"))
    assert store.shard_digests([3, 1], shards) == [store.shard_digest(3, shards), store.shard_digest(1, shards)]
    assert store.shard_digests([], shards) == []
    with pytest.raises(LocalProtocolError):
        store.shard_digests([0, shards], shards)


def test_system_streams_are_stored_but_not_in_shard_digests(store):
    topology = event(stream="$topology")
    before = [store.shard_digest(s, 2) for s in range(2)]
    store.append_batch([topology])
    assert store.get("$topology", b"k") == topology
    assert [store.shard_digest(s, 2) for s in range(2)] == before


def test_two_phase_write(store):
    events = chain("s", "n1", 3)
    prepared = store.prepare_batch(events)
    store.write_prepared(prepared)
    assert store.commit_prepared(prepared) == [R.STORED] * 3
    assert store.read("s", VersionVector(), 10) == events


def test_misuse_raises_local_protocol_error(store):
    with pytest.raises(LocalProtocolError):
        store.append_batch(["not an event"])
    with pytest.raises(LocalProtocolError):
        store.append_batch([event()], on_conflict="maybe")
    with pytest.raises(LocalProtocolError):
        store.read("s", VersionVector(), -1)


def test_empty_store_answers(store):
    assert store.read("none", VersionVector(), 10) == []
    assert store.version_vector("none") == VersionVector()
    assert store.streams() == [] and store.event_count("none") == 0
    assert store.corrupt_records() == [] and store.scrub(100) == []


def test_segment_store_reopens_with_same_state(tmp_path):
    directory = str(tmp_path / "data")
    store = SegmentStore.open(directory)
    a, b = event(data=b"a", dot=Dot("n1", 1)), event(data=b"b", dot=Dot("n2", 1))
    store.append_batch([a, b], on_conflict="resolve")
    store.append_batch(chain("s", "n3", 3, prefix="q"), on_conflict="resolve")
    expected = (store.version_vector("s"), store.read("s", VersionVector(), 100), store.shard_digest(0, 1))
    store.close()
    for remove_snapshot in (False, True):
        if remove_snapshot:
            (tmp_path / "data" / "index.snapshot").unlink()
        reopened = SegmentStore.open(directory)
        got = (reopened.version_vector("s"), reopened.read("s", VersionVector(), 100), reopened.shard_digest(0, 1))
        assert got == expected, f"snapshot removed: {remove_snapshot}"
        reopened.close()


def test_segment_store_rolls_segments(tmp_path):
    from meshstream.config import Config

    config = Config(segment_bytes_max=4096)
    directory = str(tmp_path / "data")
    store = SegmentStore.open(directory, config)
    events = chain("s", "n1", 100)
    for start in range(0, 100, 10):
        store.append_batch(events[start:start + 10])
    store.close()
    assert len(list((tmp_path / "data").glob("*.seg"))) >= 3
    reopened = SegmentStore.open(directory, config)
    assert reopened.read("s", VersionVector(), 1000) == events
    reopened.close()


def test_one_process_per_directory(tmp_path):
    directory = str(tmp_path / "data")
    store = SegmentStore.open(directory)
    with pytest.raises(LocalProtocolError):
        SegmentStore.open(directory)
    store.close()
