"""Master election: which `MasterElected` facts a peer should publish now.

Masters are sticky: the fold's winning `MasterElected` for a shard names the master until
that peer is failed or has left. Then the best-ranked live replica of the shard (by
rendezvous rank among live peers; the dead master is not live so it is not a candidate)
claims the next epoch, if it is caught up on the shard. A shard never elected starts at
epoch 1. If two peers claim one epoch during a partition, the fold keeps the better-ranked
claim on merge, so the loser simply sees a different master and steps down.

A master the view has no liveness fact about at all is not dead: the view is partial (a
joiner folding its snapshot chunk by chunk), and claiming its shard would take writes on a
peer that never caught up from the old set. Only a master known failed or left is replaced.

A replica that is not caught up does not claim, and no lesser replica claims in its place:
each peer only knows its own catch-up state, and a lesser replica claiming would race the
best one. The best one claims as soon as anti-entropy catches it up.
"""

from __future__ import annotations

import bisect
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
        current = state.master(shard)
        if current is not None and state.member(current[0]) is None:
            continue  # a master we know nothing of: our view is partial, not its master dead
        if not caught_up(shard):
            continue
        epoch = 1 if current is None else current[1] + 1
        elections.append(MasterElected(shard, me, epoch))
    elections.sort(key=lambda fact: fact.shard)
    return elections


# Load balancing is a local search from the current masters (see `_load_balanced`): a
# master above SHED_ABOVE_MEAN x the mean load per peer gives one busy shard to a replica
# that ends at least MOVE_GAIN_MIN / 2 of that shard below the giver's load. 1.1: at 1.25
# a 10-peer mesh sits at 0.8x linear; the margin, not this threshold, keeps noise from
# moving shards (half a shard: a 1 event/s stream measured 10% off moves nothing).
SHED_ABOVE_MEAN = 1.1
MOVE_GAIN_MIN = 1.0  # a move lowers the sum of squared loads by >= this x its weight squared


def master_cap(shards: int, peers: int) -> int:
    """The most shards one peer should master once steady: ceil(shards / peers) + 1."""
    return -(-shards // max(1, peers)) + 1


def balanced_masters(state: TopologyState, exclude: frozenset[str] = frozenset(),
                     rates: Mapping[int, float] | None = None) -> dict[int, str]:
    """Where each shard's master should be, balanced and sticky; a pure function of the
    view and the rates (shard -> events/s, soft hints; none: every shard idle).

    Every peer that computes it from the same view and rates gets the same answer, so only
    the current master of a shard acts on it and two peers never pull one shard both
    ways. No peer gets more than `master_cap` shards unless every replica of a shard is
    full and no shard can be moved aside; peers in `exclude` (a peer draining before it
    leaves) get nothing; shards with no eligible replica are left out. Applying the answer
    and asking again gives the same answer (see `_load_balanced`); with no rates it is the
    count rule alone, so rates going idle move nothing.
    """
    shards = state.shards
    live = [p for p in state.live_peers() if p not in exclude]
    if shards is None or not live:
        return {}
    return _load_balanced(state, len(live), exclude, rates or {}, master_cap(shards, len(live)) - 1)


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

    It settles by construction: it starts from the current masters, and besides the moves
    the count rule forces (placement, the cap) it only makes load moves that lower the sum
    of squared loads by a margin, so applying its answer and asking again gives the same
    answer (a fixed point), and on fixed rates and a fixed view the moves end.
    1. The count rule: a live master in the shard's replica set keeps it while it masters
       fewer than `master_cap` (busy shards first, so a master over the cap sheds idle
       ones; then by number). The other shards, busiest first (ties by number), go to
       their least-loaded replica below ceil(shards / peers) (an idle one to its
       best-ranked), else below `master_cap`, else `_make_room`. Load moves may fill a
       master up to `master_cap`, so keeping shards up to it is what makes the answer a
       fixed point.
    2. `_relieve`, one round: a master whose load exceeds SHED_ABOVE_MEAN x the mean per
       peer gives a busy shard to a replica below the count cap (or to one that first
       passes up to two shards on to peers with room, without raising the sum of squares)
       that ends at least half that shard below the giver's load. The receiver then
       cannot give it back unless the rates moved by half a shard, so noise in the hints
       moves nothing, and each move lowers the sum of squared loads by at least the
       shard's weight squared: the moves end.
    Hints that disagree between peers only make a master move a shard another peer would
    not: the count cap and placement hold whatever the rates say.
    """
    weights = [max(0.0, float(rates.get(shard, 0.0))) for shard in range(state.shards or 0)]
    replicas_of = {shard: [p for p in state.replica_set(shard) if p not in exclude] for shard in range(len(weights))}
    count: dict[str, int] = {}
    load: dict[str, float] = {}
    target: dict[int, str] = {}
    pending = []
    for shard in sorted(range(len(weights)), key=lambda s: (weights[s] <= 0, s)):  # over the cap: idle ones go
        replicas, current = replicas_of[shard], state.live_master(shard)
        if current is not None and current in replicas and count.get(current, 0) < cap + 1:
            _assign(target, count, load, shard, current, weights[shard])
        elif replicas:
            pending.append(shard)
    for shard in sorted(pending, key=lambda s: (-weights[s], s)):
        replicas, weight = replicas_of[shard], weights[shard]
        below = [p for p in replicas if count.get(p, 0) < cap] or [p for p in replicas if count.get(p, 0) < cap + 1]
        if below:
            chosen = min(below, key=lambda p: (load.get(p, 0.0) if weight > 0 else 0.0, replicas.index(p)))
        else:
            chosen = _make_room(state, shard, replicas, target, count, cap, exclude, replicas_of)
            load.clear()
            load.update(_loads(target, weights))
        _assign(target, count, load, shard, chosen, weight)
    _relieve(target, count, load, weights, replicas_of, cap + 1, SHED_ABOVE_MEAN * sum(weights) / peers)
    return target


def _relieve(target: dict[int, str], count: dict[str, int], load: dict[str, float], weights: list[float],
             replicas_of: dict[int, list[str]], cap: int, high: float) -> None:
    """One round of load moves: each master loaded beyond `high` (the busiest first, ties
    by name) makes its best move (`_best_move`) among peers no other load move of the
    round involves. Loads are those after the round's count moves (a join moves shards
    off most peers at once: keeping those peers out of load moves left a 5-peer mesh at
    0.75x linear until the count moves were all done). Load moves of one round share no
    peer, so once the count moves are done each is as good alone as with the others and
    any of them may happen first or not at all; the next round is computed on the view
    they leave. When the best move needs the receiver to pass shards on first, only those
    passes are in this round."""
    used: set[str] = set()
    owned: dict[str, list[int]] = {}
    for shard in sorted(target):
        owned.setdefault(target[shard], []).append(shard)
    for busy in sorted((p for p in load if load[p] > high), key=lambda p: (-load[p], p)):
        if busy in used:
            continue
        move = _best_move(busy, owned, count, load, weights, replicas_of, cap, used)
        if move is None:
            continue
        shard, peer, passes = move
        used.update((busy, peer))
        for other, to in passes:  # the move itself waits for the next round, on the view these leave
            used.add(to)
            _move(target, count, load, owned, weights, other, to)
        if not passes:
            _move(target, count, load, owned, weights, shard, peer)


def _move(target: dict[int, str], count: dict[str, int], load: dict[str, float], owned: dict[str, list[int]],
          weights: list[float], shard: int, peer: str) -> None:
    source = target[shard]
    count[source] -= 1
    load[source] -= weights[shard]
    owned[source].remove(shard)
    bisect.insort(owned.setdefault(peer, []), shard)
    _assign(target, count, load, shard, peer, weights[shard])


Pass = tuple[int, str]  # (shard, to whom)
Move = tuple[int, str, tuple[Pass, ...]]
PASSES_MAX = 2  # shards a receiver may pass on to make room for one move
PASS_CANDIDATES_MAX = 6  # its busiest passable shards considered for two passes


def _best_move(busy: str, owned: dict[str, list[int]], count: dict[str, int], load: dict[str, float],
               weights: list[float], replicas_of: dict[int, list[str]], cap: int, used: set[str]) -> Move | None:
    """The move of one of `busy`'s busy shards to another of its replicas not in `used`, as
    (shard, receiver, the shards the receiver passes on first). A move must lower the sum
    of squared loads by at least the shard's weight squared: the receiver ends half a
    shard below the giver, so rates that moved by less cannot swing it back. The receiver
    may first pass up to PASSES_MAX of its shards, each to a third peer with room that
    ends no higher than the receiver was (so a pass never raises the sum of squares: on a
    mesh where most masters sit at the mean, a move needs them); the move is then judged
    on the receiver's load after them. Best: the lowest resulting load among the peers
    involved, then fewer passes, then the lower shard, then the better-ranked peers."""
    best: tuple[tuple, Move] | None = None
    for shard in (s for s in owned.get(busy, ()) if weights[s] > 0):
        weight, giver_after = weights[shard], load[busy] - weights[shard]
        for index, peer in enumerate(replicas_of[shard]):
            if peer == busy or peer in used:
                continue
            for passes in _pass_options(peer, busy, owned, count, load, weights, replicas_of, cap, used):
                before = load.get(peer, 0.0) - sum(weights[other] for other, _ in passes)
                if before + weight * (1 + MOVE_GAIN_MIN / 2) > load[busy]:
                    continue
                after = {busy: giver_after, peer: before + weight}
                after.update({to: load.get(to, 0.0) + weights[other] for other, to in passes})
                key = (max(after.values()), len(passes), shard, index, passes)
                if best is None or key < best[0]:
                    best = (key, (shard, peer, passes))
    return None if best is None else best[1]


def _pass_options(peer: str, busy: str, owned: dict[str, list[int]], count: dict[str, int], load: dict[str, float],
                  weights: list[float], replicas_of: dict[int, list[str]], cap: int,
                  used: set[str]) -> list[tuple[Pass, ...]]:
    """No pass (if `peer` has room), one pass, or two passes to different peers."""
    here = load.get(peer, 0.0)
    single = [(other, to) for other in owned.get(peer, ()) for to in replicas_of[other]
              if to not in (peer, busy) and to not in used and count.get(to, 0) < cap
              and load.get(to, 0.0) + weights[other] <= here]
    options: list[tuple[Pass, ...]] = [()] if count.get(peer, 0) < cap else []
    options += [(one,) for one in single]
    heaviest = sorted((p for p in single if weights[p[0]] > 0), key=lambda p: (-weights[p[0]], p))
    heaviest = heaviest[:PASS_CANDIDATES_MAX]
    options += [(a, b) for i, a in enumerate(heaviest) for b in heaviest[i + 1:] if a[0] != b[0] and a[1] != b[1]]
    return options


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
