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
        self._placement: dict[int, tuple[str, ...]] | None = None  # None: recompute on demand
        self.version = 0  # bumped on every change, so callers can cache derived views

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
        self._placement = None  # the shape changed: every replica set is recounted lazily
        return True

    def _apply_election(self, fact: MasterElected) -> bool:
        current = self._masters.get(fact.shard)
        if current is not None and _election_key(current) >= _election_key(fact):
            return False
        self._masters[fact.shard] = fact
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
        return changed

    def _set_live(self, peer: str, live: bool) -> None:
        if live == (peer in self._live):
            return
        self._live_sorted = None
        if live:
            self._live.add(peer)
            self._placement_add(peer)
        else:
            self._live.discard(peer)
            self._placement_remove(peer)

    # -- incremental placement --

    def _placement_add(self, peer: str) -> None:
        if self._placement is None or self._config is None:
            return
        factor, shards = self._config.replication_factor, self._config.shards
        scores = scores_of(peer, shards)  # one cached vector instead of a lookup per shard
        for shard, replicas in self._placement.items():
            key = (scores[shard], peer)
            if len(replicas) == factor and key <= (scores_of(replicas[-1], shards)[shard], replicas[-1]):
                continue
            # Replica sets hold at most 16 peers: a linear scan for the slot is cheapest.
            position = 0
            while position < len(replicas) and rank_key(shard, replicas[position]) > key:
                position += 1
            self._placement[shard] = (replicas[:position] + (peer,) + replicas[position:])[:factor]

    def _placement_remove(self, peer: str) -> None:
        if self._placement is None or self._config is None:
            return
        factor = self._config.replication_factor
        for shard, replicas in self._placement.items():
            if peer in replicas:
                self._placement[shard] = top_peers(shard, self._live, factor)

    def _ensure_placement(self) -> dict[int, tuple[str, ...]]:
        if self._placement is None:
            assert self._config is not None
            factor = self._config.replication_factor
            self._placement = {
                shard: top_peers(shard, self._live, factor) for shard in range(self._config.shards)
            }
        return self._placement

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
        liveness = self._liveness.get(peer)
        if liveness is None:
            return None
        incarnation, rank = liveness
        address = self._joined.get(peer, (0, ""))[1]
        return Member(peer, address, incarnation, STATUSES[rank])

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
        return self._ensure_placement()[shard]

    def shards_ranked_first(self, peer: str) -> list[int]:
        """The shards whose best-ranked live replica is `peer`, ascending."""
        if self._config is None:
            return []
        placement = self._ensure_placement()
        return [shard for shard in range(self._config.shards) if placement[shard][:1] == (peer,)]

    def shards_of(self, peer: str) -> list[int]:
        """The shards whose replica set includes `peer`, ascending."""
        if self._config is None:
            return []
        placement = self._ensure_placement()
        return [shard for shard in range(self._config.shards) if peer in placement[shard]]

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
        clone._placement = None if self._placement is None else dict(self._placement)
        clone.version = self.version
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
