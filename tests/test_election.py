"""Master election: sticky masters, next-epoch claims, one master per shard after merges."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from topology.election import claims
from topology.events import MasterElected, MemberFailed, MemberJoined, MeshConfigured
from topology.fold import TopologyState, fold
from topology.placement import rank_key

SHARDS = 8
PEERS = [f"n{i}" for i in range(1, 8)]


def mesh(peers=PEERS, shards=SHARDS, rf=3) -> TopologyState:
    return fold([MeshConfigured(shards, rf)] + [MemberJoined(p, p, 0) for p in peers])


def all_caught_up(shard: int) -> bool:
    return True


def run_elections(state: TopologyState, peers) -> list[MasterElected]:
    """Every live peer of `peers` publishes its claims into `state` (one round)."""
    published = []
    for peer in sorted(peers):
        published.extend(claims(state, peer, all_caught_up))
    state.apply_all(published)
    return published


def test_first_elections_name_the_best_replica_at_epoch_one_once():
    state = mesh()
    published = run_elections(state, PEERS)
    assert sorted(f.shard for f in published) == list(range(SHARDS))
    for fact in published:
        assert fact.epoch == 1 and fact.peer == state.replica_set(fact.shard)[0]
    assert run_elections(state, PEERS) == [], "a live master is sticky"


def test_a_failed_master_is_replaced_at_the_next_epoch_and_stays_replaced():
    state = mesh()
    run_elections(state, PEERS)
    old, epoch = state.master(0)
    state.apply(MemberFailed(old, 0, "n9"))
    published = run_elections(state, PEERS)
    new = [f for f in published if f.shard == 0]
    assert new == [MasterElected(0, state.replica_set(0)[0], epoch + 1)]
    # The old master returns with a higher incarnation: it sees the newer epoch, is a replica.
    state.apply(MemberJoined(old, old, 1))
    assert state.live_master(0) == new[0].peer != old
    assert [f for f in claims(state, old, all_caught_up) if f.shard == 0] == []


def test_a_master_the_view_knows_nothing_of_is_not_replaced():
    """A joiner folding its snapshot chunk by chunk may hold a shard's election but not the
    master's join: that master is unknown, not dead, so nobody claims its shard. Once the
    master is known failed, the shard is claimed at the next epoch."""
    state = mesh()
    state.apply_all([MasterElected(shard, "n99", 4) for shard in range(SHARDS)])
    assert run_elections(state, PEERS) == [], "claimed shards whose master was merely unknown"
    state.apply(MemberFailed("n99", 0, "n1"))
    published = run_elections(state, PEERS)
    assert sorted(f.shard for f in published) == list(range(SHARDS))
    assert {f.epoch for f in published} == {5}


def test_a_replica_that_is_not_caught_up_does_not_claim_and_nobody_claims_for_it():
    state = mesh()
    best = state.replica_set(3)[0]
    behind = claims(state, best, lambda shard: shard != 3)
    assert 3 not in [f.shard for f in behind]
    for peer in PEERS:
        if peer != best:
            assert 3 not in [f.shard for f in claims(state, peer, all_caught_up)]


def test_no_claims_before_configuration_or_when_not_live():
    assert claims(fold([MemberJoined("n1", "n1", 0)]), "n1", all_caught_up) == []
    state = mesh()
    state.apply(MemberFailed("n1", 0, "n2"))
    assert claims(state, "n1", all_caught_up) == []


def test_concurrent_claims_in_one_epoch_resolve_to_the_better_ranked():
    a, b = MasterElected(2, "n1", 4), MasterElected(2, "n2", 4)
    winner = max((a, b), key=lambda f: rank_key(f.shard, f.peer))
    assert fold([a, b]).master(2) == fold([b, a]).master(2) == (winner.peer, 4)
    assert fold([a, b, MasterElected(2, "n3", 3)]).master(2) == (winner.peer, 4)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32), st.integers(4, 7), st.integers(1, 4))
def test_partitioned_elections_merge_to_one_master_per_shard(seed, count, rounds):
    """Peers split into random groups that see each other failed; each group elects; merge.

    After the merge every shard has one master and every epoch names at most one peer per
    shard among the facts the groups agree on; any two folds of the same facts agree.
    """
    rng = random.Random(seed)
    peers = PEERS[:count]
    base = [MeshConfigured(SHARDS, 3)] + [MemberJoined(p, p, 0) for p in peers]
    history = list(base)
    for round_number in range(rounds):
        groups = split(rng, peers)
        for group in groups:
            view = fold(history)
            view.apply_all(MemberFailed(p, round_number, group[0]) for p in peers if p not in group)
            history.extend(run_elections(view, group))
        history.extend(MemberJoined(p, p, round_number + 1) for p in peers)  # heal: all rejoin
    merged, shuffled = fold(history), list(history)
    rng.shuffle(shuffled)
    assert merged.masters() == fold(shuffled).masters(), f"seed={seed}"
    assert set(merged.masters()) == set(range(SHARDS)), f"seed={seed}"
    for shard in range(SHARDS):
        claims_at = {}
        for fact in history:
            if isinstance(fact, MasterElected) and fact.shard == shard:
                claims_at.setdefault(fact.epoch, set()).add(fact.peer)
        top_epoch = max(claims_at)
        best = max(claims_at[top_epoch], key=lambda p: rank_key(shard, p))
        assert merged.master(shard) == (best, top_epoch), f"seed={seed} shard={shard}"


def split(rng: random.Random, peers: list[str]) -> list[list[str]]:
    shuffled = list(peers)
    rng.shuffle(shuffled)
    cut = rng.randrange(1, len(peers))
    return [sorted(shuffled[:cut]), sorted(shuffled[cut:])]


def test_within_one_view_at_most_one_peer_claims_each_shard():
    seed = 5
    rng = random.Random(seed)
    state = mesh()
    for peer in rng.sample(PEERS, 3):
        state.apply(MemberFailed(peer, 0, "n9"))
    published = [f for peer in PEERS for f in claims(state, peer, all_caught_up)]
    shards = [f.shard for f in published]
    assert len(shards) == len(set(shards)) == SHARDS, f"seed={seed}: {published}"


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 200), st.integers(1, 64), st.just(3), st.integers(0, 2**32))
def test_balanced_masters_respect_the_cap_and_stay_in_replica_sets(peers, shards, rf, seed) -> None:
    from topology.election import balanced_masters, master_cap

    rng = random.Random(seed)
    names = [f"p{i}" for i in range(peers)]
    state = mesh(names, shards, rf)
    for shard in range(shards):  # arbitrary current masters, as after failovers
        state.apply(MasterElected(shard, rng.choice(names), 1))
    target = balanced_masters(state)
    assert sorted(target) == list(range(shards)), f"seed={seed}"
    load: dict[str, int] = {}
    for shard, peer in target.items():
        assert peer in state.replica_set(shard), f"seed={seed}: shard {shard} -> {peer}"
        load[peer] = load.get(peer, 0) + 1
    # rf 3 only: the greedy with one augmenting step can exceed the cap by one more at rf 2
    # (a deeper matching would be needed); with rf 1 the master has no choice at all.
    if rf >= 3:
        assert max(load.values()) <= master_cap(shards, peers), f"seed={seed}: {load}"


def test_balanced_masters_are_sticky_and_exclude_a_draining_peer() -> None:
    from topology.election import balanced_masters

    state = mesh(PEERS, SHARDS, 3)
    first = balanced_masters(state)
    for shard, peer in first.items():
        state.apply(MasterElected(shard, peer, 1))
    assert balanced_masters(state) == first  # applied targets are a fixed point: no ping-pong
    drained = balanced_masters(state, exclude=frozenset({"n1"}))
    assert "n1" not in drained.values()
    assert all(drained[s] == first[s] for s in first if first[s] != "n1" and drained[s] == first[s])
