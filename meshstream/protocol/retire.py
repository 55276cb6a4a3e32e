"""Retired replicas drop their data once the new replica set holds all of it.

A peer that holds events of a shard it no longer replicates (rendezvous placement moved the
shard to newer peers; `Node.responsible_shards`) keeps them while the move is under way:
it is a *retiring* replica, still pushed to and counted by the master until every member
of the new set is confirmed caught up (`rebalance.py`). Then it may drop them, and only
then. Every `RELEASE_EVERY_INTERVALS` gossip intervals, with a steady view, it asks every
member of the shard's new set (in its own view) with a `ReleaseQuery` carrying its
version vectors for the shard's streams. A member answers that it *covers* the shard
(`ReleaseReply`) when all of these hold in its own view:

- it is in the shard's placement (it keeps the shard: nobody drops it next);
- its store's vectors (durable events only) hold every dot the asker's vectors hold (the
  asker raises its vectors to any dot it holds beyond a gap, so that is covered too);
- it is confirmed for the current master epoch: the master when every member of the
  placement is confirmed caught up (`Rebalance.all_confirmed`), a replica when the
  master has confirmed it (`Rebalance.confirmed_here`);
- it is not handing the shard over, and not leaving the mesh (draining).

A member of the set that lacks events the asker holds pulls them from it at once
(`AntiEntropy.pull_from`): the new set may never have caught up from the old one (a set
replaced at once under a master its electors did not know was alive), and in a large mesh
no anti-entropy round of the new set picks the retired replica as a partner.

The asker drops the shard's streams (`EventStore.drop_streams`, durable) once every
member of its placement answered "covers" for the round, what it holds is still what it
said (nothing arrived since), nothing of the shard is in flight to its disk, no
anti-entropy pull of it is under way, and it still does not replicate the shard. So every
event it drops is durable on every member of the new set: nothing acknowledged can be
lost, whatever its ack level. A late push that lands afterwards is dropped by a later
round. Anti-entropy never pulls the shard back (a peer pulls only shards it replicates),
and a peer that re-enters the set catches up again like any new replica (its
confirmation was forgotten when it left).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshstream import ids
from meshstream.clocks import VersionVector
from meshstream.protocol.effects import Effect, Journal, Send
from meshstream.wire.rebalance_messages import QUERY_SHARDS_MAX, ReleaseQuery, ReleaseReply
from meshstream.wire.replication_messages import StreamVector

if TYPE_CHECKING:
    from meshstream.protocol.rebalance import Rebalance

RELEASE_EVERY_INTERVALS = 4  # a retired replica asks every 4th gossip interval until released
RELEASE_MESSAGES = (ReleaseQuery, ReleaseReply)
STRAGGLERS_MAX = 1024  # events beyond a gap in the vector, read to describe what is held


@dataclass(slots=True)
class Asked:
    held: list[StreamVector]  # what the asker said it holds: anything more arrived since
    members: frozenset[str]  # the placement asked
    covered: set[str]


class Retirement:
    def __init__(self, rebalance: "Rebalance") -> None:
        self.rebalance = rebalance
        self.node = rebalance.node
        self._asked: dict[int, Asked] = {}
        self.shards_dropped = 0
        self.streams_dropped = 0

    # ------------------------------------------------------------------ the retired replica
    def held_elsewhere(self) -> list[int]:
        """Shards this peer holds events (or dots) of but does not replicate, ascending."""
        node = self.node
        shards = node.topology.shards
        if shards is None:
            return []
        mine = node.responsible_shards(node.name)
        store = node.store
        return [shard for shard in range(shards) if shard not in mine
                and any(store.event_count(stream) or store.version_vector(stream) for stream in node.streams_in(shard))]

    def tick(self, now: float) -> list[Effect]:
        """Ask the new sets of the shards held here but replicated elsewhere."""
        self._asked.clear()
        node = self.node
        if self.rebalance.draining or not self.rebalance.steady(now):
            return []
        by_member: dict[str, list[int]] = {}
        held: dict[int, list[StreamVector]] = {}
        for shard in self.held_elsewhere()[:QUERY_SHARDS_MAX]:
            members = node.placement(shard)
            if not members or node.anti_entropy.pulling(shard, now) or self._in_flight(shard):
                continue
            vectors = [self._held(stream) for stream in node.streams_in(shard)]
            if any(vector is None for vector in vectors):
                continue  # too many events beyond a gap: anti-entropy fills it first
            held[shard] = vectors  # type: ignore[assignment]
            self._asked[shard] = Asked(held[shard], frozenset(members), set())
            for member in members:
                by_member.setdefault(member, []).append(shard)
        effects: list[Effect] = []
        for member in sorted(by_member):
            shards = tuple(by_member[member])
            vectors = tuple(vector for shard in shards for vector in held[shard])
            effects.append(Send(member, ReleaseQuery(shards, vectors)))
        return effects

    def _held(self, stream: str) -> StreamVector | None:
        """Every dot this peer holds of `stream` as a vector: the store's (contiguous) vector
        raised to the highest dot held beyond a gap (a late push), so a member covers it
        only when it holds a contiguous run through that dot. None when more than
        STRAGGLERS_MAX events sit beyond gaps."""
        store = self.node.store
        vector = store.version_vector(stream)
        beyond = store.events_missing(stream, vector, STRAGGLERS_MAX + 1)
        if len(beyond) > STRAGGLERS_MAX:
            return None
        tops: dict[str, int] = {}
        for event in beyond:
            tops[event.dot.peer] = max(tops.get(event.dot.peer, 0), event.dot.counter)
        return StreamVector(stream, vector.merge(tops) if tops else vector)

    def on_reply(self, src: str, reply: ReleaseReply, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for shard in sorted(set(reply.covered)):
            asked = self._asked.get(shard)
            if asked is None or src not in asked.members:
                continue
            asked.covered.add(src)
            if asked.covered >= asked.members:
                del self._asked[shard]
                effects += self._drop(shard, asked, now)
        return effects

    def _drop(self, shard: int, asked: Asked, now: float) -> list[Effect]:
        node = self.node
        if (shard in node.responsible_shards(node.name) or self._held_now(shard) != asked.held
                or self._in_flight(shard) or node.anti_entropy.pulling(shard, now) or not self.rebalance.steady(now)):
            return []  # something moved since the question: ask again next round
        streams = node.streams_in(shard)
        if not node.store.drop_streams(streams):
            return []  # a batch is on its way to disk: next round
        # The node's stream index and conflict losers belong to it; they only shrink here.
        node._streams_by_shard.get(shard, set()).difference_update(streams)
        for stream in streams:
            node._losers.pop(stream, None)
        self.shards_dropped += 1
        self.streams_dropped += len(streams)
        return [Journal("dropped", f"{node.name} drops shard {shard} ({len(streams)} stream(s)): "
                        f"{','.join(sorted(asked.members))} hold all of it")]

    def _held_now(self, shard: int) -> list[StreamVector | None]:
        return [self._held(stream) for stream in self.node.streams_in(shard)]

    def _in_flight(self, shard: int) -> bool:
        node = self.node
        return any(not stream.startswith(ids.SYSTEM_PREFIX) and node.shard_of(stream) == shard
                   for stream, _key in node.unpersisted)

    # ------------------------------------------------------------------ a member of the new set
    def on_query(self, src: str, query: ReleaseQuery, now: float) -> list[Effect]:
        node = self.node
        theirs: dict[str, VersionVector] = {v.stream: v.vector for v in query.vectors}
        shards = node.topology.shards or 0
        covered: list[int] = []
        lacking: list[int] = []
        for shard in sorted(set(query.shards)):
            if not 0 <= shard < shards:
                continue
            if self._covers(shard, src, theirs):
                covered.append(shard)
            elif self._lacks(shard, theirs):
                lacking.append(shard)
        effects: list[Effect] = [Send(src, ReleaseReply(tuple(covered)))]
        if lacking:
            effects += node.anti_entropy.pull_from(src, lacking, now)
        return effects

    def _lacks(self, shard: int, theirs: dict[str, VersionVector]) -> bool:
        """This peer replicates `shard` and the asker holds events of it that it lacks.

        Then it pulls them from the asker. Anti-entropy alone may never do it: a peer pulls
        a shard from the partners it picks for rounds, and those are the peers it shares a
        shard with, so in a large mesh the retired replica of a shard is rarely picked by
        the new set. When the old set is replaced at once and the new set never caught up
        from it (a master elected by peers that did not know the old one was alive), the
        retired replicas' queries are the one thing that reaches the new set."""
        node = self.node
        return node.name in node.placement(shard) and not self._holds(shard, theirs, node.pull_vector)

    def _covers(self, shard: int, asker: str, theirs: dict[str, VersionVector]) -> bool:
        node, rebalance = self.node, self.rebalance
        if rebalance.draining:
            return False  # leaving: its copy is about to go
        placement = node.placement(shard)
        if node.name not in placement or asker in placement or rebalance.sequencing_paused(shard):
            return False
        master = node.topology.master(shard)
        if master is None or not node.topology.is_live(master[0]):
            return False
        if master[0] == node.name:
            if not rebalance.all_confirmed(shard):
                return False
        elif not rebalance.confirmed_here(shard, master):
            return False
        return self._holds(shard, theirs, node.store.version_vector)

    def _holds(self, shard: int, theirs: dict[str, VersionVector],
               vector_of: Callable[[str], VersionVector]) -> bool:
        """`vector_of` (this peer's vectors) covers every dot of `shard` in the asker's `theirs`."""
        node = self.node
        for stream, vector in theirs.items():
            if node.shard_of(stream) != shard:
                continue
            mine = vector_of(stream)
            if any(mine.get(peer) < count for peer, count in vector.items()):
                return False
        return True
