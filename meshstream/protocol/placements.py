"""Who holds what in this peer's view: each shard's placement and each peer's shards.

A shard's placement is its replica set plus its live master when that is not among them
(a master keeps its shard while a handover finishes). Both maps are derived from the fold
and cached per `TopologyState.placement_version`, which moves only when a replica set, a
master or a master's liveness may have changed.

A peer's shards are computed per peer asked while few are: during a join the placement
changes with nearly every joiner, and only this peer and a partner or two are asked before
the next change, so a map for all ~N peers was mostly thrown away (a 500-peer simulation
spent seconds building frozensets nobody read). Once `PEERS_ASKED_MAX` peers have been
asked at one version (anti-entropy offers come from many partners) the shards of every
peer are gathered in one pass, which costs about as much as that many single look-ups,
and frozen only for the peers asked.
"""

from __future__ import annotations

from topology.fold import TopologyState

PEERS_ASKED_MAX = 5  # distinct peers looked up one by one at a version (~6 us each) before
# gathering every peer's shards in one pass (~30 us at 64 shards)


class PlacementView:
    def __init__(self) -> None:
        self._state: TopologyState | None = None  # the fold the maps were built from
        self._version = -1
        self._by_shard: dict[int, tuple[str, ...]] = {}
        self._by_peer: dict[str, frozenset[int]] = {}  # the peers asked
        self._gathered: dict[str, set[int]] | None = None  # every peer's shards, once gathered

    def placement(self, state: TopologyState, shard: int) -> tuple[str, ...]:
        """The shard's replica set, plus its live master if outside it (KeyError for a
        shard outside the mesh shape)."""
        return self._refresh(state)[shard]

    def shards_of(self, state: TopologyState, peer: str) -> frozenset[int]:
        """The shards `peer` replicates or masters."""
        by_shard = self._refresh(state)
        shards = self._by_peer.get(peer)
        if shards is None:
            if self._gathered is None and len(self._by_peer) >= PEERS_ASKED_MAX:
                self._gathered = _gather(by_shard)
            if self._gathered is not None:
                shards = frozenset(self._gathered.get(peer, ()))
            else:
                shards = frozenset(s for s, peers in by_shard.items() if peer in peers)
            self._by_peer[peer] = shards
        return shards

    def _refresh(self, state: TopologyState) -> dict[int, tuple[str, ...]]:
        version = state.placement_version  # not `version`: most joins move no replica
        if state is not self._state or version != self._version:
            by_shard: dict[int, tuple[str, ...]] = {}
            for shard in range(state.shards or 0):
                peers = state.replica_set(shard)
                master = state.live_master(shard)
                by_shard[shard] = peers if master is None or master in peers else peers + (master,)
            self._state, self._version, self._by_shard = state, version, by_shard
            self._by_peer, self._gathered = {}, None
        return self._by_shard


def _gather(by_shard: dict[int, tuple[str, ...]]) -> dict[str, set[int]]:
    shards_of: dict[str, set[int]] = {}
    for shard, peers in by_shard.items():
        for peer in peers:
            shards_of.setdefault(peer, set()).add(shard)
    return shards_of
