"""Rebalancing: new replicas count toward acks only once caught up; masters move to keep
the load balanced; a leaving peer hands its shards off first.

Catch-up (readiness), decided by each shard's master, locally:
- A replica of a shard whose live master has not confirmed it for the master's current
  epoch sends the master a `CatchUpQuery` with its version vectors for the shard's streams,
  every fourth gossip interval. The master answers how many events the replica lacks. The
  replica pulls them by anti-entropy (it starts a round with the master when behind).
- The master confirms the replica (`ready`) when the replica's vectors hold everything
  in the master's store for the shard, the replica is in the master's placement (so every
  later event is pushed to it) and no write still in flight was pushed past it. From then
  on it counts toward `quorum`/`all` acks (`counted`). A fresh master (failover) knows only
  itself; the replicas see the new epoch and ask again within one interval. A master by
  handover inherits the old master's confirmed set (`HandoverDone.ready`).
- `settled`: the last replica set whose members were all confirmed. Members of it that
  left the placement but are live are *retiring*: they still receive pushes and count
  toward acks until the new set is all confirmed, so a write is never acknowledged by
  fewer full copies than before the move. A retired replica drops its data once every
  member of the new set holds all of it (`retire.py`).

Master balance and handover (master side, each tick):
- `topology.election.balanced_masters(view, rates)` says where each shard's master should
  be (at most ceil(shards / peers) + 1 per peer, sticky, and with the per-shard write
  rates gossiped by `load_hints.py`, the busy shards spread by load). Its load moves come
  in rounds that share no peer, each lowering the sum of squared loads by a margin, and
  its answer once applied is a fixed point, so masters stop moving on a steady view and
  rates. A master makes one load move at a time (the next is computed on the view the
  last one leaves); moves for placement, the count cap or a leave run up to
  HANDOVERS_IN_FLIGHT_MAX at once. For a shard this peer masters whose target is
  another, confirmed replica, the handover runs:
  1. stop sequencing the shard (`sequencing_paused`): new appends for it are parked at
     this peer and forwarded ones are answered "not_master" (retryable);
  2. `HandoverPrepare` to the successor, which queries at once and pulls what it lacks;
  3. when no event of the shard is in flight to the local disk and the successor's
     vectors hold everything this peer holds for the shard (so everything it ever
     acknowledged), publish `MasterElected(shard, successor, epoch + 1)` and send it in
     `HandoverDone` to the successor and the shard's replicas;
  4. no completion by `HANDOVER_TIMEOUT_S`: give up, sequence again, try later.
- Graceful leave (`drain`): every mastered shard is handed to a replica other than this
  peer, and the data of every replicated shard to the peers that replace this one
  (`handoff.py`); `MemberLeft` is published once both are done or at `DRAIN_TIMEOUT_S`
  (then the shards fail over by election, as on a crash).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshstream.clocks import VersionVector
from meshstream.ids import TOPOLOGY_STREAM
from meshstream.protocol.effects import Effect, Journal, Send
from meshstream.protocol.handoff import Handoff
from meshstream.protocol.load_hints import LoadHints
from meshstream.protocol.retire import RELEASE_EVERY_INTERVALS, RELEASE_MESSAGES, Retirement
from meshstream.wire.rebalance_messages import (
    QUERY_SHARDS_MAX,
    CatchUpQuery,
    CatchUpReply,
    HandoverDone,
    HandoverPrepare,
    RateHints,
    ReleaseQuery,
    ReleaseReply,
    ShardEpoch,
    ShardProgress,
)
from meshstream.wire.replication_messages import StreamVector
from topology import election
from topology.events import MasterElected, fact_of

if TYPE_CHECKING:
    from meshstream.protocol.node import Node

HANDOVER_TIMEOUT_S = 2.0  # a successor that cannot catch up in 2 s: sequence again, retry later
HANDOVERS_IN_FLIGHT_MAX = 4  # per master: bounds the shards paused at once
# A leaving peer pauses every shard anyway: hand them over many at a time, or a peer that
# masters hundreds of shards runs out of DRAIN_TIMEOUT_S and leaves most to failover.
DRAINING_HANDOVERS_IN_FLIGHT_MAX = 128
QUERY_EVERY_INTERVALS = 4  # a replica asks its master every 4th gossip interval (handovers: every one)
STEADY_INTERVALS = 10  # rebalance only once the live set has not changed for 10 gossip intervals
DRAIN_TIMEOUT_S = 1.5  # a leaving peer waits this long for handovers (the simulator's grace is 2 s)
RATE_SMOOTHING = 0.5  # weight of the newest sample in a catch-up rate (events/s)
REBALANCE_MESSAGES = (CatchUpQuery, CatchUpReply, HandoverPrepare, HandoverDone, RateHints) + RELEASE_MESSAGES


@dataclass(slots=True)
class Handover:
    successor: str
    epoch: int  # the epoch being handed over (the successor masters epoch + 1)
    started: float
    deadline: float
    load: bool = False  # moved for load alone (not placement, count or a leave)


@dataclass(slots=True)
class Progress:
    """A replica's view of its own catch-up on one shard (for `status`)."""

    master: str
    epoch: int
    events_behind: int
    events_total: int  # the most it was behind during this catch-up (for progress bars)
    rate_per_s: float
    at: float


class Rebalance:
    def __init__(self, node: "Node") -> None:
        self.node = node
        self._ready: dict[int, tuple[int, set[str]]] = {}  # master side: shard -> (epoch, confirmed)
        self._settled: dict[int, tuple[str, ...]] = {}  # master side: last replica set all confirmed
        self._confirmed: dict[int, tuple[str, int]] = {}  # replica side: shard -> (master, epoch)
        self._progress: dict[int, Progress] = {}  # replica side: shards still catching up
        self._prepared: dict[int, float] = {}  # replica side: shard -> handover offered to me until
        self._handovers: dict[int, Handover] = {}  # master side, shards being handed over
        self._targets: tuple[int, int, bool, dict[int, str]] | None = None  # (view, hints, draining, targets)
        self._drain_deadline: float | None = None
        self._mastered_at: tuple[object, int, list[int]] | None = None  # (view, version, shards)
        self.departed = False  # MemberLeft published after draining
        self.handovers_done = 0
        self._pruned_version = -1
        self._ticks = 0
        self._live_seen: tuple[int, list[str], float] = (-1, [], 0.0)  # (view version, live peers, since)
        self.retirement = Retirement(self)
        self.load = LoadHints(node)
        self.handoff = Handoff(node)

    @staticmethod
    def handles(message: object) -> bool:
        return isinstance(message, REBALANCE_MESSAGES)

    def receive(self, src: str, message: object, now: float) -> list[Effect]:
        """A rebalancing message from peer `src`."""
        match message:
            case CatchUpQuery():
                return self.on_query(src, message, now) + self._finish_drain(now)
            case CatchUpReply():
                return self.on_reply(src, message, now)
            case HandoverPrepare():
                return self.on_prepare(src, message, now)
            case HandoverDone():
                return self.on_done(src, message, now)
            case RateHints():
                return self.load.on_hints(src, message, now)
            case ReleaseQuery():
                return self.retirement.on_query(src, message, now)
            case ReleaseReply():
                return self.retirement.on_reply(src, message, now)
        raise AssertionError(f"not a rebalancing message: {message!r}")

    # ------------------------------------------------------------------ queries for the write path
    def sequencing_paused(self, shard: int) -> bool:
        """True while this peer hands `shard` over: it must not sequence it."""
        return shard in self._handovers

    def push_set(self, shard: int) -> tuple[str, ...]:
        """Where the master pushes a new write: the placement plus retiring replicas."""
        placement = self.node.placement(shard)
        live = self.node.topology.live_set()
        retiring = tuple(p for p in self._settled.get(shard, ()) if p not in placement and p in live)
        return placement + retiring

    def counted(self, shard: int, peers: tuple[str, ...] | list[str]) -> set[str]:
        """Those of `peers` whose copy counts toward quorum/all acks of `shard`."""
        ready = self._ready_set(shard)
        settled = self._settled.get(shard, ())
        return {p for p in peers if p in ready or p in settled}

    def all_confirmed(self, shard: int) -> bool:
        """Master side: every member of the shard's placement is confirmed caught up."""
        ready = self._ready_set(shard)
        return all(peer in ready for peer in self.node.placement(shard))

    def confirmed_here(self, shard: int, master: tuple[str, int]) -> bool:
        """Replica side: `master` (peer, epoch) has confirmed this peer caught up on `shard`."""
        return self._confirmed.get(shard) == master

    @property
    def draining(self) -> bool:
        return self._drain_deadline is not None

    def _ready_set(self, shard: int) -> set[str]:
        master = self.node.topology.master(shard)
        epoch = master[1] if master is not None else 0
        entry = self._ready.get(shard)
        if entry is not None and (master is None or master[0] != self.node.name):
            return entry[1]  # handed over: writes still awaiting acks keep their counting
        if entry is None or entry[0] != epoch:
            entry = (epoch, {self.node.name})
            self._ready[shard] = entry
            self._settled[shard] = (self.node.name,)
        return entry[1]

    # ------------------------------------------------------------------ ticks
    def tick(self, now: float) -> list[Effect]:
        """Once per gossip interval: ask to be confirmed, hand shards over, finish draining."""
        self._prune()
        self._ticks += 1
        effects = self._queries(prepared_only=self._ticks % QUERY_EVERY_INTERVALS != 0)
        effects += self._expire_handovers(now)
        effects += self.load.tick(now, self._mastered(), self._handovers)
        if self._drain_deadline is not None or (self.node.can_sequence() and self.steady(now)):
            effects += self._start_handovers(now)
        effects += self._finish_drain(now)
        if self._ticks % RELEASE_EVERY_INTERVALS == RELEASE_EVERY_INTERVALS // 2:
            effects += self.retirement.tick(now)
        return effects

    def steady(self, now: float) -> bool:
        """The live set has not changed for STEADY_INTERVALS and this peer is on the majority
        side: moving masters during churn or on a minority side only adds elections."""
        topology = self.node.topology
        version, live, since = self._live_seen
        if version != topology.version:
            current = topology.live_peers()
            if current != live:
                since = now
            self._live_seen = (topology.version, current, since)
        if now - self._live_seen[2] < STEADY_INTERVALS * self.node.config.gossip_interval_s:
            return False
        live_count = topology.live_count()
        return 2 * live_count > live_count + len(self.node.failed_peers())

    def _prune(self) -> None:
        """After a change of view: forget confirmations of peers that left a shard's push set
        (a replica that comes back later must catch up again), settle a shard whose new
        placement is all confirmed already (else its retired replicas would be pushed to
        forever), and forget progress of shards that are no longer ours."""
        version = self.node.topology.version
        if self._pruned_version == version:
            return
        self._pruned_version = version
        mine = self.node.responsible_shards(self.node.name)
        for shard in sorted(self._ready):
            epoch, ready = self._ready[shard]
            keep = set(self.push_set(shard)) | {self.node.name}
            self._ready[shard] = (epoch, ready & keep)
            placement = self.node.placement(shard)
            if all(peer in ready for peer in placement):  # the set shrank onto confirmed peers
                self._settled[shard] = placement
        for table in (self._confirmed, self._progress):
            for shard in [s for s in table if s not in mine]:
                del table[shard]

    def drain(self, now: float) -> list[Effect]:
        """Graceful leave: hand every mastered shard to another replica, then leave."""
        if self._drain_deadline is None:
            self._drain_deadline = now + DRAIN_TIMEOUT_S
        return self.handoff.start(now) + self._start_handovers(now) + self._finish_drain(now)

    def _finish_drain(self, now: float) -> list[Effect]:
        if self._drain_deadline is None or self.departed:
            return []
        if (self._mastered() or not self.handoff.settled(now)) and now < self._drain_deadline:
            return []
        self.departed = True
        left = len(self._mastered())
        note = Journal("left", f"{self.node.name} leaves, {left} shard(s) not handed over")
        return [note] + self.node.membership.leave(now)

    def _mastered(self) -> list[int]:
        # Every tick asks; the answer changes only with the view (`version` moves on every
        # change of it), so it is kept per view object and version.
        topology = self.node.topology
        cached = self._mastered_at
        if cached is None or cached[0] is not topology or cached[1] != topology.version:
            mine = [s for s in range(topology.shards or 0) if topology.live_master(s) == self.node.name]
            cached = self._mastered_at = (topology, topology.version, mine)
        return list(cached[2])

    # ------------------------------------------------------------------ replica side
    def _queries(self, prepared_only: bool = False) -> list[Effect]:
        node = self.node
        by_master: dict[str, list[ShardEpoch]] = {}
        for shard in sorted(self._prepared) if prepared_only else sorted(node.responsible_shards(node.name)):
            master = node.topology.master(shard)
            if master is None or master[0] == node.name or not node.topology.is_live(master[0]):
                continue
            if self._confirmed.get(shard) == master and shard not in self._prepared:
                continue
            by_master.setdefault(master[0], []).append(ShardEpoch(shard, master[1]))
        effects: list[Effect] = []
        for master in sorted(by_master):
            asked = tuple(by_master[master][:QUERY_SHARDS_MAX])
            vectors = tuple(StreamVector(stream, node.store.version_vector(stream))
                            for item in asked for stream in node.streams_in(item.shard))
            effects.append(Send(master, CatchUpQuery(asked, vectors)))
        return effects

    def on_reply(self, src: str, reply: CatchUpReply, now: float) -> list[Effect]:
        behind = False
        for item in reply.progress:
            if item.events_behind < 0:
                continue  # not the master any more: the view will say who is
            if item.ready:
                self._confirmed[item.shard] = (src, item.epoch)
                self._progress.pop(item.shard, None)
                continue
            behind = behind or item.events_behind > 0
            self._note_progress(src, item, now)
        if behind and not any(self.node.anti_entropy.pulling(p.shard, now) for p in reply.progress):
            return self.node.anti_entropy.start_round(src, now)
        return []

    def _note_progress(self, src: str, item: ShardProgress, now: float) -> None:
        previous = self._progress.get(item.shard)
        rate = 0.0
        if previous is not None and now > previous.at:
            sample = max(0.0, (previous.events_behind - item.events_behind) / (now - previous.at))
            rate = RATE_SMOOTHING * sample + (1 - RATE_SMOOTHING) * previous.rate_per_s
        total = max(item.events_behind, previous.events_total if previous is not None else 0)
        self._progress[item.shard] = Progress(src, item.epoch, item.events_behind, total, rate, now)

    def on_prepare(self, src: str, message: HandoverPrepare, now: float) -> list[Effect]:
        if self.node.topology.master(message.shard) != (src, message.epoch):
            return []
        self._prepared[message.shard] = now + HANDOVER_TIMEOUT_S
        return self._queries()

    def on_done(self, src: str, message: HandoverDone, now: float) -> list[Effect]:
        self._prepared.pop(message.shard, None)
        if message.election.stream != TOPOLOGY_STREAM:
            return []
        fact = fact_of(message.election)  # RemoteProtocolError on a forged event
        if not isinstance(fact, MasterElected) or fact.shard != message.shard:
            return []
        effects = self.node.absorb_topology([message.election], now)[1]
        if fact.peer == self.node.name and self.node.topology.master(fact.shard) == (fact.peer, fact.epoch):
            confirmed = set(message.ready) | {self.node.name}
            self._ready[fact.shard] = (fact.epoch, confirmed)
            self._settled[fact.shard] = tuple(sorted(confirmed))
        return effects

    # ------------------------------------------------------------------ master side
    def on_query(self, src: str, query: CatchUpQuery, now: float) -> list[Effect]:
        node = self.node
        theirs = {v.stream: v.vector for v in query.vectors}
        progress: list[ShardProgress] = []
        effects: list[Effect] = []
        for item in query.shards:
            if not 0 <= item.shard < (node.topology.shards or 0) or node.topology.master(item.shard) != (
                    node.name, item.epoch):
                progress.append(ShardProgress(item.shard, item.epoch, -1, False))
                continue
            behind = self._behind(item.shard, theirs)
            ready = behind == 0 and src in node.placement(item.shard) and not self._unpushed(item.shard, src)
            if ready:
                effects += self._confirm(item.shard, src)
            progress.append(ShardProgress(item.shard, item.epoch, behind, ready))
            effects += self._complete_handover(item.shard, src, behind, now)
        return [Send(src, CatchUpReply(tuple(progress)))] + effects

    def _behind(self, shard: int, theirs: dict[str, VersionVector]) -> int:
        """Events this peer holds for `shard` that the asker's vectors lack (counted by dots)."""
        missing = 0
        for stream in self.node.streams_in(shard):
            mine = self.node.store.version_vector(stream)
            have = theirs.get(stream, VersionVector())
            missing += sum(max(0, count - have.get(peer)) for peer, count in mine.items())
        return missing

    def _unpushed(self, shard: int, peer: str) -> bool:
        """A write of `shard` still in flight whose push did not include `peer`."""
        node = self.node
        return any(node.shard_of(w.stream) == shard and peer not in w.placement for w in node.writes.pending.values())

    def _confirm(self, shard: int, peer: str) -> list[Effect]:
        ready = self._ready_set(shard)
        if peer in ready:
            return []
        ready.add(peer)
        placement = self.node.placement(shard)
        if all(p in ready for p in placement):
            self._settled[shard] = placement
        return self.node.writes.recheck_all()

    def _targets_now(self) -> dict[int, str]:
        node = self.node
        draining = self._drain_deadline is not None
        key = (node.topology.version, self.load.version, draining)
        if self._targets is None or self._targets[:3] != key:
            exclude = frozenset({node.name}) if draining else frozenset()
            self._targets = (*key, election.balanced_masters(node.topology, exclude, self.load.rates()))
        return self._targets[3]

    def _start_handovers(self, now: float) -> list[Effect]:
        node = self.node
        draining = self._drain_deadline is not None
        targets = self._targets_now()
        effects: list[Effect] = []
        in_flight_max = DRAINING_HANDOVERS_IN_FLIGHT_MAX if draining else HANDOVERS_IN_FLIGHT_MAX
        mastered = self._mastered()
        cap = election.master_cap(node.topology.shards or 0, node.topology.live_count())
        loading = any(h.load for h in self._handovers.values())
        for shard in mastered:
            if len(self._handovers) >= in_flight_max:
                break
            successor = targets.get(shard)
            if successor is None or successor == node.name or shard in self._handovers:
                continue
            if not node.topology.is_live(successor):
                continue
            if not draining and successor not in self.counted(shard, [successor]):
                continue  # it must be caught up first; it asks every interval
            load = not draining and len(mastered) <= cap and node.name in node.placement(shard)
            if load and loading:
                continue  # one load move at a time: the next is computed on the view this one leaves
            loading = loading or load
            epoch = node.topology.master(shard)[1]  # type: ignore[index]
            self._handovers[shard] = Handover(successor, epoch, now, now + HANDOVER_TIMEOUT_S, load)
            effects.append(Send(successor, HandoverPrepare(shard, epoch)))
            effects.append(Journal("handover", f"{node.name} hands shard {shard} to {successor}"))
        return effects

    def _complete_handover(self, shard: int, src: str, behind: int, now: float) -> list[Effect]:
        handover = self._handovers.get(shard)
        if handover is None or handover.successor != src or behind != 0 or self._in_flight(shard):
            return []
        del self._handovers[shard]
        self.handovers_done += 1
        fact = MasterElected(shard, src, handover.epoch + 1)
        event, effects = self.node.publish_fact(fact, now)
        ready = tuple(sorted(self._ready_set_of(shard, handover.epoch) | {self.node.name}))
        done = HandoverDone(shard, event, ready)
        targets = sorted(set(self.node.placement(shard)) - {self.node.name} | {src})
        effects += [Send(peer, done) for peer in targets]
        effects.append(Journal("elected", f"{src} masters shard {shard} at epoch {fact.epoch} (handover)"))
        return effects

    def _ready_set_of(self, shard: int, epoch: int) -> set[str]:
        entry = self._ready.get(shard)
        settled = set(self._settled.get(shard, ()))
        return (entry[1] | settled) if entry is not None and entry[0] == epoch else settled

    def _in_flight(self, shard: int) -> bool:
        """Events of `shard` sequenced or received here that are not durable yet."""
        node = self.node
        return any(stream != TOPOLOGY_STREAM and node.shard_of(stream) == shard for stream, _key in node.unpersisted)

    def _expire_handovers(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for shard in sorted(self._handovers):
            handover = self._handovers[shard]
            still_mine = self.node.topology.master(shard) == (self.node.name, handover.epoch)
            if now >= handover.deadline or not still_mine:
                del self._handovers[shard]
                if still_mine:
                    effects.append(Journal("handover", f"{self.node.name} keeps shard {shard}: "
                                           f"{handover.successor} did not catch up in time"))
        for shard in sorted(self._prepared):
            if now >= self._prepared[shard]:
                del self._prepared[shard]
        return effects

    # ------------------------------------------------------------------ status
    def status(self, now: float | None = None) -> dict:
        """Moving shards: those this peer is still catching up on, and handovers under way."""
        catching_up = [
            {"shard": shard, "master": p.master, "epoch": p.epoch, "events_left": p.events_behind,
             "events_total": p.events_total, "rate_per_s": round(p.rate_per_s, 1)}
            for shard, p in sorted(self._progress.items())
        ]
        handovers = [{"shard": shard, "to": h.successor, "epoch": h.epoch} for shard, h in sorted(self._handovers.items())]
        return {"catching_up": catching_up, "handovers": handovers, "handovers_done": self.handovers_done,
                "draining": self._drain_deadline is not None, "departed": self.departed,
                "shards_dropped": self.retirement.shards_dropped}
