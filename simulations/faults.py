"""Applying scenario faults to the simulated cluster when they fire.

Node selectors resolve at the moment a fault fires: a peer name, `master:STREAM` (the
master most live peers name for the stream's shard), `crashed` (every peer down and not
departed), `isolated` (peers cut off by `partition nodes=`), `live` (every peer up).
`pick = K` then keeps K of them, drawn from the run's seeded generator.

Every fault is journalled and put on the timeline with the peers it hit.
"""

from __future__ import annotations

import random
from collections import Counter

from simulations.cluster import SimCluster, TimelineEntry
from simulations.scenario import Fault


class FaultInjector:
    def __init__(self, cluster: SimCluster, rng: random.Random, initial_nodes: int) -> None:
        self.cluster = cluster
        self.rng = rng
        self.next_number = initial_nodes + 1
        self.master_crashes: list[tuple[float, str, str]] = []  # (time, peer, stream)
        self.last_heal_s: float | None = None
        self.last_fault_s: float | None = None

    def resolve(self, fault: Fault) -> list[str]:
        chosen: set[str] = set()
        for selector in fault.nodes or ():
            chosen.update(self._select(selector))
        names = sorted(chosen)
        if fault.pick is not None and len(names) > fault.pick:
            names = sorted(self.rng.sample(names, fault.pick))
        return names

    def _select(self, selector: str) -> list[str]:
        cluster = self.cluster
        if selector == "crashed":
            return cluster.down_peers()
        if selector == "live":
            return cluster.live_peers()
        if selector == "isolated":
            return sorted(cluster.network.isolated)
        if selector.startswith("master:"):
            master = self.master_of(selector[len("master:"):])
            return [master] if master is not None else []
        return [selector] if selector in cluster.peers else []

    def master_of(self, stream: str) -> str | None:
        """The master that most live peers name for the stream (ties: the smallest name)."""
        votes: Counter = Counter()
        for name in self.cluster.live_peers():
            master = self.cluster.peers[name].node.master_of(stream)
            if master is not None:
                votes[master] += 1
        if not votes:
            return None
        return min(votes, key=lambda peer: (-votes[peer], peer))

    def apply(self, fault: Fault) -> None:
        cluster = self.cluster
        now = cluster.loop.now
        self.last_fault_s = now
        names = self.resolve(fault)
        detail = self._dispatch(fault, names)
        cluster.journal.record(now, "fault", f"{fault.kind} {detail}")
        cluster.timeline.append(TimelineEntry(now, "fault", f"{fault.kind} {detail}"))

    def _dispatch(self, fault: Fault, names: list[str]) -> str:
        cluster = self.cluster
        kind = fault.kind
        if kind == "crash":
            for name in names:
                self._note_master_crash(fault, name)
                cluster.crash(cluster.peers[name])
        elif kind == "restart":
            for name in names:
                peer = cluster.peers[name]
                if not peer.alive:
                    cluster.start_peer(peer, cluster.seeds_for(name))
        elif kind == "leave":
            for name in names:
                cluster.leave(cluster.peers[name])
        elif kind == "join":
            names = self._join(fault.count)
        elif kind == "partition":
            return self._partition(fault, names)
        elif kind == "heal":
            cluster.network.heal(names if fault.nodes is not None else None)
            self.last_heal_s = cluster.loop.now
            if fault.nodes is None:
                return "all"
        elif kind == "loss":
            cluster.network.set_link(names if fault.nodes is not None else None, loss=fault.loss)
            return f"{fault.loss} {' '.join(names) or 'all'}"
        elif kind == "latency":
            cluster.network.set_link(names if fault.nodes is not None else None, latency_ms=fault.latency_ms)
            return f"{list(fault.latency_ms)} ms {' '.join(names) or 'all'}"
        elif kind == "corrupt":
            hit = [f"{name}:{record}" for name in names
                   for record in cluster.peers[name].disk.corrupt(self.rng, fault.count)]
            return " ".join(hit) or "(nothing to corrupt)"
        else:
            raise AssertionError(kind)
        return " ".join(names) or "(no peer selected)"

    def _note_master_crash(self, fault: Fault, name: str) -> None:
        for selector in fault.nodes or ():
            if selector.startswith("master:"):
                self.master_crashes.append((self.cluster.loop.now, name, selector[len("master:"):]))

    def _join(self, count: int) -> list[str]:
        added = []
        for _ in range(count):
            name = f"n{self.next_number}"
            self.next_number += 1
            live = self.cluster.live_peers()
            seeds = [self.rng.choice(live)] if live else []
            self.cluster.add_peer(name, seeds)
            added.append(name)
        if len(added) > 6:
            return [f"{added[0]}..{added[-1]} ({len(added)} peers)"]
        return added

    def _partition(self, fault: Fault, names: list[str]) -> str:
        network = self.cluster.network
        parts = []
        if fault.groups:
            network.partition(fault.groups)
            parts.append(" | ".join(",".join(group) for group in fault.groups))
        if fault.nodes is not None:
            network.isolate(names)
            parts.append("isolate " + (",".join(names) or "(none)"))
        if fault.one_way:
            network.cut_one_way(fault.one_way)
            parts.append("one-way " + ",".join(f"{a}->{b}" for a, b in fault.one_way))
        return "; ".join(parts)
