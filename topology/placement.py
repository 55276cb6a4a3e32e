"""Shard placement by rendezvous (highest-random-weight) hashing.

Every (shard, peer) pair has a score: the first 8 bytes of BLAKE3 over the shard as 4
big-endian bytes followed by the peer name in UTF-8 (the fixed-width shard makes the input
unambiguous). A shard's replica set is the `replication_factor` live peers with the highest
scores, best first; ties (practically impossible) fall back to the name. Because a score
depends only on its own pair, adding a peer takes a slot only where it outscores an
incumbent, so about replication_factor/(N+1) of each shard's slots move, and removing a
peer moves only that peer's slots.

Scores are pure, so they are memoized: a 1000-peer mesh with 64 shards asks for the same
64k scores again and again whenever membership changes.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Iterable

import blake3

SCORE_CACHE_ENTRIES_MAX = 1 << 18  # 256k pairs: 1000 peers x 256 shards, a few tens of MiB
SCORE_VECTORS_MAX = 4096  # per-peer score vectors: a 1000-peer mesh and its departed peers


@functools.lru_cache(maxsize=SCORE_CACHE_ENTRIES_MAX)
def rendezvous_score(shard: int, peer: str) -> int:
    """The placement weight of `peer` for `shard` (higher is better), a 64-bit integer."""
    assert 0 <= shard < 2**32, shard
    return _score(shard, peer)


@functools.lru_cache(maxsize=SCORE_VECTORS_MAX)
def scores_of(peer: str, shards: int) -> tuple[int, ...]:
    """`rendezvous_score(shard, peer)` for every shard, as one tuple (cached per peer)."""
    return tuple(_score(shard, peer) for shard in range(shards))


def _score(shard: int, peer: str) -> int:
    digest = blake3.blake3(shard.to_bytes(4, "big") + peer.encode("utf-8")).digest(length=8)
    return int.from_bytes(digest, "big")


def rank_key(shard: int, peer: str) -> tuple[int, str]:
    """Sort key: larger means better-ranked for `shard` (score, then name)."""
    return (rendezvous_score(shard, peer), peer)


def ranked(shard: int, peers: Iterable[str]) -> list[str]:
    """All `peers` ordered best first for `shard`."""
    return sorted(set(peers), key=lambda peer: rank_key(shard, peer), reverse=True)


def top_peers(shard: int, peers: Iterable[str], count: int) -> tuple[str, ...]:
    """The `count` best-ranked of `peers` for `shard`, best first."""
    assert count >= 0, count
    return tuple(heapq.nlargest(count, set(peers), key=lambda peer: rank_key(shard, peer)))


def placement(shards: int, peers: Iterable[str], replication_factor: int) -> dict[int, tuple[str, ...]]:
    """The replica set of every shard for this set of peers."""
    candidates = sorted(set(peers))
    return {shard: top_peers(shard, candidates, replication_factor) for shard in range(shards)}


def moved_slots(before: dict[int, tuple[str, ...]], after: dict[int, tuple[str, ...]]) -> int:
    """How many replica slots changed hands: peers in a shard's new set but not its old one."""
    return sum(len(set(after.get(shard, ())) - set(members)) for shard, members in before.items())
