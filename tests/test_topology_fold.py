"""The topology facts' codec and the fold: a join-semilattice with SWIM precedence."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshstream.cbor import dumps
from meshstream.clocks import Dot, VersionVector
from meshstream.envelope import Event
from meshstream.errors import LocalProtocolError, RemoteProtocolError
from topology.events import (
    MasterElected,
    MemberAlive,
    MemberFailed,
    MemberJoined,
    MemberLeft,
    MemberSuspect,
    MeshConfigured,
    decode_fact,
    encode_fact,
    fact_key,
    fact_of,
    topology_event,
)
from topology.fold import TopologyState, fold
from topology.graph import membership_graph, shard_graph, to_dot
from topology.placement import placement

PEERS = ["n1", "n2", "n3", "n4", "n5", "n6"]

peers = st.sampled_from(PEERS)
incarnations = st.integers(0, 3)
facts = st.one_of(
    st.builds(MeshConfigured, st.integers(1, 6), st.integers(1, 4)),
    st.builds(MemberJoined, peers, st.sampled_from(["a:1", "b:2"]), incarnations),
    st.builds(MemberAlive, peers, incarnations),
    st.builds(MemberSuspect, peers, incarnations, peers),
    st.builds(MemberFailed, peers, incarnations, peers),
    st.builds(MemberLeft, peers, incarnations),
    st.builds(MasterElected, st.integers(0, 5), peers, st.integers(1, 3)),
)


def view(state: TopologyState) -> dict:
    """Everything a caller can observe of a state, including derived placement."""
    shards = state.shards or 0
    return {
        "doc": state.to_dict(),
        "live": state.live_peers(),
        "replicas": [state.replica_set(shard) for shard in range(shards)],
        "live_masters": [state.live_master(shard) for shard in range(shards)],
    }


# -- codec --


@given(facts)
def test_fact_round_trips_through_cbor_and_events(fact):
    data = encode_fact(fact)
    assert decode_fact(data) == fact
    event = topology_event(fact, Dot("n1", 1), VersionVector())
    assert event.key == fact_key(fact) and len(event.key) == 16
    assert fact_of(event) == fact


@given(st.binary(max_size=64))
def test_decode_fact_raises_only_remote_protocol_error(data):
    try:
        decode_fact(data)
    except RemoteProtocolError:
        pass


@pytest.mark.parametrize(
    "value",
    [
        [99, "n1", 0],  # unknown kind
        [3, "n1"],  # too few fields
        [3, "n1", -1],  # negative incarnation
        [3, "bad name!", 0],
        [3, "n1", True],  # a bool is not an incarnation
        [7, 0, "n1", 0],  # epoch 0
        [1, 0, 3],  # zero shards
        [2, "n1", "", 0],  # empty address
        {"kind": 3},
    ],
)
def test_decode_fact_rejects_invalid_values(value):
    with pytest.raises(RemoteProtocolError):
        decode_fact(dumps(value))


def test_decode_fact_rejects_non_canonical_encoding():
    canonical = encode_fact(MemberAlive("n1", 5))
    padded = canonical[:-1] + b"\x18\x05"  # 5 as a one-byte-argument integer
    assert dumps([3, "n1", 5]) == canonical
    with pytest.raises(RemoteProtocolError, match="canonical"):
        decode_fact(padded)


def test_fact_of_rejects_a_forged_key_and_other_streams():
    fact = MemberAlive("n1", 1)
    forged = Event.sequence("$topology", b"k" * 16, encode_fact(fact), {}, Dot("n1", 1), VersionVector())
    with pytest.raises(RemoteProtocolError, match="key"):
        fact_of(forged)
    other = Event.sequence("orders", fact_key(fact), encode_fact(fact), {}, Dot("n1", 1), VersionVector())
    with pytest.raises(RemoteProtocolError):
        fact_of(other)


def test_constructing_invalid_facts_is_local_misuse():
    with pytest.raises(LocalProtocolError):
        MemberAlive("n 1", 0)
    with pytest.raises(LocalProtocolError):
        MasterElected(0, "n1", 0)
    with pytest.raises(LocalProtocolError):
        TopologyState().apply("not a fact")  # type: ignore[arg-type]


# -- semilattice properties --


@settings(max_examples=300, deadline=None)
@given(st.lists(facts, max_size=40), st.randoms(use_true_random=False))
def test_fold_is_order_independent_and_idempotent(fact_list, rng):
    expected = view(fold(fact_list))
    shuffled = fact_list + rng.sample(fact_list, len(fact_list) // 2)  # duplicates too
    rng.shuffle(shuffled)
    state = TopologyState()
    for index, fact in enumerate(shuffled):
        state.apply(fact)
        if index % 7 == 3:
            view(state)  # materialize placement midway: incremental updates must agree
    assert view(state) == expected
    assert state == fold(fact_list)
    assert not any(state.apply(fact) for fact in fact_list), "re-applying known facts changed the view"


@settings(max_examples=200, deadline=None)
@given(st.lists(facts, max_size=30), st.lists(facts, max_size=30))
def test_merge_of_two_views_is_their_union(left, right):
    merged = fold(left)
    merged.apply_all(right)
    other_way = fold(right)
    other_way.apply_all(left)
    assert view(merged) == view(other_way) == view(fold(left + right))


@settings(max_examples=200, deadline=None)
@given(st.lists(facts, max_size=30), facts)
def test_apply_reports_a_change_exactly_when_the_view_changes(fact_list, extra):
    state = fold(fact_list)
    before = view(state)
    copy = state.copy()
    changed = state.apply(extra)
    assert changed == (view(state) != before)
    assert view(copy) == before, "copy() must be independent"


@settings(max_examples=150, deadline=None)
@given(st.lists(facts, max_size=40))
def test_incremental_placement_matches_a_fresh_count(fact_list):
    state = TopologyState()
    state.apply(MeshConfigured(8, 3))
    state.replica_set(0)  # placement exists from the start, so every change is incremental
    state.apply_all(fact_list)
    expected = placement(state.shards, state.live_peers(), state.replication_factor)
    assert [state.replica_set(s) for s in range(state.shards)] == [expected[s] for s in range(state.shards)]


# -- SWIM precedence, addresses, configuration --


def test_swim_precedence_and_refutation():
    state = fold([MemberJoined("n1", "a:1", 0), MemberSuspect("n1", 0, "n2")])
    assert state.member("n1").status == "suspect" and state.live_peers() == ["n1"]
    assert state.apply(MemberAlive("n1", 1))  # refuted with a higher incarnation
    assert state.member("n1").status == "alive"
    assert not state.apply(MemberSuspect("n1", 0, "n3")), "stale suspicion must not win"
    assert state.apply(MemberFailed("n1", 1, "n2"))
    assert state.member("n1").status == "failed" and state.live_peers() == []
    assert not state.apply(MemberAlive("n1", 1)), "alive does not beat failed at one incarnation"
    assert state.apply(MemberLeft("n1", 1))
    assert state.member("n1").status == "left"
    assert state.apply(MemberJoined("n1", "c:3", 2))  # restarted: rejoins with a new address
    member = state.member("n1")
    assert (member.status, member.address, member.incarnation) == ("alive", "c:3", 2)


def test_address_comes_from_the_greatest_join_and_unknown_joins_have_none():
    state = fold([MemberAlive("n2", 4), MemberJoined("n1", "old:1", 0), MemberJoined("n1", "new:1", 3)])
    assert state.member("n1").address == "new:1"
    assert state.member("n2").address == "" and state.member("n2").status == "alive"
    assert state.member("n9") is None


def test_conflicting_mesh_configurations_merge_to_one():
    a, b = MeshConfigured(16, 3), MeshConfigured(64, 2)
    winner = min((a, b), key=encode_fact)
    for order in ([a, b], [b, a]):
        state = fold(order)
        assert state.configuration == winner
        assert (state.shards, state.replication_factor) == (winner.shards, winner.replication_factor)
    assert TopologyState().shards is None and TopologyState().replication_factor is None
    assert TopologyState().replica_set(0) == ()


def test_replica_set_rejects_a_shard_out_of_range():
    state = fold([MeshConfigured(4, 2), MemberJoined("n1", "a:1", 0)])
    with pytest.raises(LocalProtocolError):
        state.replica_set(4)


def test_live_master_only_names_a_live_master():
    state = fold([MeshConfigured(2, 2), MemberJoined("n1", "a:1", 0), MasterElected(0, "n1", 1)])
    assert state.master(0) == ("n1", 1) and state.live_master(0) == "n1"
    state.apply(MemberFailed("n1", 0, "n2"))
    assert state.master(0) == ("n1", 1) and state.live_master(0) is None
    assert state.master(1) is None


# -- graphs --


def test_graphs_and_dot_are_deterministic():
    seed = 11
    fact_list = [MeshConfigured(4, 2), MasterElected(2, "n3", 1), MemberSuspect("n2", 0, "n1")]
    fact_list += [MemberJoined(peer, f"127.0.0.1:70{i}", 0) for i, peer in enumerate(PEERS[:4])]
    shuffled = list(fact_list)
    random.Random(seed).shuffle(shuffled)
    state, other = fold(fact_list), fold(shuffled)
    members = membership_graph(state)
    assert members.nodes["n2"]["status"] == "suspect" and members.nodes["n1"]["address"] == "127.0.0.1:700"
    shards = shard_graph(state)
    assert shards.edges["n3", "shard:2"]["role"] == "master"
    replica_edges = [(u, v) for u, v, d in shards.edges(data=True) if d["role"] == "replica"]
    assert len(replica_edges) + 1 >= 4 * 2 - 1
    dot = to_dot(shards)
    assert dot.startswith('graph "shards" {') and '"n3" -- "shard:2"' in dot, dot
    assert dot == to_dot(shard_graph(other)), f"seed={seed}"


def test_dot_escapes_quotes():
    import networkx as nx

    graph = nx.DiGraph(name='a"b')
    graph.add_edge('x"y', "z", label="back\\slash")
    dot = to_dot(graph)
    assert 'digraph "a\\"b"' in dot and '"x\\"y" -> "z"' in dot and "back\\\\slash" in dot
