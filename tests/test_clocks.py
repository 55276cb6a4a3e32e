"""Dots and version vectors: the lattice laws, compare vs dominates, and the CBOR form."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshstream.cbor import dumps, loads_strict
from meshstream.clocks import COUNTER_MAX, EMPTY, Dot, Order, VersionVector
from meshstream.errors import RemoteProtocolError

PEERS = ["a", "b", "c", "d", "n1", "n10", "n2"]
counters = st.one_of(st.integers(0, 6), st.integers(0, COUNTER_MAX))
vectors = st.dictionaries(st.sampled_from(PEERS), counters, max_size=len(PEERS)).map(VersionVector)
small_vectors = st.dictionaries(st.sampled_from(PEERS[:4]), st.integers(0, 3)).map(VersionVector)
dots = st.builds(Dot, st.sampled_from(PEERS), st.integers(1, COUNTER_MAX))



@given(vectors, vectors)
def test_merge_is_commutative(a, b):
    assert a.merge(b) == b.merge(a)


@given(vectors, vectors, vectors)
def test_merge_is_associative(a, b, c):
    assert a.merge(b).merge(c) == a.merge(b.merge(c))


@given(vectors)
def test_merge_is_idempotent(a):
    assert a.merge(a) == a
    assert a.merge(EMPTY) == a


@given(small_vectors, small_vectors, small_vectors)
def test_merge_is_the_least_upper_bound(a, b, c):
    merged = a.merge(b)
    assert merged.dominates(a) and merged.dominates(b)
    if c.dominates(a) and c.dominates(b):
        assert c.dominates(merged)


@given(small_vectors, small_vectors)
def test_compare_agrees_with_dominates(a, b):
    ge, le = a.dominates(b), b.dominates(a)
    expected = {(True, True): Order.EQUAL, (False, True): Order.BEFORE,
                (True, False): Order.AFTER, (False, False): Order.CONCURRENT}[(ge, le)]
    assert a.compare(b) is expected
    mirror = {Order.EQUAL: Order.EQUAL, Order.BEFORE: Order.AFTER,
              Order.AFTER: Order.BEFORE, Order.CONCURRENT: Order.CONCURRENT}
    assert b.compare(a) is mirror[expected]
    assert (a.compare(b) is Order.EQUAL) == (a == b)
    if a == b:
        assert hash(a) == hash(b)


@given(small_vectors, small_vectors, small_vectors)
def test_dominates_is_transitive(a, b, c):
    if a.dominates(b) and b.dominates(c):
        assert a.dominates(c)


@given(vectors, dots)
def test_contains_and_increment(vector, dot):
    assert vector.contains(dot) == (dot.counter <= vector.get(dot.peer))
    assert vector.with_dot(dot).contains(dot)
    if vector.get(dot.peer) < COUNTER_MAX:
        raised, new_dot = vector.increment(dot.peer)
        assert not vector.contains(new_dot) and raised.contains(new_dot)
        assert new_dot.counter == vector.get(dot.peer) + 1
        assert raised.compare(vector) is Order.AFTER
        assert raised.total() == vector.total() + 1


@given(vectors)
def test_vector_cbor_round_trip_is_compact_and_canonical(vector):
    encoded = dumps(vector.to_cbor())
    assert VersionVector.from_cbor(loads_strict(encoded)) == vector
    assert encoded == cbor2.dumps(vector.to_cbor(), canonical=True)
    assert len(vector.to_cbor()) == 2 * len(vector)


@given(dots)
def test_dot_cbor_round_trip(dot):
    assert Dot.from_cbor(loads_strict(dumps(dot.to_cbor()))) == dot


@pytest.mark.parametrize("bad", [
    ["b", 1, "a", 1],  # unsorted
    ["a", 1, "a", 2],  # duplicate
    ["a", 0],  # zero counters are implicit, never sent
    ["a", True],
    ["a", 2**63],
    ["", 1],
    ["a" * 65, 1],
    [1, 1],
    ["a"],
    {"a": 1},
    "a",
])
def test_vector_from_cbor_rejects_malformed(bad):
    with pytest.raises(RemoteProtocolError):
        VersionVector.from_cbor(bad)


@pytest.mark.parametrize("bad", [["a"], ["a", 0], ["a", -1], [None, 1], ["a", 1.0], ("a", 1), ["a", 1, 2]])
def test_dot_from_cbor_rejects_malformed(bad):
    with pytest.raises(RemoteProtocolError):
        Dot.from_cbor(bad)


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.binary(max_size=5),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=12,
)


@given(json_like)
def test_from_cbor_of_anything_decodes_or_raises_remote_protocol_error(value):
    for decode in (VersionVector.from_cbor, Dot.from_cbor):
        try:
            decode(value)
        except RemoteProtocolError:
            pass
