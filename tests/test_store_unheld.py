"""`IndexedStore.unheld` (the bulk "certainly new here" test of the ingest fast path) and the
key hashes it keeps for `prepare_batch`, on both stores; and `sort_incoming` against the
event-by-event checks it shortcuts."""

from __future__ import annotations

import random

import pytest

from meshstream.clocks import Dot, VersionVector
from meshstream.envelope import Event
from meshstream.protocol import node as node_module
from meshstream.protocol.in_flight import sort_incoming
from meshstream.store import base
from meshstream.store.memory import MemoryStore
from meshstream.store.segment import SegmentStore


@pytest.fixture(params=["memory", "segment"])
def store(request, tmp_path):
    made = MemoryStore() if request.param == "memory" else SegmentStore.open(str(tmp_path / "data"))
    yield made
    made.close()


def run_of(stream: str, peer: str, first: int, count: int, key_prefix: bytes = b"k") -> list[Event]:
    vector = VersionVector({peer: first - 1}) if first > 1 else VersionVector()
    events = []
    for counter in range(first, first + count):
        events.append(Event.sequence(stream, key_prefix + b"%d" % counter, b"d", {}, Dot(peer, counter), vector))
        vector = VersionVector({peer: counter})
    return events


def exact(store, event: Event) -> bool:
    return not store.has_dot(event.stream, event.dot) and store.get(event.stream, event.key) is None


def test_unheld_says_true_only_for_events_the_store_lacks(store):
    held = run_of("s", "n1", 1, 10)
    store.append_batch(held)
    newer = run_of("s", "n1", 11, 5)
    same_key_new_dot = Event.sequence("s", held[3].key, b"other", {}, Dot("n2", 1), VersionVector())
    old_dot_new_key = Event.sequence("s", b"fresh", b"d", {}, Dot("n1", 4), VersionVector())
    other_stream = run_of("t", "n1", 1, 3)
    batch = [*held[:2], *newer, same_key_new_dot, old_dot_new_key, *other_stream]
    flags = store.unheld(batch)
    assert flags == [False, False, True, True, True, True, True, False, False, True, True, True]
    for event, flag in zip(batch, flags):
        assert not flag or exact(store, event), event  # True is never wrong
    assert store.unheld(run_of("$topology", "n1", 1, 3)) == [False] * 3


def test_kept_hashes_give_the_same_batch_and_are_taken(store):
    store.append_batch(run_of("s", "n1", 1, 20))
    incoming = run_of("s", "n1", 21, 50) + run_of("s", "n2", 1, 30, b"j")
    assert all(store.unheld(incoming))
    assert len(store._key_hashes) == 80
    store.append_batch(incoming, on_conflict="resolve")
    assert not store._key_hashes  # each taken by prepare_batch
    assert store.event_count("s") == 100
    for event in incoming:
        assert store.get("s", event.key) == event


def test_absent_keys_says_true_only_for_keys_the_store_lacks(store):
    held = run_of("s", "n1", 1, 10)
    store.append_batch(held)
    keys = [held[0].key, b"new", held[9].key, b"k11"]
    assert store.absent_keys("s", keys) == [False, True, False, True]
    assert store.absent_keys("t", keys) == [True] * 4  # another stream: other hashes
    assert store._key_hashes[("s", b"new")] == base.key_hash("s", b"new")
    assert ("s", held[0].key) not in store._key_hashes  # a duplicate is not sequenced


def test_kept_hashes_are_bounded(store, monkeypatch):
    monkeypatch.setattr(base, "KEY_HASHES_KEPT_MAX", 64)
    for first in range(1, 400, 50):
        store.unheld(run_of("s", "n1", first, 50))
        assert len(store._key_hashes) <= 64


class _Peer:
    """The parts of a Node that `sort_incoming` and the exact checks read."""

    def __init__(self, store) -> None:
        self.store = store
        self.unpersisted: dict = {}
        self._unpersisted_dots: set = set()
        self._losers: dict = {}
        self.name = "me"

    _holds = node_module.Node._holds
    _note_conflict = node_module.Node._note_conflict


def reference(peer: _Peer, events: list[Event]) -> tuple[list, list, list]:
    """The event-by-event sorting that `sort_incoming` replaced."""
    fresh, again, effects, batch = [], [], [], {}
    for event in events:
        if event.stream.startswith("$") or peer._holds(event):
            continue
        if (event.stream, event.dot.peer, event.dot.counter) in peer._unpersisted_dots:
            again.append(event)
            continue
        effects += peer._note_conflict(event, batch.get(event.natural_key))
        previous = batch.get(event.natural_key)
        if previous is None or event.digest < previous.digest:
            batch[event.natural_key] = event
        fresh.append(event)
    return fresh, again, effects


@pytest.mark.parametrize("seed", range(12))
def test_sort_incoming_matches_the_exact_checks(tmp_path, seed):
    rng = random.Random(seed)
    store = SegmentStore.open(str(tmp_path / "data"))
    try:
        store.append_batch(run_of("s", "n1", 1, 30))
        pool = run_of("s", "n1", 1, 60) + run_of("s", "n2", 1, 20) + run_of("t", "n1", 1, 10)
        pool += [Event.sequence("s", b"k%d" % rng.randrange(1, 60), b"rival%d" % i, {}, Dot("n3", i + 1),
                                VersionVector()) for i in range(10)]
        pool += run_of("$topology", "n1", 1, 3)
        events = [rng.choice(pool) for _ in range(120)]
        peers = [_Peer(store), _Peer(store)]
        for peer in peers:  # a few in flight already
            for event in pool[35:45] + pool[70:72]:
                peer.unpersisted.setdefault(event.natural_key, event)
                peer._unpersisted_dots.add((event.stream, event.dot.peer, event.dot.counter))
        got = sort_incoming(peers[0], events)
        want = reference(peers[1], events)
        assert got == want, f"seed={seed}"
        assert peers[0]._losers == peers[1]._losers, f"seed={seed}"
    finally:
        store.close()


@pytest.mark.parametrize("seed", range(8))
def test_a_batch_of_several_streams_indexes_as_one_event_at_a_time(seed):
    """add_events cuts a batch into its streams' runs (bulk where a run allows): the
    indexes must end as they do when each event comes alone."""
    rng = random.Random(seed)
    runs = {name: run_of(name, "n1", 1, 40) for name in ("a", "b", "$topology")}
    runs["b2"] = run_of("b", "n2", 1, 20, b"j")
    batch = []
    while any(runs.values()):
        name = rng.choice(sorted(n for n in runs if runs[n]))
        take = rng.randint(1, 12)
        batch += runs[name][:take]
        runs[name] = runs[name][take:]
    together, alone = MemoryStore(), MemoryStore()
    assert together.append_batch(batch) == [alone.append_batch([event])[0] for event in batch], f"seed={seed}"
    for stream in ("a", "b", "$topology"):
        assert together.read(stream, VersionVector(), 1000) == alone.read(stream, VersionVector(), 1000), f"seed={seed}"
        assert together.version_vector(stream) == alone.version_vector(stream), f"seed={seed}"
        assert together.event_count(stream) == alone.event_count(stream), f"seed={seed}"
        assert together.shard_digest(1, 4) == alone.shard_digest(1, 4), f"seed={seed}"
