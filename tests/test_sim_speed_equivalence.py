"""The simulator speed-ups compute exactly what the plain versions do.

Each fast path (version vectors checked in C passes, a store's vector kept between
persists, the shards each peer ranks first kept with the ranked keys, the `$topology`
order by sort while contexts only chain a writer's own events) is compared here with the
straightforward computation it replaces, over random inputs, bad ones included.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshstream.clocks import COUNTER_MAX, VersionVector, _checked_entries
from meshstream.envelope import Event
from meshstream.errors import RemoteProtocolError
from meshstream.ids import TOPOLOGY_STREAM
from meshstream.ordering import canonical_order
from meshstream.protocol.topology_log import TopologyLog
from meshstream.store.index import StreamIndex
from topology.events import MemberAlive, MemberFailed, MemberJoined, MemberLeft, MeshConfigured, encode_fact, fact_key
from topology.fold import TopologyState


def _plain_from_cbor(value: object) -> dict[str, int]:
    """VersionVector.from_cbor as it was: every entry checked in a Python loop (the loop
    now kept for naming the first bad entry)."""
    if not isinstance(value, list) or len(value) % 2 or len(value) > 2 * 4096:
        raise RemoteProtocolError("a version vector must be a flat list [peer, counter, ...]")
    return _checked_entries(value)  # the entry-by-entry loop the C-pass check replaced


peers = st.one_of(st.sampled_from(["a", "b", "c", "n1", "n10", "n2", "", "x" * 64, "x" * 65]), st.text(max_size=3))
counts = st.one_of(st.integers(-2, 5), st.sampled_from([COUNTER_MAX, COUNTER_MAX + 1, True, 1.0, None, "1"]))
entries = st.lists(st.tuples(peers, counts), max_size=8)


@settings(max_examples=400)
@given(entries, st.booleans())
def test_vector_decoding_matches_the_entry_by_entry_check(pairs, sort) -> None:
    if sort:
        pairs = sorted(pairs, key=lambda pair: str(pair[0]))
    flat = [item for pair in pairs for item in pair]
    try:
        expected = _plain_from_cbor(flat)
    except RemoteProtocolError as exc:
        with pytest.raises(RemoteProtocolError) as raised:
            VersionVector.from_cbor(flat)
        assert str(raised.value) == str(exc), flat
        return
    decoded = VersionVector.from_cbor(flat)
    assert decoded._counters == expected and list(decoded) == list(expected), flat  # noqa: SLF001
    assert decoded.to_cbor() == flat


@settings(max_examples=200)
@given(st.dictionaries(st.text(min_size=1, max_size=4), st.integers(-3, 9), max_size=12))
def test_vector_from_a_dict_matches_sorting_pairs(counters) -> None:
    expected = {peer: count for peer, count in sorted(counters.items()) if count > 0}
    built = VersionVector(counters)
    assert list(built.items()) == list(expected.items())


def test_a_stores_kept_vector_is_always_the_vector_of_its_counters() -> None:
    for seed in range(40):
        rng = random.Random(seed)
        stream = StreamIndex("s", 0)
        for step in range(300):
            peer, roll = f"p{rng.randrange(60)}", rng.random()
            if roll < 0.6:
                stream.vector[peer] = stream.vector.get(peer, 0) + rng.randrange(0, 3)
            elif roll < 0.7:
                stream.vector.pop(peer, None)
            elif roll < 0.75:
                stream.vector[peer] = 0
            got, expected = stream.version_vector(), VersionVector(dict(stream.vector))
            assert list(got.items()) == list(expected.items()), f"seed={seed} step={step}"


def test_shards_ranked_first_kept_incrementally_match_a_recount() -> None:
    for seed in range(60):
        rng = random.Random(seed)
        state, incarnations = TopologyState(), {}
        names = [f"n{i}" for i in range(rng.randrange(1, 25))]
        configure_at = rng.randrange(0, 40)
        for step in range(80):
            if step == configure_at:
                state.apply(MeshConfigured(rng.choice([1, 4, 16]), rng.choice([1, 2, 3])))
            peer = rng.choice(names)
            incarnation, roll = incarnations.get(peer, 0), rng.random()
            if roll < 0.5:
                state.apply(MemberJoined(peer, peer, incarnation))
            elif roll < 0.7:
                state.apply(MemberFailed(peer, incarnation, "w"))
            elif roll < 0.8:
                state.apply(MemberLeft(peer, incarnation))
            else:
                incarnations[peer] = incarnation + 1
                state.apply(MemberAlive(peer, incarnation + 1))
            if state.shards and rng.random() < 0.5:
                clone = state.copy()
                for name in names:
                    recount = [s for s in range(state.shards) if state.replica_set(s)[:1] == (name,)]
                    assert state.shards_ranked_first(name) == recount, f"seed={seed} step={step}"
                    assert clone.shards_ranked_first(name) == recount, f"seed={seed} step={step}"


def _event(writer: str, counter: int, fact, context: dict[str, int]) -> Event:
    from meshstream.clocks import Dot

    return Event.sequence(TOPOLOGY_STREAM, fact_key(fact), encode_fact(fact), {}, Dot(writer, counter),
                          VersionVector(context))


@pytest.mark.parametrize("foreign_contexts", [False, True])
def test_topology_order_by_sort_matches_the_canonical_order(foreign_contexts) -> None:
    for seed in range(30):
        rng = random.Random(seed)
        writers = [f"w{i}.1" for i in range(rng.randrange(1, 6))]
        events = []
        for writer in writers:
            for counter in range(1, rng.randrange(2, 8)):
                fact = MemberJoined(f"p{rng.randrange(12)}", "a", rng.randrange(3))
                context = {writer: counter - 1}
                if foreign_contexts and rng.random() < 0.2:
                    context[rng.choice(writers)] = rng.randrange(0, 8)
                events.append(_event(writer, counter, fact, context))
        rng.shuffle(events)
        log = TopologyLog("me.1")
        for event in rng.sample(events, rng.randrange(1, len(events) + 1)):
            log.add(event)
            assert log.events() == canonical_order(log._served.values()), f"seed={seed}"  # noqa: SLF001


def test_placement_view_matches_a_recount_of_every_peers_shards() -> None:
    from meshstream.protocol.placements import PEERS_ASKED_MAX, PlacementView

    from topology.events import MasterElected

    for seed in range(20):
        rng = random.Random(seed)
        state, view = TopologyState(), PlacementView()
        state.apply(MeshConfigured(16, 3))
        names = [f"n{i}" for i in range(30)]
        for step, peer in enumerate(rng.sample(names, len(names))):
            state.apply(MemberJoined(peer, peer, 0))
            if rng.random() < 0.5:  # masters, inside their replica sets or not (a handover)
                state.apply(MasterElected(rng.randrange(16), rng.choice(names), step + 1))
            if rng.random() < 0.2:  # some fail or leave: masters no longer live, sets recounted
                gone = rng.choice(names)
                state.apply(rng.choice([MemberFailed(gone, 0, peer), MemberLeft(gone, 0)]))
            for name in rng.sample(names, rng.randrange(1, 3 * PEERS_ASKED_MAX)):  # one by one, then gathered
                placements = {s: view.placement(state, s) for s in range(16)}
                expected = frozenset(s for s in range(16) if name in placements[s])
                recount = {s: state.replica_set(s) for s in range(16)}
                for shard, replicas in recount.items():
                    master = state.live_master(shard)
                    recount[shard] = replicas + (master,) if master and master not in replicas else replicas
                assert placements == recount, f"seed={seed} step={step}"
                assert view.shards_of(state, name) == expected, f"seed={seed} step={step} peer={name}"


def test_the_loop_pauses_automatic_collection_and_collects_on_its_own_schedule(monkeypatch) -> None:
    import gc

    from simulations import loop as loop_module

    monkeypatch.setattr(loop_module, "GC_EVERY_ACTIONS", 10)
    collections: list[int] = []

    def count(phase: str, info: dict) -> None:
        if phase == "start":
            collections.append(info["generation"])

    loop = loop_module.EventLoop()
    seen: list[bool] = []
    for step in range(25):
        loop.at(step * 0.1, lambda: seen.append(gc.isenabled()))
    was_enabled = gc.isenabled()
    gc.callbacks.append(count)
    try:
        gc.enable()
        loop.run_until(10.0)
        assert gc.isenabled(), "the collector's state is restored after a run"
        gc.disable()
        loop.at(11.0, lambda: None)
        loop.run_until(12.0)
        assert not gc.isenabled(), "a collector paused by the caller stays paused"
    finally:
        gc.callbacks.remove(count)
        if was_enabled:
            gc.enable()
    assert seen == [False] * 25, "actions run with automatic collection paused"
    assert collections.count(2) == 2, f"a full collection every 10 actions (26 run): {collections}"


def test_topology_vector_and_missing_events_match_a_recount() -> None:
    """The log's vector (copied and raised between builds, rebuilt when a writer enters it)
    and `missing_for` (writers ahead found in C passes, nothing when the vectors agree)
    against counting the dots held, over events added in random order with gaps."""
    from meshstream.clocks import Dot

    for seed in range(40):
        rng = random.Random(seed)
        writers = [f"w{i}.1" for i in rng.sample(range(12), rng.randrange(1, 9))]
        events = [_event(w, c, MemberAlive(f"p{i}", c), {w: c - 1}) for i, w in enumerate(writers)
                  for c in range(1, rng.randrange(2, 7))]
        rng.shuffle(events)
        log = TopologyLog("me.1")
        held: list[Event] = []
        for event in events[: rng.randrange(1, len(events) + 1)]:
            log.add(event)
            held.append(event)
            dots = {(e.dot.peer, e.dot.counter) for e in held}
            contiguous = {}
            for writer in writers:
                top = 0
                while (writer, top + 1) in dots:
                    top += 1
                contiguous[writer] = top
            vector = log.vector
            assert vector == VersionVector(contiguous), f"seed={seed}"
            assert list(vector) == sorted(vector), f"seed={seed}: a vector's peers go in order"
            theirs = VersionVector({w: rng.randrange(0, 7) for w in rng.sample(writers, rng.randrange(len(writers) + 1))})
            if rng.random() < 0.2:
                theirs = VersionVector({e.dot.peer: max(x.dot.counter for x in held if x.dot.peer == e.dot.peer)
                                        for e in held})  # the same tops: nothing ahead
            holes = [Dot(w, c) for w in writers for c in range(1, 7) if rng.random() < 0.1]
            limit = rng.randrange(1, 12)
            expected = sorted((e for e in held if e.dot.counter > theirs.get(e.dot.peer) or e.dot in holes),
                              key=lambda e: (e.dot.peer, e.dot.counter))[:limit]
            assert log.missing_for(theirs, limit, holes) == expected, f"seed={seed}"
