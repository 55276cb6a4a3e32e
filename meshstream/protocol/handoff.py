"""A leaving peer hands its shards' data to the peers that replace it.

Graceful leave (`Rebalance.drain`) hands mastership over, but the data of a shard this
peer replicates reaches the peer that takes its place in the replica set only by
anti-entropy, and only once `MemberLeft` has changed the view. When every replica of a
shard leaves at once (a third of a mesh leaving together does that to a few shards), and
the retired replicas of earlier moves have dropped their copies (`retire.py`), nobody would
be left to pull from. So while draining, for every shard it replicates, this peer sends
all the shard's events to the `replication_factor` best-ranked peers outside the shard's
placement (those that would replace every replica leaving at once), as unsolicited
`SyncEvents` batches (the receiver stores them like any anti-entropy batch), and the drain
waits `HANDOFF_SETTLE_S` after the last batch before `MemberLeft`. Peers leaving together
each exclude only themselves, so they all send to the same next-ranked peers; one that
holds the shard when the view changes seeds the rest of the new set. (Sending to the one
successor only lost a shard whose three replicas and that successor all left together.)
A receiver that does not replicate the shard drops it again like any retired replica,
once every member of the set covers it; a draining member never covers.

Best effort, bounded by `HANDOFF_EVENTS_MAX` and the drain deadline: a leave is no crash,
and beyond that bound the new set catches up from whichever replicas stay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshstream.clocks import VersionVector
from meshstream.protocol.effects import Effect, Journal, Send
from meshstream.wire.replication_messages import SyncEvents
from topology.placement import top_peers

if TYPE_CHECKING:
    from meshstream.protocol.node import Node

HANDOFF_EVENTS_MAX = 200_000  # events a leaving peer sends at most (the rest: anti-entropy)
HANDOFF_SETTLE_S = 0.5  # after the last batch, time for the receivers to make it durable
HANDOFF_ROUND_ID = 0  # SyncEvents round id of a handoff (answers no pull of the receiver)


class Handoff:
    def __init__(self, node: "Node") -> None:
        self.node = node
        self.sent_at: float | None = None
        self.events_sent = 0

    def start(self, now: float) -> list[Effect]:
        """Send every replicated shard's events to the peers that replace this one (once)."""
        if self.sent_at is not None:
            return []
        self.sent_at = now
        node = self.node
        topology = node.topology
        shards = topology.shards or 0
        rest = [p for p in topology.live_peers() if p != node.name]
        effects: list[Effect] = []
        for shard in sorted(node.responsible_shards(node.name)):
            if shard >= shards:
                continue
            ranked = top_peers(shard, rest, 2 * topology.replication_factor - 1)
            newcomers = [p for p in ranked if p not in node.placement(shard)]
            for peer in newcomers:
                effects += self._send_shard(peer, shard)
        if self.events_sent:
            effects.append(Journal("handoff", f"{node.name} hands {self.events_sent} events to the peers "
                                              f"that replace it"))
        return effects

    def _send_shard(self, peer: str, shard: int) -> list[Effect]:
        node = self.node
        config = node.config
        effects: list[Effect] = []
        batch: list = []
        size = 0
        for stream in node.streams_in(shard):
            room = HANDOFF_EVENTS_MAX - self.events_sent
            if room <= 0:
                break
            for event in node.store.events_missing(stream, VersionVector(), room):
                cost = event.size() + 8
                if batch and (len(batch) >= config.anti_entropy_batch_events_max
                              or size + cost > config.anti_entropy_batch_bytes_max):
                    effects.append(Send(peer, SyncEvents(HANDOFF_ROUND_ID, tuple(batch), False)))
                    batch, size = [], 0
                batch.append(event)
                size += cost
                self.events_sent += 1
        if batch:
            effects.append(Send(peer, SyncEvents(HANDOFF_ROUND_ID, tuple(batch), False)))
        return effects

    def settled(self, now: float) -> bool:
        """The receivers have had HANDOFF_SETTLE_S to store what was sent (or nothing was)."""
        return self.sent_at is None or not self.events_sent or now >= self.sent_at + HANDOFF_SETTLE_S
