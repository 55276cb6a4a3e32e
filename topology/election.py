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
