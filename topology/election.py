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

from collections.abc import Callable, Mapping

from topology.events import MasterElected
from topology.fold import TopologyState


def claims(state: TopologyState, me: str, caught_up: Callable[[int], bool]) -> list[MasterElected]:
    """The elections `me` should publish now, sorted by shard.

    `caught_up(shard)` says whether `me` holds the shard's events well enough to master it.
    Returns nothing until the mesh shape is known or while `me` is not live in the view.
    """
    shards = state.shards
    if shards is None or not state.is_live(me):  # not live_set(): an O(N) copy per input
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


# A master keeps its shards while its load stays within 1.25x the mean per peer: balanced
# enough for 0.8x linear write capacity, loose enough that noisy rate hints move nothing.
LOAD_SLACK = 1.25
# Masters above 1.1x the mean load are relieved: at 1.0 noise in the hints moved a few
# shards on every recomputation; at 1.25 a 10-peer mesh stayed at 0.83x linear.
RELIEVE_ABOVE_MEAN = 1.1
RELIEVE_MOVES_MAX = 1024  # moves off the busiest master per computation (each lowers the spread)


def master_cap(shards: int, peers: int) -> int:
    """The most shards one peer should master once steady: ceil(shards / peers) + 1."""
    return -(-shards // max(1, peers)) + 1


def balanced_masters(state: TopologyState, exclude: frozenset[str] = frozenset(),
                     rates: Mapping[int, float] | None = None) -> dict[int, str]:
    """Where each shard's master should be, balanced and sticky; a pure function of the view.

    Every peer that computes it from the same view gets the same answer, so only the
    current master of a shard acts on it and two peers never pull one shard both ways.
    First pass, shards ascending: a live master that is in the shard's replica set keeps
    the shard while it masters fewer than ceil(shards / peers). Second pass: each remaining
    shard goes to its best-ranked replica below that cap, else to its least-loaded replica
    (moving one of theirs aside when all its replicas are full, so the load exceeds the cap
    only when that fails too). Peers in
    `exclude` (a peer draining before it leaves) get nothing. Shards with no eligible
    replica are left out. With `rates` (shard -> events/s, soft hints) the load is
    balanced too: see `_load_balanced`.
    """
    shards = state.shards
    live = [p for p in state.live_peers() if p not in exclude]
    if shards is None or not live:
        return {}
    cap = master_cap(shards, len(live)) - 1
    if rates and any(rate > 0 for rate in rates.values()):
        return _load_balanced(state, len(live), exclude, rates, cap)
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
               cap: int, exclude: frozenset[str], replicas_of: dict[int, list[str]],
               movable: Callable[[int], bool] = lambda shard: True) -> str:
    """Every replica of `shard` is full: move one `movable` shard of one of them to another
    of its replicas that is below the cap (one augmenting step), else take the least loaded."""
    for peer in replicas:
        for other in sorted(s for s, p in target.items() if p == peer and movable(s)):
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


def _load_balanced(state: TopologyState, peers: int, exclude: frozenset[str], rates: Mapping[int, float],
                   cap: int) -> dict[int, str]:
    """`balanced_masters` weighing shards by their write rate, under the same count cap.

    Busy shards first, heaviest first (ties by number): each goes to the least-loaded of
    its replicas below the count cap (greedy largest-first), except that its current
    master keeps it while that leaves the master within LOAD_SLACK x the mean load per
    peer (sticky: rates are noisy hints, and a move costs a handover). Then
    `_relieve_busiest` moves shards off masters above RELIEVE_ABOVE_MEAN x the mean. Idle
    shards come last, bound by the count alone as without rates, so they
    never take the count slots busy ones need. Hints that disagree between peers only
    make a master move a shard another peer would not: the count cap and placement hold
    whatever the rates say.
    """
    weights = [max(0.0, float(rates.get(shard, 0.0))) for shard in range(state.shards or 0)]
    limit = LOAD_SLACK * sum(weights) / peers
    count: dict[str, int] = {}
    load: dict[str, float] = {}
    target: dict[int, str] = {}
    replicas_of = {shard: [p for p in state.replica_set(shard) if p not in exclude] for shard in range(len(weights))}
    for shard in sorted((s for s in range(len(weights)) if weights[s] > 0), key=lambda s: (-weights[s], s)):
        replicas, current, weight = replicas_of[shard], state.live_master(shard), weights[shard]
        below = [p for p in replicas if count.get(p, 0) < cap]
        if not below:
            if replicas:
                _assign(target, count, load, shard,
                        _make_room(state, shard, replicas, target, count, cap, exclude, replicas_of), weight)
                load.clear()
                load.update(_loads(target, weights))
            continue
        chosen = min(below, key=lambda p: (load.get(p, 0.0), replicas.index(p)))
        if current in below and load.get(current, 0.0) + weight <= max(limit, load.get(chosen, 0.0) + weight):
            chosen = current
        _assign(target, count, load, shard, chosen, weight)
    _relieve_busiest(target, count, load, weights, replicas_of, cap, limit / LOAD_SLACK * RELIEVE_ABOVE_MEAN)
    _place_idle(state, target, count, load, weights, replicas_of, cap, exclude)
    return target


def _place_idle(state: TopologyState, target: dict[int, str], count: dict[str, int], load: dict[str, float],
                weights: list[float], replicas_of: dict[int, list[str]], cap: int, exclude: frozenset[str]) -> None:
    """Idle shards by the count alone, sticky, as `balanced_masters` without rates."""
    pending = []
    for shard in (s for s in range(len(weights)) if weights[s] <= 0):
        replicas, current = replicas_of[shard], state.live_master(shard)
        if current is not None and current in replicas and count.get(current, 0) < cap:
            _assign(target, count, load, shard, current, 0.0)
        elif replicas:
            pending.append(shard)
    for shard in pending:
        replicas = replicas_of[shard]
        below = [p for p in replicas if count.get(p, 0) < cap]
        chosen = below[0] if below else _make_room(state, shard, replicas, target, count, cap, exclude, replicas_of,
                                                   lambda other: weights[other] <= 0)  # busy ones stay put
        _assign(target, count, load, shard, chosen, 0.0)


def _relieve_busiest(target: dict[int, str], count: dict[str, int], load: dict[str, float], weights: list[float],
                     replicas_of: dict[int, list[str]], cap: int, limit: float) -> None:
    """While a master is loaded beyond `limit`, move one of its shards to a replica below
    the count cap that ends at least half that shard below the master's load (the busiest
    masters first; every move lowers the sum of squared loads, so this ends; bounded)."""
    for _ in range(RELIEVE_MOVES_MAX):
        move = None
        for busy in sorted((p for p in load if load[p] > limit), key=lambda p: (-load[p], p)):
            move = _best_move(busy, target, count, load, weights, replicas_of, cap)
            if move is not None:
                break
        if move is None:
            return
        shard, peer = move
        source = target[shard]
        count[source] -= 1
        load[source] -= weights[shard]
        _assign(target, count, load, shard, peer, weights[shard])


def _best_move(busy: str, target: dict[int, str], count: dict[str, int], load: dict[str, float], weights: list[float],
               replicas_of: dict[int, list[str]], cap: int) -> tuple[int, str] | None:
    best: tuple[float, int, str] | None = None
    for shard in sorted(s for s, p in target.items() if p == busy):
        for peer in replicas_of[shard]:
            after = load.get(peer, 0.0) + weights[shard]
            # The receiver must end half a shard below the giver: noise in the rates cannot swing a move back.
            if peer != busy and count.get(peer, 0) < cap and after + weights[shard] / 2 <= load[busy] \
                    and (best is None or after < best[0]):
                best = (after, shard, peer)
    return None if best is None else (best[1], best[2])


def _assign(target: dict[int, str], count: dict[str, int], load: dict[str, float], shard: int, peer: str,
            weight: float) -> None:
    target[shard] = peer
    count[peer] = count.get(peer, 0) + 1
    load[peer] = load.get(peer, 0.0) + weight


def _loads(target: dict[int, str], weights: list[float]) -> dict[str, float]:
    load: dict[str, float] = {}
    for shard, peer in target.items():
        load[peer] = load.get(peer, 0.0) + weights[shard]
    return load
