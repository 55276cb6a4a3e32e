"""The topology view: a deterministic fold of `$topology` facts (a join-semilattice).

Each part of the view keeps only the greatest fact under a fixed total order, so applying
facts in any order, with any duplicates, gives the same view:

- Liveness (SWIM precedence): per peer, the greatest `(incarnation, rank)` wins, with rank
  alive/joined = 0 < suspect = 1 < failed = 2 < left = 3. A suspicion at incarnation i is
  refuted by `MemberAlive(peer, i + 1)`; a restarted peer rejoins with a higher
  incarnation. A peer known only from liveness facts (its join not yet seen) is a member
  with address "".
- Address: from the `MemberJoined` with the greatest (incarnation, address).
- Mesh shape: the `MeshConfigured` with the smallest encoding, so two peers that both
  created "the" mesh converge on one shape. Until one is known, shards and
  replication_factor are None.
- Masters: per shard the `MasterElected` with the greatest (epoch, rendezvous rank of the
  peer for that shard, peer name), so one epoch never has two masters after a merge.

Replica sets (top replication_factor live peers by rendezvous rank) are maintained
incrementally: a peer becoming live enters only the shards where it outranks the weakest
replica; a peer ceasing to be live forces a recount only of the shards it was in. That
keeps a 1000-peer simulation, where every peer holds its own fold, cheap.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from meshstream.errors import LocalProtocolError
from topology.events import (
    MasterElected,
    MemberAlive,
    MemberFailed,
    MemberJoined,
    MemberLeft,
    MemberSuspect,
    MeshConfigured,
    TopologyFact,
    encode_fact,
)
from topology.placement import rank_key, scores_of, top_peers

STATUSES = ("alive", "suspect", "failed", "left")  # index = SWIM precedence rank
LIVE_RANK_MAX = 1  # alive and suspect peers are live: they hold replicas, get probed
_RANK_OF: dict[type, int] = {MemberJoined: 0, MemberAlive: 0, MemberSuspect: 1, MemberFailed: 2, MemberLeft: 3}


@dataclass(frozen=True, slots=True)
class Member:
    peer: str
    address: str  # "" while only liveness facts, no MemberJoined, are known
    incarnation: int
    status: str  # "alive" | "suspect" | "failed" | "left"

    @property
    def live(self) -> bool:
        return self.status in ("alive", "suspect")


class TopologyState:
    """The view that a set of topology facts folds to. Mutable; `apply` only grows it."""

    def __init__(self) -> None:
        self._liveness: dict[str, tuple[int, int]] = {}  # peer -> (incarnation, rank)
        self._joined: dict[str, tuple[int, str]] = {}  # peer -> (incarnation, address)
        self._config: MeshConfigured | None = None
        self._config_bytes = b""
        self._masters: dict[int, MasterElected] = {}
        self._live: set[str] = set()
        self._failed: set[str] = set()  # status "failed" (not "left"): may come back after a heal
        self._live_sorted: list[str] | None = []
        # Per shard, the top replication_factor (score, peer) keys in ascending order; None:
        # recount on demand. `_floors[shard]` is the weakest key's score when the set is
        # full (-1 otherwise), so a new peer is compared once per shard with no lookups.
        self._ranked: list[list[tuple[int, str]]] | None = None
        self._floors: list[int] = []
        self._placement: dict[int, tuple[str, ...]] = {}  # shard -> replica set, built on demand
        self.version = 0  # bumped on every change, so callers can cache derived views
        # Bumped only when a replica set, a master or a master's liveness may have changed:
        # most joins touch no replica set, so views of placement keep their caches.
        self.placement_version = 0
        self._master_peers: frozenset[str] | None = frozenset()
        # peer -> the shards whose best-ranked key is that peer's, kept with `_ranked` (an
        # election check asks on every input; a recount per placement change was O(shards)).
        self._firsts: dict[str, set[int]] = {}
        # peer -> its Member as last built: every send asks for an address and membership
        # for liveness, and a frozen dataclass costs ~1 us to build. Dropped on any change.
        self._members: dict[str, Member] = {}

    # -- folding --

    def apply(self, fact: TopologyFact) -> bool:
        """Fold one fact in. Returns True if the view changed.

        Raises LocalProtocolError for an object that is not a topology fact.
        """
        match fact:
            case MeshConfigured():
                changed = self._apply_config(fact)
            case MasterElected():
                changed = self._apply_election(fact)
            case MemberJoined() | MemberAlive() | MemberSuspect() | MemberFailed() | MemberLeft():
                changed = self._apply_liveness(fact)
            case _:
                raise LocalProtocolError(f"not a topology fact: {fact!r}")
        if changed:
            self.version += 1
        return changed

    def apply_all(self, facts: Iterable[TopologyFact]) -> bool:
        """Fold many facts; True if any changed the view."""
        changed = False
        for fact in facts:
            changed = self.apply(fact) or changed
        return changed

    def _apply_config(self, fact: MeshConfigured) -> bool:
        encoded = encode_fact(fact)
        if self._config is not None and self._config_bytes <= encoded:
            return False
        self._config, self._config_bytes = fact, encoded
        self._ranked, self._placement, self._firsts = None, {}, {}  # the shape changed: recounted lazily
        self.placement_version += 1
        return True

    def _apply_election(self, fact: MasterElected) -> bool:
        current = self._masters.get(fact.shard)
        if current is not None and _election_key(current) >= _election_key(fact):
            return False
        self._masters[fact.shard] = fact
        self._master_peers = None
        self.placement_version += 1
        return True

    def _apply_liveness(self, fact: MemberJoined | MemberAlive | MemberSuspect | MemberFailed | MemberLeft) -> bool:
        changed = False
        if isinstance(fact, MemberJoined):
            joined = (fact.incarnation, fact.address)
            previous = self._joined.get(fact.peer, (-1, None))
            if joined > previous:
                self._joined[fact.peer] = joined
                # A newer join at the same address leaves the view as it was.
                changed = joined[1] != previous[1]
        liveness = (fact.incarnation, _RANK_OF[type(fact)])
        if liveness > self._liveness.get(fact.peer, (-1, -1)):
            self._liveness[fact.peer] = liveness
            self._set_live(fact.peer, liveness[1] <= LIVE_RANK_MAX)
            if STATUSES[liveness[1]] == "failed":
                self._failed.add(fact.peer)
            else:
                self._failed.discard(fact.peer)
            changed = True
        if changed:
            self._members.pop(fact.peer, None)
        return changed

    def _set_live(self, peer: str, live: bool) -> None:
        if live == (peer in self._live):
            return
        self._live_sorted = None
        if live:
            self._live.add(peer)
            moved = self._placement_add(peer)
        else:
            self._live.discard(peer)
            moved = self._placement_remove(peer)
        if self._master_peers is None:
            self._master_peers = frozenset(fact.peer for fact in self._masters.values())
        if moved or peer in self._master_peers:
            self.placement_version += 1

    # -- incremental placement --

    def _placement_add(self, peer: str) -> bool:
        """Place a peer that became live; True if a replica set may have changed."""
        ranked = self._ranked
        if ranked is None or self._config is None:
            return True  # counted lazily from the live set
        factor = self._config.replication_factor
        scores = scores_of(peer, self._config.shards)  # one cached vector, no lookup per shard
        floors = self._floors
        moved = False
        # map/compress run in C: this is the inner loop of every peer folding every join.
        for shard in list(itertools.compress(range(len(floors)), map(operator.ge, scores, floors))):
            keys = ranked[shard]
            key = (scores[shard], peer)
            first = keys[-1][1] if keys else None
            bisect.insort(keys, key)
            if len(keys) > factor:
                if keys[0] == key:
                    del keys[0]
                    continue  # a tie on score that the name loses: nothing moved
                del keys[0]
            if len(keys) == factor:
                floors[shard] = keys[0][0]
            if keys[-1] is key:
                self._move_first(shard, first, peer)
            self._placement.pop(shard, None)
            moved = True
        return moved

    def _placement_remove(self, peer: str) -> bool:
        """Take out a peer no longer live; True if a replica set may have changed."""
        ranked = self._ranked
        if ranked is None or self._config is None:
            return True
        moved = False
        factor, shards = self._config.replication_factor, self._config.shards
        scores = scores_of(peer, shards)
        for shard in range(shards):
            keys = ranked[shard]
            key = (scores[shard], peer)
            at = bisect.bisect_left(keys, key)
            if at == len(keys) or keys[at] != key:
                continue
            self._placement.pop(shard, None)
            moved = True
            was_first = at == len(keys) - 1
            if len(keys) < factor:  # not full: every live peer is in it, nobody moves up
                del keys[at]
            else:
                keys = ranked[shard] = sorted((rank_key(shard, p) for p in top_peers(shard, self._live, factor)))
                self._floors[shard] = keys[0][0] if len(keys) == factor else -1
            if was_first:  # the next best-ranked is first now
                self._move_first(shard, peer, keys[-1][1] if keys else None)
        return moved

    def _move_first(self, shard: int, before: str | None, after: str | None) -> None:
        """The best-ranked peer of `shard` changed from `before` to `after`."""
        if before == after:
            return
        if before is not None:
            held = self._firsts[before]
            held.discard(shard)
            if not held:
                del self._firsts[before]
        if after is not None:
            self._firsts.setdefault(after, set()).add(shard)

    def _ensure_ranked(self) -> list[list[tuple[int, str]]]:
        if self._ranked is None:
            assert self._config is not None
            shards = self._config.shards
            self._ranked, self._floors, self._placement, self._firsts = [[] for _ in range(shards)], [-1] * shards, {}, {}
            for peer in sorted(self._live):
                self._placement_add(peer)
        return self._ranked

    # -- queries --

    @property
    def shards(self) -> int | None:
        return None if self._config is None else self._config.shards

    @property
    def replication_factor(self) -> int | None:
        return None if self._config is None else self._config.replication_factor

    @property
    def configuration(self) -> MeshConfigured | None:
        return self._config

    def member(self, peer: str) -> Member | None:
        found = self._members.get(peer)
        if found is not None:
            return found
        liveness = self._liveness.get(peer)
        if liveness is None:
            return None
        incarnation, rank = liveness
        address = self._joined.get(peer, (0, ""))[1]
        found = self._members[peer] = Member(peer, address, incarnation, STATUSES[rank])
        return found

    def address(self, peer: str) -> str | None:
        """`member(peer).address` ("" before its join is seen), None for a peer never seen."""
        if peer not in self._liveness:
            return None
        return self._joined.get(peer, (0, ""))[1]

    def members(self) -> dict[str, Member]:
        """Every peer ever seen, by name in sorted order."""
        return {peer: self.member(peer) for peer in sorted(self._liveness)}  # type: ignore[misc]

    def live_peers(self) -> list[str]:
        """Alive or suspect peers, sorted."""
        if self._live_sorted is None:
            self._live_sorted = sorted(self._live)
        return list(self._live_sorted)

    def live_set(self) -> frozenset[str]:
        return frozenset(self._live)

    def is_live(self, peer: str) -> bool:
        return peer in self._live

    def failed_peers(self) -> list[str]:
        """Peers whose status is "failed" (declared dead, not departed), sorted."""
        return sorted(self._failed)

    def live_count(self) -> int:
        """How many peers are alive or suspect (O(1); membership sizes its timers by it)."""
        return len(self._live)

    def replica_set(self, shard: int) -> tuple[str, ...]:
        """The top replication_factor live peers for `shard`, best first (() if unconfigured).

        Raises LocalProtocolError for a shard outside 0..shards-1.
        """
        if self._config is None:
            return ()
        if not 0 <= shard < self._config.shards:
            raise LocalProtocolError(f"shard {shard} is outside 0..{self._config.shards - 1}")
        replicas = self._placement.get(shard)
        if replicas is None:
            replicas = tuple(peer for _, peer in reversed(self._ensure_ranked()[shard]))
            self._placement[shard] = replicas
        return replicas

    def shards_ranked_first(self, peer: str) -> list[int]:
        """The shards whose best-ranked live replica is `peer`, ascending."""
        if self._config is None:
            return []
        self._ensure_ranked()
        return sorted(self._firsts.get(peer, ()))

    def shards_of(self, peer: str) -> list[int]:
        """The shards whose replica set includes `peer`, ascending."""
        if self._config is None:
            return []
        ranked = self._ensure_ranked()
        scores = scores_of(peer, self._config.shards)
        return [shard for shard, keys in enumerate(ranked) if keys and scores[shard] >= keys[0][0]
                and (scores[shard], peer) in keys]

    def master(self, shard: int) -> tuple[str, int] | None:
        """The winning (peer, epoch) for `shard`, live or not; None if never elected."""
        fact = self._masters.get(shard)
        return None if fact is None else (fact.peer, fact.epoch)

    def live_master(self, shard: int) -> str | None:
        """The shard's master if it is alive or suspect, else None."""
        fact = self._masters.get(shard)
        return fact.peer if fact is not None and fact.peer in self._live else None

    def masters(self) -> dict[int, tuple[str, int]]:
        """Every elected shard's (peer, epoch), by shard ascending."""
        return {shard: (fact.peer, fact.epoch) for shard, fact in sorted(self._masters.items())}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able document of the view (for status pages and TopologyReply.view_json)."""
        return {
            "shards": self.shards,
            "replication_factor": self.replication_factor,
            "members": {
                peer: {"address": m.address, "incarnation": m.incarnation, "status": m.status}
                for peer, m in self.members().items()
            },
            "masters": {str(shard): {"peer": peer, "epoch": epoch} for shard, (peer, epoch) in self.masters().items()},
        }

    def copy(self) -> "TopologyState":
        """An independent state with the same view."""
        clone = TopologyState()
        clone._liveness = dict(self._liveness)
        clone._joined = dict(self._joined)
        clone._config, clone._config_bytes = self._config, self._config_bytes
        clone._masters = dict(self._masters)
        clone._live = set(self._live)
        clone._failed = set(self._failed)
        clone._live_sorted = None
        clone._ranked = None if self._ranked is None else [list(keys) for keys in self._ranked]
        clone._floors = list(self._floors)
        clone._firsts = {peer: set(shards) for peer, shards in self._firsts.items()}
        clone._placement = dict(self._placement)
        clone._members = dict(self._members)
        clone.version = self.version
        clone.placement_version = self.placement_version
        clone._master_peers = None
        return clone

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TopologyState):
            return NotImplemented
        return (self._liveness, self._joined, self._config, self._masters) == (
            other._liveness,
            other._joined,
            other._config,
            other._masters,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"TopologyState(members={len(self._liveness)}, live={len(self._live)}, shards={self.shards})"


def _election_key(fact: MasterElected) -> tuple[int, tuple[int, str]]:
    return (fact.epoch, rank_key(fact.shard, fact.peer))


def fold(facts: Iterable[TopologyFact]) -> TopologyState:
    """The view of any iterable of facts (order and duplicates do not matter)."""
    state = TopologyState()
    state.apply_all(facts)
    return state
