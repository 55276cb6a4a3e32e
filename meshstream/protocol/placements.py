"""Who holds what in this peer's view: each shard's placement and each peer's shards.

A shard's placement is its replica set plus its live master when that is not among them
(a master keeps its shard while a handover finishes). Both maps are derived from the fold
and cached per `TopologyState.placement_version`, which moves only when a replica set, a
master or a master's liveness may have changed.

A peer's shards are looked up per peer asked (this peer and a partner or two between
changes of the view during a join; anti-entropy partners one by one after it): the fold
names the shards whose replica sets hold the peer (`TopologyState.shards_of`, from the
ranked keys it keeps: a C pass over the shards, no replica set walked), and the shards
whose live master it is are noted while the placements are built.
"""

from __future__ import annotations

from topology.fold import TopologyState


class PlacementView:
    def __init__(self) -> None:
        self._state: TopologyState | None = None  # the fold the maps were built from
        self._version = -1
        self._by_shard: dict[int, tuple[str, ...]] = {}
        self._by_peer: dict[str, frozenset[int]] = {}  # the peers asked
        self._led: dict[str, list[int]] = {}  # live master -> the shards it masters

    def placement(self, state: TopologyState, shard: int) -> tuple[str, ...]:
        """The shard's replica set, plus its live master if outside it (KeyError for a
        shard outside the mesh shape)."""
        return self._refresh(state)[shard]

    def shards_of(self, state: TopologyState, peer: str) -> frozenset[int]:
        """The shards `peer` replicates or masters."""
        self._refresh(state)
        shards = self._by_peer.get(peer)
        if shards is None:
            shards = self._by_peer[peer] = frozenset(state.shards_of(peer)).union(self._led.get(peer, ()))
        return shards

    def _refresh(self, state: TopologyState) -> dict[int, tuple[str, ...]]:
        version = state.placement_version  # not `version`: most joins move no replica
        if state is not self._state or version != self._version:
            by_shard: dict[int, tuple[str, ...]] = {}
            led: dict[str, list[int]] = {}
            for shard in range(state.shards or 0):
                peers = state.replica_set(shard)
                master = state.live_master(shard)
                if master is not None:
                    led.setdefault(master, []).append(shard)
                by_shard[shard] = peers if master is None or master in peers else peers + (master,)
            self._state, self._version, self._by_shard = state, version, by_shard
            self._by_peer, self._led = {}, led
        return self._by_shard
