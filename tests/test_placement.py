"""Rendezvous placement: stable, balanced, and adding a peer moves about 1/(N+1) of slots."""

from __future__ import annotations

import math
import random

import pytest

from topology.events import MemberFailed, MemberJoined, MeshConfigured
from topology.fold import fold
from topology.placement import moved_slots, placement, ranked, rendezvous_score, top_peers

SHARDS = 1024
REPLICATION_FACTOR = 3


def names(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return sorted({f"peer-{rng.randrange(10**9)}" for _ in range(count * 2)})[:count]


def test_scores_are_stable_across_processes():
    # A fixed vector: every platform and version must place shards identically.
    assert rendezvous_score(0, "n1") == rendezvous_score(0, "n1")
    assert rendezvous_score(0, "n1") != rendezvous_score(1, "n1")
    assert rendezvous_score(7, "n1") == int.from_bytes(
        __import__("blake3").blake3(b"\x00\x00\x00\x07n1").digest(length=8), "big"
    )


def test_top_peers_is_the_head_of_the_ranking_and_handles_few_peers():
    peers = names(20, seed=1)
    for shard in range(50):
        assert top_peers(shard, peers, 3) == tuple(ranked(shard, peers)[:3])
    assert top_peers(0, ["a", "b"], 3) == tuple(ranked(0, ["a", "b"]))
    assert top_peers(0, [], 3) == ()


@pytest.mark.parametrize("count", [5, 10, 30, 100])
def test_adding_one_peer_moves_about_one_in_n_plus_one_slots(count):
    seed = 1000 + count
    peers = names(count + 1, seed)
    newcomer, incumbents = peers[-1], peers[:-1]
    before = placement(SHARDS, incumbents, REPLICATION_FACTOR)
    after = placement(SHARDS, peers, REPLICATION_FACTOR)
    moved = moved_slots(before, after)
    slots = SHARDS * REPLICATION_FACTOR
    expected = slots / (count + 1)
    # The newcomer enters each shard's set independently with p = rf/(N+1), taking one slot:
    # moved ~ Binomial(SHARDS, p). Allow 5 standard deviations.
    p = REPLICATION_FACTOR / (count + 1)
    tolerance = 5 * math.sqrt(SHARDS * p * (1 - p))
    assert abs(moved - expected) <= tolerance, f"seed={seed}: moved {moved}, expected {expected:.0f}±{tolerance:.0f}"
    # Every moved slot went to the newcomer: no incumbent shuffled between shards.
    for shard in range(SHARDS):
        assert set(after[shard]) - set(before[shard]) <= {newcomer}, f"seed={seed} shard={shard}"


def test_removing_a_peer_moves_only_its_own_slots():
    seed = 7
    peers = names(12, seed)
    gone = peers[3]
    before = placement(SHARDS, peers, REPLICATION_FACTOR)
    after = placement(SHARDS, [p for p in peers if p != gone], REPLICATION_FACTOR)
    held = sum(gone in members for members in before.values())
    assert moved_slots(before, after) == held, f"seed={seed}"
    for shard in range(SHARDS):
        if gone not in before[shard]:
            assert after[shard] == before[shard], f"seed={seed} shard={shard}"


def test_slots_are_balanced_across_peers():
    seed = 3
    peers = names(16, seed)
    layout = placement(SHARDS, peers, REPLICATION_FACTOR)
    counts = {peer: 0 for peer in peers}
    for members in layout.values():
        assert len(set(members)) == REPLICATION_FACTOR
        for peer in members:
            counts[peer] += 1
    mean = SHARDS * REPLICATION_FACTOR / len(peers)
    assert all(abs(c - mean) < 0.25 * mean for c in counts.values()), f"seed={seed}: {counts}"


def test_the_fold_places_only_live_peers():
    state = fold([MeshConfigured(64, 3)] + [MemberJoined(f"n{i}", f"n{i}", 0) for i in range(1, 6)])
    assert state.replica_set(5) == top_peers(5, state.live_peers(), 3)
    state.apply(MemberFailed("n2", 0, "n1"))
    assert all("n2" not in state.replica_set(shard) for shard in range(64))
    assert state.shards_of("n2") == []
    assert sum(len(state.replica_set(s)) for s in range(64)) == 64 * 3
