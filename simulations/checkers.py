"""The invariants a scenario's `[expect]` asks for, computed from the peers' state.

During the run a `Sampler` looks at the live peers every sample interval and remembers when
each property last became true (its streak start): data convergence (every live replica of
each shard holds the same version vector and event count per stream), a single master per
shard (every live peer names the same live master), and membership convergence (every live
peer folds the same view). `converged_by_s` etc. hold when the property held at the end
and its final streak began by that time.

At the end the checks are exact:
- `divergent_replicas`: replicas whose `store.read(stream, empty cursor)` (the canonical
  order) differs from the most common one among the stream's live replicas.
- `no_acked_loss` (DESIGN section 6): every acknowledged event is on every live replica of
  its shard, unless every peer that ever made it durable is down at the end.
- `no_duplicates`: no natural key served twice by a store, and no reader was served one
  event (one digest) twice across its cursor. A reader served two events with one key
  (both branches of a partition, before the merge picks a winner) is reported as
  `key_rereads`, not as a duplicate: the store-level check covers the end state.
- `no_failed_live_peers`: no live peer is failed or left in any live peer's view.
- scale-out (`placement_problems`, `balance_problems`, `dropped_problems`): every shard's
  master is in its replica set and has confirmed each replica caught up; no peer masters
  more than ceil(shards / peers) + 1 shards; peers outside a shard's replica set hold
  none of its events and every replica holds all that any live peer holds. All three
  read the most common view (`reference_node`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from meshstream.clocks import VersionVector
from meshstream.errors import CorruptRecord
from meshstream.ids import TOPOLOGY_STREAM, shard_of
from simulations.cluster import SimCluster
from topology.election import master_cap

READ_ALL_EVENTS = 10_000_000
LIVE_STATUSES = ("alive", "suspect")


def membership_fingerprint(node: Any, shards: int) -> tuple:
    """What a peer's view says: members with status and incarnation, and every master."""
    members = node.topology.members()
    people = tuple((name, members[name].status, members[name].incarnation) for name in sorted(members))
    masters = tuple(node.topology.master(shard) for shard in range(shards))
    return people, masters


def reference_node(cluster: SimCluster, shards: int) -> Any | None:
    """The live node holding the most common view (ties: the smallest name)."""
    views: dict[str, tuple] = {}
    for name in cluster.live_peers():
        views[name] = membership_fingerprint(cluster.peers[name].node, shards)
    if not views:
        return None
    counts = Counter(views.values())
    best = min(views, key=lambda name: (-counts[views[name]], name))
    return cluster.peers[best].node


def membership_converged(cluster: SimCluster, shards: int) -> bool:
    live = cluster.live_peers()
    prints = {membership_fingerprint(cluster.peers[name].node, shards) for name in live}
    if len(prints) != 1:
        return False
    (people, _), = prints
    statuses = {name: status for name, status, _ in people}
    return all(statuses.get(name) in LIVE_STATUSES for name in live)


def master_problems(cluster: SimCluster, shards: int) -> list[str]:
    """Why the shards do not each have exactly one live master agreed by every live peer."""
    problems = []
    live = cluster.live_peers()
    for shard in range(shards):
        named = {cluster.peers[name].node.topology.live_master(shard) for name in live}
        if len(named) != 1:
            problems.append(f"shard {shard}: peers name {sorted(str(m) for m in named)}")
            continue
        (master,) = named
        if master is None or master not in cluster.peers or not cluster.peers[master].alive:
            problems.append(f"shard {shard}: master {master} is not a live peer")
    return problems


def failed_live_peers(cluster: SimCluster) -> list[str]:
    problems = []
    live = cluster.live_peers()
    for observer in live:
        members = cluster.peers[observer].node.topology.members()
        for name in live:
            member = members.get(name)
            if member is not None and member.status not in LIVE_STATUSES:
                problems.append(f"{observer} sees {name} {member.status}")
    return problems


def replica_groups(cluster: SimCluster, shards: int) -> dict[str, list[str]]:
    """Data stream -> its live replicas: every live peer that any live peer's view names a
    replica of the stream's shard (the union, so split views cannot hide a divergence)."""
    live = cluster.live_peers()
    streams: set[str] = set()
    for name in live:
        streams.update(s for s in cluster.peers[name].store.streams() if not s.startswith("$"))
    groups = {}
    for stream in sorted(streams):
        shard = shard_of(stream, shards)
        named: set[str] = set()
        for name in live:
            named.update(cluster.peers[name].node.topology.replica_set(shard))
        groups[stream] = sorted(peer for peer in named if peer in cluster.peers and cluster.peers[peer].alive)
    return groups


def data_converged_quick(cluster: SimCluster, shards: int) -> bool:
    """Cheap sample: replicas agree on version vectors and event counts."""
    for stream, replicas in replica_groups(cluster, shards).items():
        states = {(cluster.peers[p].store.version_vector(stream), cluster.peers[p].store.event_count(stream))
                  for p in replicas}
        if len(states) > 1:
            return False
    return True


def divergent_replicas(cluster: SimCluster, shards: int) -> list[str]:
    """Exact: replicas whose canonical read differs from the most common one."""
    divergent = []
    for stream, replicas in replica_groups(cluster, shards).items():
        orders = {p: _read_digests(cluster.peers[p].store, stream) for p in replicas}
        counts = Counter(orders.values())
        if len(counts) <= 1:
            continue
        majority = min(counts, key=lambda order: (-counts[order], order))
        divergent.extend(f"{stream}@{p}" for p in replicas if orders[p] != majority)
    return divergent


def _read_digests(store: Any, stream: str) -> tuple[bytes, ...]:
    return tuple(event.digest for event in store.read(stream, VersionVector(), READ_ALL_EVENTS))


@dataclass
class LossReport:
    lost: list[str] = field(default_factory=list)
    exempt: int = 0  # only peers that crashed and never came back held it


def acked_loss(cluster: SimCluster, shards: int, acked: list[Any]) -> LossReport:
    report = LossReport()
    reference = reference_node(cluster, shards)
    for event in acked:
        replicas = reference.topology.replica_set(shard_of(event.stream, shards)) if reference else ()
        live_replicas = [p for p in replicas if p in cluster.peers and cluster.peers[p].alive]
        missing = [p for p in live_replicas if not _holds(cluster.peers[p].store, event.stream, event.key)]
        if not missing and live_replicas:
            continue
        holders = cluster.holders.get((event.stream, event.key), set())
        if holders and not any(cluster.peers[h].alive for h in holders):
            report.exempt += 1
            continue
        where = ",".join(missing) or "(no live replica)"
        report.lost.append(f"{event.stream}/{event.key.decode(errors='replace')} missing on {where}")
    return report


def _holds(store: Any, stream: str, key: bytes) -> bool:
    try:
        return store.get(stream, key) is not None
    except CorruptRecord:
        return False


def store_duplicates(cluster: SimCluster) -> list[str]:
    """Natural keys a live store serves more than once."""
    found = []
    for name in cluster.live_peers():
        store = cluster.peers[name].store
        for stream in store.streams():
            if stream == TOPOLOGY_STREAM:
                continue
            keys = Counter(event.key for event in store.read(stream, VersionVector(), READ_ALL_EVENTS))
            found.extend(f"{stream}/{key.decode(errors='replace')}@{name}" for key, n in sorted(keys.items()) if n > 1)
    return found


class Sampler:
    """Remembers when each property last became true (None: false at the last sample)."""

    PROPERTIES = ("data", "masters", "membership")

    def __init__(self, cluster: SimCluster, shards: int) -> None:
        self.cluster = cluster
        self.shards = shards
        self.since: dict[str, float | None] = {name: None for name in self.PROPERTIES}
        self.samples = 0

    def sample(self) -> None:
        now = self.cluster.loop.now
        self.samples += 1
        if not self.cluster.live_peers():
            self.since = {name: None for name in self.PROPERTIES}
            return
        values = {
            "data": data_converged_quick(self.cluster, self.shards),
            "masters": not master_problems(self.cluster, self.shards),
            "membership": membership_converged(self.cluster, self.shards),
        }
        for name, holds in values.items():
            if not holds:
                self.since[name] = None
            elif self.since[name] is None:
                self.since[name] = now


def placement_problems(cluster: SimCluster, shards: int) -> list[str]:
    """Shards whose master is outside the replica set or has not confirmed every replica."""
    reference = reference_node(cluster, shards)
    if reference is None:
        return ["no live peer"]
    problems = []
    for shard in range(shards):
        replicas = reference.topology.replica_set(shard)
        master = reference.topology.live_master(shard)
        if master is None or master not in replicas or not cluster.peers[master].alive:
            problems.append(f"shard {shard}: master {master} not in {list(replicas)}")
            continue
        counted = cluster.peers[master].node.rebalance.counted(shard, replicas)
        if counted != set(replicas):
            problems.append(f"shard {shard}: {sorted(set(replicas) - counted)} not confirmed caught up")
    return problems


def balance_problems(cluster: SimCluster, shards: int) -> list[str]:
    """Peers mastering more than ceil(shards / live peers) + 1 shards."""
    reference = reference_node(cluster, shards)
    if reference is None:
        return ["no live peer"]
    load = Counter(reference.topology.live_master(shard) for shard in range(shards))
    cap = master_cap(shards, len(cluster.live_peers()))
    return [f"{peer} masters {count} shards > {cap}" for peer, count in sorted(load.items(), key=str) if count > cap]


def dropped_problems(cluster: SimCluster, shards: int) -> list[str]:
    """Peers outside a stream's replica set that still hold its events, and replicas that
    lack some that a live peer holds (by version vectors and event counts)."""
    reference = reference_node(cluster, shards)
    if reference is None:
        return ["no live peer"]
    live = cluster.live_peers()
    holders: dict[str, list[str]] = {}
    for name in live:
        store = cluster.peers[name].store
        for stream in store.streams():
            if not stream.startswith("$"):
                holders.setdefault(stream, []).append(name)
    problems = []
    for stream in sorted(holders):
        replicas = [p for p in reference.topology.replica_set(shard_of(stream, shards)) if p in cluster.peers
                    and cluster.peers[p].alive]
        union = VersionVector()
        for name in holders[stream]:
            union = union.merge(cluster.peers[name].store.version_vector(stream))
        most = max(cluster.peers[name].store.event_count(stream) for name in holders[stream])
        for name in holders[stream]:
            if name not in replicas:
                problems.append(f"{stream}@{name}: {cluster.peers[name].store.event_count(stream)} events "
                                f"outside the replica set")
        for name in replicas:
            store = cluster.peers[name].store
            if store.version_vector(stream) != union or store.event_count(stream) != most:
                problems.append(f"{stream}@{name}: a replica lacks events another peer holds")
    return problems
