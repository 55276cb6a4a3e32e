"""Master election: which `MasterElected` facts a peer should publish now.

Masters are sticky: the fold's winning `MasterElected` for a shard names the master until
that peer is failed or has left. Then the best-ranked live replica of the shard (by
rendezvous rank among live peers; the dead master is not live so it is not a candidate)
claims the next epoch, if it is caught up on the shard. A shard never elected starts at
epoch 1. If two peers claim one epoch during a partition, the fold keeps the better-ranked
claim on merge, so the loser simply sees a different master and steps down.

A replica that is not caught up does not claim, and no lesser replica claims in its place:
each peer only knows its own catch-up state, and a lesser replica claiming would race the
best one. The best one claims as soon as anti-entropy catches it up.
"""

from __future__ import annotations

from collections.abc import Callable

from topology.events import MasterElected
from topology.fold import TopologyState


def claims(state: TopologyState, me: str, caught_up: Callable[[int], bool]) -> list[MasterElected]:
    """The elections `me` should publish now, sorted by shard.

    `caught_up(shard)` says whether `me` holds the shard's events well enough to master it.
    Returns nothing until the mesh shape is known or while `me` is not live in the view.
    """
    shards = state.shards
    if shards is None or me not in state.live_set():
        return []
    elections: list[MasterElected] = []
    for shard in state.shards_ranked_first(me):
        if state.live_master(shard) is not None:
            continue
        if not caught_up(shard):
            continue
        current = state.master(shard)
        epoch = 1 if current is None else current[1] + 1
        elections.append(MasterElected(shard, me, epoch))
    elections.sort(key=lambda fact: fact.shard)
    return elections


def master_cap(shards: int, peers: int) -> int:
    """The most shards one peer should master once steady: ceil(shards / peers) + 1."""
    return -(-shards // max(1, peers)) + 1


def balanced_masters(state: TopologyState, exclude: frozenset[str] = frozenset()) -> dict[int, str]:
    """Where each shard's master should be, balanced and sticky; a pure function of the view.

    Every peer that computes it from the same view gets the same answer, so only the
    current master of a shard acts on it and two peers never pull one shard both ways.
    First pass, shards ascending: a live master that is in the shard's replica set keeps
    the shard while it masters fewer than ceil(shards / peers). Second pass: each remaining
    shard goes to its best-ranked replica below that cap, else to its least-loaded replica
    (moving one of theirs aside when all its replicas are full, so the load exceeds the cap
    only when that fails too). Peers in
    `exclude` (a peer draining before it leaves) get nothing. Shards with no eligible
    replica are left out.
    """
    shards = state.shards
    live = [p for p in state.live_peers() if p not in exclude]
    if shards is None or not live:
        return {}
    cap = master_cap(shards, len(live)) - 1
    load: dict[str, int] = {}
    target: dict[int, str] = {}
    pending: list[tuple[int, list[str]]] = []
    for shard in range(shards):
        replicas = [p for p in state.replica_set(shard) if p not in exclude]
        current = state.live_master(shard)
        if current is not None and current in replicas and load.get(current, 0) < cap:
            target[shard] = current
            load[current] = load.get(current, 0) + 1
        elif replicas:
            pending.append((shard, replicas))
    replicas_of = {shard: replicas for shard, replicas in pending}
    for shard, replicas in pending:
        below = [p for p in replicas if load.get(p, 0) < cap]
        chosen = below[0] if below else _make_room(state, shard, replicas, target, load, cap, exclude, replicas_of)
        target[shard] = chosen
        load[chosen] = load.get(chosen, 0) + 1
    return target


def _make_room(state: TopologyState, shard: int, replicas: list[str], target: dict[int, str], load: dict[str, int],
               cap: int, exclude: frozenset[str], replicas_of: dict[int, list[str]]) -> str:
    """Every replica of `shard` is full: move one shard of one of them to another of its
    replicas that is below the cap (one augmenting step), else take the least loaded."""
    for peer in replicas:
        for other in sorted(s for s, p in target.items() if p == peer):
            choices = replicas_of.get(other)
            if choices is None:
                choices = [p for p in state.replica_set(other) if p not in exclude]
            spare = [p for p in choices if p != peer and load.get(p, 0) < cap]
            if spare:
                target[other] = spare[0]
                load[spare[0]] = load.get(spare[0], 0) + 1
                load[peer] -= 1
                return peer
    return min(replicas, key=lambda p: (load.get(p, 0), replicas.index(p)))
