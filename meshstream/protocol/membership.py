"""SWIM membership, sans-IO: probes, indirect probes, suspicion, refutation, join, leave.

How it works (SWIM, with Lifeguard's habit of trusting refutation over timers):

- Protocol periods of `probe_interval_s`. Each period probes one target, taken from a
  shuffled round robin of the live peers (alive or suspect in the fold, never ourselves);
  a peer learned mid-round is inserted at a random place in the rest of the round.
- A probe sends `Ping`; with no `Ack` after `probe_timeout_s` it sends `PingReq` to
  `indirect_probes` random live peers, which ping the target and relay its ack. With no ack
  by the end of the period we publish `MemberSuspect(target, incarnation, by=us)`.
- Every peer that learns of a suspicion arms a timer. The peer whose probe failed declares
  `MemberFailed` after `suspicion_timeout_s(N)`; the others wait `BACKUP_DECLARE_FACTOR`
  times longer, so a failure makes one or two facts rather than N, yet is still declared if
  the suspecter dies too. A suspect that refutes (a greater incarnation) cancels the timer.
- Refutation: seeing ourselves suspect or failed at incarnation i, we publish
  `MemberAlive(us, i + 1)`; seeing ourselves `left` while not leaving (a restart with a lost
  store), we rejoin with `MemberJoined(us, address, i + 1)`.
- Results are topology facts published through the host. Topology events spread by
  piggybacking (`BroadcastQueue`: membership changes before suspect/alive) on every Ping,
  Ack and PingReq and, as memberlist does, on a `Gossip` to `GOSSIP_FANOUT` random live
  peers each period while a membership change is queued; the host tells us of every
  new topology event through `broadcast()`, which queues it and notes it for the
  bookkeeping (timers, refutation, probe order) done at the next entry point, where `now`
  is known. `next_deadline()` returns that `now` while such work is pending.
- Join: `start()` publishes our `MemberJoined` and sends it in a `Join` to each seed
  address, again every `JOIN_RETRY_PERIODS` periods until a seed answers; the seed absorbs
  it and answers with its whole `$topology` stream in bounded `JoinReply` chunks. That
  snapshot is old news, so it is folded but not re-gossiped. A join that is news to the
  seed is also pushed at once to up to `JOIN_PUSH_PEERS_MAX` live members. The first peer
  of a mesh (no seeds, no configuration known) publishes `MeshConfigured`. A joiner that
  knows no configuration holds a `Join` and answers it once it knows the mesh (its empty
  snapshot made joiners configure the mesh and claim shards); a joiner unconfigured after
  `CONFIGURE_ALONE_PERIODS` periods (peers that only know each other) configures it.
- `leave()` publishes `MemberLeft` and hands it directly to a few live peers, then stops
  probing.
- Local health (Lifeguard): a tick that comes `STARVED_GRACE_FRACTION * probe_timeout_s`
  late means we were not running when an answer was due; it may be waiting unread, so the
  PingReq / suspect / failed verdict waits that long again (once or twice) for inputs first.
- Repair (Lifeguard's buddy system and more): the suspecter sends its `MemberSuspect`
  straight to the suspect each period; a peer shown a stale accusation answers with its
  latest own liveness event; a message from an unknown peer gets a `WhoAreYou`; one from a
  peer we hold failed gets the facts that declared it, so it refutes; and every
  `DEAD_PROBE_PERIODS` periods we ping one failed peer, so two sides of a healed partition
  that hold each other failed talk again. Each repair is rate-limited per peer.

Never reads a clock or global randomness: `now` and a seeded `random.Random` come in.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

from meshstream.config import Config
from meshstream.envelope import Event
from meshstream.errors import LocalProtocolError, RemoteProtocolError
from meshstream.protocol.broadcast import CHANGE_TIER, REFRESH_TIER, BroadcastQueue, Cooldown, chunk_events, tier_of
from meshstream.protocol.effects import Effect, Journal, Send, SendTo
from meshstream.protocol.membership_state import (BACKUP_DECLARE_FACTOR, MembershipHost, Probe, ProbeOrder, Relay,
                                                  Suspicion, failed_events_about, sample_peers, starved)
from meshstream.wire import membership_messages as wire
from meshstream.wire.membership_messages import Ack, Gossip, Join, JoinReply, Ping, PingReq, WhoAreYou
from topology.events import (MemberAlive, MemberFailed, MemberJoined, MemberLeft, MemberSuspect, MeshConfigured,
                             TopologyFact, fact_of)

JOIN_RETRY_PERIODS = 2  # a seed that has not answered in two probe periods is asked again
# Peers that only know each other as seeds, none configured, would wait for each other
# forever: after this many periods unconfigured, a joiner configures the mesh itself.
CONFIGURE_ALONE_PERIODS = 5 * JOIN_RETRY_PERIODS
GOSSIP_FANOUT = 2  # peers sent a Gossip of queued membership changes each period (memberlist: 3)
JOIN_PUSH_PEERS_MAX = 32  # a seed hands each new join to this many members at once (see _push_join)
JOINERS_WAITING_MAX = 1024  # Joins held by a joining peer until it knows the mesh shape
RELAYS_MAX = 1024  # indirect pings in flight for others; beyond this PingReqs are ignored
LEAVE_NOTIFY_PEERS_MAX = 8  # peers told directly of a leave; gossip carries it further
STARVED_GRACE_FRACTION = 0.5  # of probe_timeout_s: a tick this late was starved (see starved)
DEAD_PROBE_PERIODS = 5  # every 5th period also ping one failed peer: heals need a first contact
SYNC_COOLDOWN_PERIODS = 3  # per peer: at most one WhoAreYou / "you were declared failed" per 3 periods
SYNC_PEERS_MAX = 1024  # peers remembered for that cooldown


class Membership:
    """One peer's SWIM membership. See the module docstring."""

    def __init__(self, name: str, address: str, config: Config, rng: random.Random, host: MembershipHost) -> None:
        self.name = name
        self.address = address
        self.config = config
        self.incarnation = 0  # the host raises it from the recovered $topology before start
        self._rng = rng
        self._host = host
        self._queue = BroadcastQueue()
        self._started = False
        self._leaving = False
        self._now = 0.0
        self._seq = 0
        self._probe: Probe | None = None
        self._period_end: float | None = None
        self._probe_order = ProbeOrder(rng)
        self._suspicions: dict[str, Suspicion] = {}
        self._relays: dict[int, Relay] = {}
        self._seeds: tuple[str, ...] = ()
        self._join_event: Event | None = None
        self._join_retry_at: float | None = None
        self._joiners_waiting: dict[str, str] = {}  # joiner -> address, until we know the mesh
        self._pending: list[TopologyFact] = []  # learned via broadcast(); handled with `now`
        self._check_self = False
        self._quiet = False  # absorbing a join snapshot: fold it, do not re-gossip it
        self._periods = 0
        self._cooldown = Cooldown(SYNC_COOLDOWN_PERIODS * config.probe_interval_s, SYNC_PEERS_MAX)
        self._self_event: Event | None = None  # our latest MemberJoined/MemberAlive event
        self._accused = False  # the message being handled said we are suspect/failed/left

    # -- the contract --

    @staticmethod
    def handles(message: object) -> bool:
        """True for the membership messages (kinds 20-39)."""
        return isinstance(message, wire.MEMBERSHIP_MESSAGES)

    def broadcast(self, event: Event) -> None:
        """Piggyback this new topology event, and note it for timers and refutation."""
        fact = fact_of(event)
        if not self._quiet:
            self._queue.push(event, tier_of(fact))
        self._pending.append(fact)
        if isinstance(fact, (MemberJoined, MemberAlive)) and fact.peer == self.name:
            current = None if self._self_event is None else fact_of(self._self_event)
            if current is None or fact.incarnation >= current.incarnation:
                self._self_event = event

    def start(self, now: float, seeds: Sequence[str]) -> list[Effect]:
        """Publish our join, contact the seeds and begin probing.

        Raises LocalProtocolError if called twice.
        """
        if self._started:
            raise LocalProtocolError("membership already started")
        self._started, self._now = True, now
        view = self._host.topology_view()
        recovered = view.member(self.name)
        if recovered is not None:
            self.incarnation = max(self.incarnation, recovered.incarnation + 1)
        event, published = self._host.publish_fact(MemberJoined(self.name, self.address, self.incarnation), now)
        effects = list(published)
        self._join_event = event
        self._seeds = tuple(dict.fromkeys(seed for seed in seeds if seed != self.address))
        if not self._seeds and view.shards is None:
            effects += self._configure(now)
        effects += self._send_joins()
        if self._seeds:
            self._join_retry_at = now + JOIN_RETRY_PERIODS * self.config.probe_interval_s
        self._period_end = now
        self._scan(now)
        effects.append(Journal("joined", f"{self.name} joined at {self.address} (incarnation {self.incarnation})"))
        return effects + self._settle(now)

    def receive(self, src: str, message: object, now: float) -> list[Effect]:
        """Handle a membership message from peer `src`.

        Raises RemoteProtocolError for topology events that do not decode, and
        LocalProtocolError for a message that is not a membership message.
        """
        self._now = now
        match message:
            case Ping() | Ack() | PingReq() | Gossip():
                effects = self._absorb(message.gossip, now)
            case Join() | JoinReply() | WhoAreYou():
                effects = []
            case _:
                raise LocalProtocolError(f"not a membership message: {type(message).__name__}")
        effects += self._settle(now)
        match message:
            case Ping():
                effects += self._on_ping(src, message)
            case Ack():
                effects += self._on_ack(message)
            case PingReq():
                effects += self._on_ping_req(src, message, now)
            case Join():
                effects += self._on_join(message, now)
            case JoinReply():
                effects += self._on_join_reply(message, now)
            case WhoAreYou():
                effects += self._on_who_are_you(src)
        effects += self._settle(now) + self._answer_joiners_waiting()
        reply_address = getattr(message, "reply_address", "")
        if self._accused:
            self._accused = False
            effects += self._answer_accusation(src, reply_address, now)
        return effects + self._reconcile(src, reply_address, now)

    def tick(self, now: float) -> list[Effect]:
        """Run the timers that are due: probe phases, suspicion timeouts, join retries."""
        self._now = now
        if not self._started or self._leaving:
            return []
        effects = self._settle(now)
        effects += self._tick_probe(now)
        effects += self._tick_suspicions(now)
        effects += self._tick_join(now)
        if self._seeds and self._periods >= CONFIGURE_ALONE_PERIODS and self._host.topology_view().shards is None:
            effects += self._configure(now)
        self._expire_relays(now)
        return effects + self._settle(now)

    def next_deadline(self) -> float | None:
        """The earliest time `tick` has work; None when stopped or left."""
        if not self._started or self._leaving:
            return None
        if self._pending or self._check_self:
            return self._now
        deadlines = [self._period_end] if self._period_end is not None else []
        probe = self._probe
        if probe is not None and not probe.acked and not probe.indirect_sent:
            deadlines.append(probe.direct_deadline)
        deadlines.extend(suspicion.deadline for suspicion in self._suspicions.values())
        if self._join_retry_at is not None:
            deadlines.append(self._join_retry_at)
        return min(deadlines) if deadlines else None

    def leave(self, now: float) -> list[Effect]:
        """Publish MemberLeft, tell a few live peers directly, and stop probing."""
        if not self._started or self._leaving:
            return []
        self._now = now
        event, published = self._host.publish_fact(MemberLeft(self.name, self.incarnation), now)
        effects = list(published)
        self._leaving = True
        self._probe, self._period_end, self._join_retry_at = None, None, None
        others = sample_peers(self._rng, self._host.topology_view().live_peers(), LEAVE_NOTIFY_PEERS_MAX, (self.name,))
        effects += [Send(peer, Gossip((event,))) for peer in others]
        effects.append(Journal("left", f"{self.name} left the mesh (incarnation {self.incarnation})"))
        return effects

    # -- queries for drivers and tests --

    @property
    def leaving(self) -> bool:
        return self._leaving

    def queued_updates(self) -> int:
        """Topology events waiting in the piggyback queue."""
        return len(self._queue)

    def suspicions(self) -> dict[str, float]:
        """Armed suspicion timers: peer -> deadline."""
        return {peer: s.deadline for peer, s in sorted(self._suspicions.items())}

    # -- message handlers --

    def _on_ping(self, src: str, ping: Ping) -> list[Effect]:
        if ping.target != self.name:
            return []  # meant for whoever had this address before us
        return self._reply(src, ping.reply_address, Ack(ping.seq, self.name, self._gossip()))

    def _on_ack(self, ack: Ack) -> list[Effect]:
        relay = self._relays.pop(ack.seq, None)
        if relay is not None:
            if ack.target != relay.target:
                return []
            relayed = Ack(relay.seq, relay.target, self._gossip())
            return self._reply(relay.requester, relay.reply_address, relayed)
        probe = self._probe
        if probe is not None and ack.seq == probe.seq and ack.target == probe.target:
            probe.acked = True
        if self._join_retry_at is not None:
            self._join_retry_at = None  # someone answers us: we are part of the mesh
        return []

    def _on_ping_req(self, src: str, request: PingReq, now: float) -> list[Effect]:
        if request.target == self.name:
            return self._reply(src, request.reply_address, Ack(request.seq, self.name, self._gossip()))
        if len(self._relays) >= RELAYS_MAX:
            return []  # bounded: the requester has other helpers
        seq = self._next_seq()
        expires = now + self.config.probe_interval_s
        self._relays[seq] = Relay(src, request.reply_address, request.seq, request.target, expires)
        return [Send(request.target, Ping(seq, request.target, self.address, self._gossip()))]

    def _on_join(self, join: Join, now: float) -> list[Effect]:
        fact = fact_of(join.member)
        if not isinstance(fact, MemberJoined):
            raise RemoteProtocolError(f"a Join must carry a MemberJoined fact, not {type(fact).__name__}")
        if fact.peer == self.name:
            raise RemoteProtocolError(f"a Join from a peer with our own name {self.name!r}")
        new, absorbed = self._host.absorb_topology((join.member,), now)
        effects = list(absorbed) + self._settle(now)
        if new:
            effects += self._push_join(join.member, fact.peer)
        if self._seeds and self._host.topology_view().shards is None:
            # Joining ourselves, with nothing to give yet: answered once we know the mesh.
            if len(self._joiners_waiting) < JOINERS_WAITING_MAX:
                self._joiners_waiting[fact.peer] = fact.address
            return effects
        return effects + self._send_snapshot(fact.peer, fact.address)

    def _push_join(self, event: Event, joiner: str) -> list[Effect]:
        """Hand a new peer's join straight to up to `JOIN_PUSH_PEERS_MAX` live members.

        The joiner learns the mesh from our snapshot; the members would learn of the joiner
        only from piggybacked gossip, one probe period per hop. Pushed, every member of a
        small mesh knows it one round trip after we do, and a large mesh's gossip starts
        from that many peers at once.
        """
        chosen = sample_peers(self._rng, self._host.topology_view().live_peers(), JOIN_PUSH_PEERS_MAX,
                              (self.name, joiner))
        return [Send(peer, Gossip((event,))) for peer in chosen]

    def _send_snapshot(self, peer: str, address: str) -> list[Effect]:
        effects: list[Effect] = []
        limits = (self.config.anti_entropy_batch_events_max, self.config.anti_entropy_batch_bytes_max)
        for chunk, last in chunk_events(list(self._host.topology_events()), *limits):
            effects += self._reply(peer, address, JoinReply(chunk, last))
        return effects

    def _answer_joiners_waiting(self) -> list[Effect]:
        if not self._joiners_waiting or self._host.topology_view().shards is None:
            return []
        waiting, self._joiners_waiting = self._joiners_waiting, {}
        effects: list[Effect] = []
        for peer in sorted(waiting):
            effects += self._send_snapshot(peer, waiting[peer])
        return effects

    def _on_join_reply(self, reply: JoinReply, now: float) -> list[Effect]:
        self._quiet = True
        try:
            effects = self._absorb(reply.events, now)
        finally:
            self._quiet = False
        if reply.last:
            # No configuring here when the view has no shape: chunks overtake each other, so
            # the one holding MeshConfigured may still be on its way (CONFIGURE_ALONE_PERIODS).
            self._join_retry_at = None
        return effects

    def _on_who_are_you(self, src: str) -> list[Effect]:
        if self._join_event is None:
            return []
        return [Send(src, Gossip((self._join_event,)))]

    def _answer_accusation(self, src: str, reply_address: str, now: float) -> list[Effect]:
        """`src` sent facts calling us suspect/failed/left: show it our latest liveness.

        After `_settle` refuted (if the accusation was news), `_self_event` is the refutation;
        if the accusation was old news, `src` holds a stale view that gossip may never fix
        (its copy of our refutation was dropped), so it gets the event directly.
        """
        if self._leaving or self._self_event is None or not src or src == self.name:
            return []
        if not self._cooldown.allow(f"self:{src}", now):
            return []
        return self._reply(src, reply_address, Gossip((self._self_event,)))

    def _reconcile(self, src: str, reply_address: str, now: float) -> list[Effect]:
        """A message from a peer we do not know, or hold as failed, starts a repair.

        Unknown: ask who it is (gossip missed its join). Failed: hand it the facts that
        declared it so, so it refutes (after a partition heals both sides hold each other
        failed and would otherwise never talk again).
        """
        if not src or src == self.name or self._leaving:
            return []
        member = self._host.topology_view().member(src)
        if member is not None and member.status != "failed":
            return []
        if member is None and not reply_address:
            return []
        if not self._cooldown.allow(f"sync:{src}", now):
            return []
        if member is None:
            return [SendTo(reply_address, WhoAreYou())]
        verdicts = failed_events_about(self._host.topology_events(), src, member.incarnation,
                                       self.config.piggyback_updates_max)  # rare (cooldown): a scan is fine
        return [Send(src, Gossip(verdicts))] if verdicts else []

    # -- probing --

    def _tick_probe(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        probe = self._probe
        if probe is not None and not probe.acked and not probe.indirect_sent and now >= probe.direct_deadline:
            if starved(probe, probe.direct_deadline, now, self._grace_s()):
                probe.direct_deadline = now + self._grace_s()
            else:
                probe.indirect_sent = True
                effects += self._send_ping_reqs(probe)
        if self._period_end is not None and now >= self._period_end:
            if probe is not None and not probe.acked and starved(probe, self._period_end, now, self._grace_s()):
                self._period_end = now + self._grace_s()
                return effects
            if probe is not None and not probe.acked:
                effects += self._suspect(probe, now)
            self._probe = None
            following = self._period_end + self.config.probe_interval_s
            self._period_end = following if following > now else now + self.config.probe_interval_s
            effects += self._start_probe(now) + self._fan_out()
            self._periods += 1
            if self._periods % DEAD_PROBE_PERIODS == 0:
                effects += self._probe_the_dead()
            effects += self._notify_suspects()
        return effects

    def _grace_s(self) -> float:
        return STARVED_GRACE_FRACTION * self.config.probe_timeout_s

    def _start_probe(self, now: float) -> list[Effect]:
        target = self._next_target(now)
        if target is None:
            return []
        member = self._host.topology_view().member(target)
        assert member is not None, target
        seq = self._next_seq()
        self._probe = Probe(target, seq, member.incarnation, now + self.config.probe_timeout_s)
        return [Send(target, Ping(seq, target, self.address, self._gossip()))]

    def _next_target(self, now: float) -> str | None:
        view = self._host.topology_view()
        target, renewed = self._probe_order.next(view.is_live, lambda: [p for p in view.live_peers() if p != self.name])
        if renewed:
            self._scan(now)  # once a round: a safety net should a broadcast() ever be missed
        return target

    def _fan_out(self) -> list[Effect]:
        """memberlist's gossip, for membership changes only: push them to `GOSSIP_FANOUT`
        random live peers. (Refreshes too cost a 1000-peer mesh at 10% loss a Gossip per
        peer per period for news that the suspecter and suspect also swap directly.)"""
        if not self._queue.has_changes():
            return []
        chosen = sample_peers(self._rng, self._host.topology_view().live_peers(), GOSSIP_FANOUT, (self.name,))
        sends = [(peer, self._gossip(CHANGE_TIER)) for peer in chosen]
        return [Send(peer, Gossip(events)) for peer, events in sends if events]

    def _notify_suspects(self) -> list[Effect]:
        """Lifeguard's buddy idea: tell a peer we suspect so directly, so it refutes in time."""
        return [
            Send(peer, Gossip((suspicion.event,)))
            for peer, suspicion in sorted(self._suspicions.items())
            if suspicion.mine and suspicion.event is not None
        ]

    def _probe_the_dead(self) -> list[Effect]:
        """Ping one failed peer: if it is back (a healed partition), its answer starts a repair."""
        dead = [peer for peer in self._host.topology_view().failed_peers() if peer != self.name]
        if not dead:
            return []
        target = self._rng.choice(dead)
        # No gossip: transmissions spent on the probably dead would starve the living.
        return [Send(target, Ping(self._next_seq(), target, self.address, ()))]

    def _send_ping_reqs(self, probe: Probe) -> list[Effect]:
        live = self._host.topology_view().live_peers()
        chosen = sample_peers(self._rng, live, self.config.indirect_probes, (self.name, probe.target))
        return [Send(peer, PingReq(probe.seq, probe.target, self.address, self._gossip())) for peer in chosen]

    def _suspect(self, probe: Probe, now: float) -> list[Effect]:
        member = self._host.topology_view().member(probe.target)
        if member is None or not member.live or member.incarnation != probe.incarnation:
            return []  # declared or refuted meanwhile
        if member.status == "suspect":
            return []  # someone's fact says it already: theirs declares, ours would add events
        fact = MemberSuspect(probe.target, member.incarnation, self.name)
        event, published = self._host.publish_fact(fact, now)
        effects = list(published)
        self._arm(probe.target, member.incarnation, now, mine=True, event=event)
        effects.append(Send(probe.target, Gossip((event,))))
        effects.append(Journal("suspect", f"{self.name} suspects {probe.target} (incarnation {member.incarnation})"))
        return effects

    # -- suspicion and refutation --

    def _arm(self, peer: str, incarnation: int, now: float, mine: bool, event: Event | None = None) -> None:
        if peer == self.name:
            return
        member = self._host.topology_view().member(peer)
        if member is None or member.status != "suspect" or member.incarnation != incarnation:
            return
        existing = self._suspicions.get(peer)
        if existing is not None and existing.incarnation == incarnation:
            if mine and not existing.mine:  # we raised it after all (heard of it first from elsewhere)
                self._suspicions[peer] = Suspicion(incarnation, existing.started, existing.timeout, True, event)
            return
        timeout = self.config.suspicion_timeout_s(self._host.topology_view().live_count())
        self._suspicions[peer] = Suspicion(incarnation, now, timeout, mine, event)

    def _tick_suspicions(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        view = self._host.topology_view()
        for peer in sorted(self._suspicions):
            suspicion = self._suspicions[peer]
            member = view.member(peer)
            if member is None or member.status != "suspect" or member.incarnation != suspicion.incarnation:
                del self._suspicions[peer]  # refuted or already declared
            elif now >= suspicion.deadline + self._grace_s() and not suspicion.grace_s:  # we were starved
                late_s = now - suspicion.deadline + self._grace_s()
                self._suspicions[peer] = dataclasses.replace(suspicion, grace_s=late_s)
            elif now >= suspicion.deadline:
                del self._suspicions[peer]
                _, published = self._host.publish_fact(MemberFailed(peer, suspicion.incarnation, self.name), now)
                effects += published
                text = f"{self.name} declares {peer} failed (incarnation {suspicion.incarnation})"
                effects.append(Journal("failed", text))
        return effects

    def _settle(self, now: float) -> list[Effect]:
        """Act on topology events learned since the last entry point."""
        facts, self._pending = self._pending, []
        for fact in facts:
            match fact:
                case MemberSuspect():
                    self._arm(fact.peer, fact.incarnation, now, mine=fact.by == self.name)
                case MemberJoined() | MemberAlive() if fact.peer != self.name:
                    self._probe_order.add(fact.peer)
            if isinstance(fact, (MemberJoined, MemberAlive, MemberSuspect, MemberFailed, MemberLeft)):
                self._check_self = self._check_self or fact.peer == self.name
        if not self._check_self:
            return []
        self._check_self = False
        return self._refute(now)

    def _scan(self, now: float) -> None:
        for peer, member in self._host.topology_view().members().items():
            if member.status == "suspect":
                self._arm(peer, member.incarnation, now, mine=False)
        self._check_self = True

    def _refute(self, now: float) -> list[Effect]:
        member = self._host.topology_view().member(self.name)
        if not self._started or self._leaving or member is None:
            return []
        if member.status == "alive" or member.incarnation < self.incarnation:
            self.incarnation = max(self.incarnation, member.incarnation)
            return []
        self.incarnation = member.incarnation + 1
        if member.status == "left":
            fact: TopologyFact = MemberJoined(self.name, self.address, self.incarnation)
        else:
            fact = MemberAlive(self.name, self.incarnation)
        event, published = self._host.publish_fact(fact, now)
        if isinstance(fact, MemberJoined):
            self._join_event = event
        effects = list(published)
        effects.append(
            Journal("refuted", f"{self.name} was {member.status} at incarnation {member.incarnation}; "
                               f"alive again at {self.incarnation}")
        )
        return effects

    # -- joining --

    def _send_joins(self) -> list[Effect]:
        assert self._join_event is not None
        return [SendTo(seed, Join(self._join_event)) for seed in self._seeds]

    def _tick_join(self, now: float) -> list[Effect]:
        if self._join_retry_at is None or now < self._join_retry_at:
            return []
        self._join_retry_at = now + JOIN_RETRY_PERIODS * self.config.probe_interval_s
        return self._send_joins()

    def _configure(self, now: float) -> list[Effect]:
        fact = MeshConfigured(self.config.shards, self.config.replication_factor)
        effects = list(self._host.publish_fact(fact, now)[1])
        effects.append(Journal("configured", f"{self.name} configured the mesh: {fact.shards} shards, "
                                             f"replication factor {fact.replication_factor}"))
        return effects

    # -- plumbing --

    def _absorb(self, events: Sequence[Event], now: float) -> list[Effect]:
        if not events:
            return []
        for event in events:
            fact = fact_of(event)  # RemoteProtocolError before anything reaches the host
            if isinstance(fact, (MemberSuspect, MemberFailed, MemberLeft)) and fact.peer == self.name:
                self._accused = True
        _, effects = self._host.absorb_topology(events, now)
        return list(effects)

    def _gossip(self, tier_max: int = REFRESH_TIER) -> tuple[Event, ...]:
        limit = self.config.retransmit_limit(self._host.topology_view().live_count())
        return self._queue.take(self.config.piggyback_updates_max, limit, tier_max)

    def _reply(self, peer: str, address: str, message: object) -> list[Effect]:
        """Answer `peer` by name when the view knows it at `address`, else dial `address`."""
        member = self._host.topology_view().member(peer)
        if member is not None and member.address and (member.address == address or not address):
            return [Send(peer, message)]
        return [SendTo(address, message)] if address else []

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _expire_relays(self, now: float) -> None:
        self._relays = {seq: relay for seq, relay in self._relays.items() if relay.expires > now}
