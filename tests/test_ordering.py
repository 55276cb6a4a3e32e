"""canonical_order: one total order from any permutation or duplication, never against causality.

Histories are generated as a replica system would produce them: several peers sequence
events (dot = the peer's next counter, context = the vector the peer knew just before) and
now and then one peer merges everything another peer knows, which creates concurrent
branches and later merges of them.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from meshstream.clocks import VersionVector
from meshstream.envelope import Event
from meshstream import ordering

PEERS = ["n1", "n2", "n3", "n4"]


def history(seed: int, steps: int, peers: int) -> list[Event]:
    """A random multi-peer history of one stream, derived only from `seed`."""
    rng = random.Random(seed)
    names = PEERS[:peers]
    vectors = {name: VersionVector() for name in names}
    known: dict[str, dict[bytes, Event]] = {name: {} for name in names}
    for step in range(steps):
        peer = rng.choice(names)
        if rng.random() < 0.3 and peers > 1:  # anti-entropy: peer learns all another knows
            other = rng.choice([name for name in names if name != peer])
            vectors[peer] = vectors[peer].merge(vectors[other])
            known[peer].update(known[other])
            continue
        context = vectors[peer]
        vectors[peer], dot = context.increment(peer)
        event = Event.sequence("s", f"k{step}".encode(), rng.randbytes(rng.randint(0, 8)), {}, dot, context)
        known[peer][event.digest] = event
    return sorted({digest: e for k in known.values() for digest, e in k.items()}.values(), key=lambda e: e.digest)


def assert_respects_causality(order: list[Event], seed: int) -> None:
    position = {event.digest: index for index, event in enumerate(order)}
    for later in order:
        for earlier in order:
            if later.context.contains(earlier.dot):
                assert position[earlier.digest] < position[later.digest], f"seed={seed}: {earlier.dot} after {later.dot}"
            if earlier.dot.peer == later.dot.peer and earlier.dot.counter < later.dot.counter:
                assert position[earlier.digest] < position[later.digest], f"seed={seed}: chain broken"


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32), st.integers(0, 60), st.integers(1, 4), st.randoms(use_true_random=False))
def test_any_permutation_or_duplication_gives_the_same_causal_order(seed, steps, peers, rng):
    events = history(seed, steps, peers)
    expected = ordering.canonical_order(events)
    assert len(expected) == len(events), f"seed={seed}"
    assert_respects_causality(expected, seed)
    shuffled = events + [rng.choice(events) for _ in range(len(events) // 2)] if events else []
    rng.shuffle(shuffled)
    assert [e.digest for e in ordering.canonical_order(shuffled)] == [e.digest for e in expected], f"seed={seed}"


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 40), st.data())
def test_causally_closed_subsets_keep_causality(seed, steps, data):
    """A replica that has only part of the history (any prefix of its own arrival order
    closed under causality) still orders it without contradiction."""
    events = ordering.canonical_order(history(seed, steps, 3))
    cut = data.draw(st.integers(0, len(events)), label="cut")
    subset = events[:cut]  # a prefix of a topological order is causally closed
    order = ordering.canonical_order(reversed(subset))
    assert_respects_causality(order, seed)
    assert sorted(e.digest for e in order) == sorted(e.digest for e in subset)


def test_concurrent_events_tie_break_by_peer_then_counter():
    empty = VersionVector()
    first = Event.sequence("s", b"x", b"", {}, VersionVector().increment("n2")[1], empty)
    second = Event.sequence("s", b"y", b"", {}, VersionVector().increment("n1")[1], empty)
    assert [e.dot.peer for e in ordering.canonical_order([first, second])] == ["n1", "n2"]


def test_a_context_naming_a_later_peer_event_moves_it_after():
    n2_first, n2_dot = VersionVector().increment("n2")
    a = Event.sequence("s", b"a", b"", {}, n2_dot, VersionVector())
    b = Event.sequence("s", b"b", b"", {}, VersionVector().increment("n1")[1], n2_first)  # n1 saw n2's
    assert [e.key for e in ordering.canonical_order([b, a])] == [b"a", b"b"]


def test_cyclic_corrupt_input_is_still_ordered_deterministically():
    vector_a = VersionVector({"n2": 1})
    vector_b = VersionVector({"n1": 1})
    a = Event.sequence("s", b"a", b"", {}, VersionVector().increment("n1")[1], vector_a)
    b = Event.sequence("s", b"b", b"", {}, VersionVector().increment("n2")[1], vector_b)
    assert ordering.canonical_order([a, b]) == ordering.canonical_order([b, a, b])
    assert len(ordering.canonical_order([a, b])) == 2
