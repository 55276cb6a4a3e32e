"""SWIM membership wired back to back with no network (like h11's ConnectionPair).

`FakeHost` implements MembershipHost over a dict of topology events and a TopologyState.
`Net` is a tiny seeded discrete-event loop: it delivers Send/SendTo effects after a
latency (through the real wire codec), may drop them, and calls `tick` exactly at each
peer's `next_deadline()` and after every input. Every failure message names the seed.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshstream.clocks import Dot, VersionVector
from meshstream.config import Config
from meshstream.envelope import Event
from meshstream.errors import LocalProtocolError, RemoteProtocolError
from meshstream.protocol.broadcast import REFRESH_TIER, BroadcastQueue
from meshstream.protocol.effects import Effect, Journal, Send, SendTo
from meshstream.protocol.membership import BACKUP_DECLARE_FACTOR, DEAD_PROBE_PERIODS, Membership
from meshstream.protocol.membership_state import ProbeOrder
from meshstream.wire.membership_messages import Ack, Gossip, Join, JoinReply, Ping, PingReq
from meshstream.wire.schema import message_from_bytes, message_to_bytes
from topology.events import MemberFailed, MemberJoined, MemberSuspect, TopologyFact, fact_key, fact_of, topology_event
from topology.fold import TopologyState

CONFIG = Config.preset("sim")
MESSAGES_PER_INSTANT_MAX = 10_000  # a loop that never advances time is a bug


class FakeHost:
    """A node reduced to its topology: events by fact key, their fold, a dot counter."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: dict[bytes, Event] = {}
        self.state = TopologyState()
        self.membership: Membership | None = None
        self._counter = 0

    def topology_view(self) -> TopologyState:
        return self.state

    def topology_events(self) -> Sequence[Event]:
        return list(self.events.values())

    def publish_fact(self, fact: TopologyFact, now: float) -> tuple[Event, list[Effect]]:
        key = fact_key(fact)
        if key in self.events:
            return self.events[key], []
        self._counter += 1
        event = topology_event(fact, Dot(self.name, self._counter), VersionVector())
        self._learn(event, fact)
        return event, []

    def absorb_topology(self, events: Sequence[Event], now: float) -> tuple[list[Event], list[Effect]]:
        new = [event for event in events if event.key not in self.events]
        for event in new:
            if event.key not in self.events:
                self._learn(event, fact_of(event))
        return new, []

    def _learn(self, event: Event, fact: TopologyFact) -> None:
        self.events[event.key] = event
        self.state.apply(fact)
        assert self.membership is not None
        self.membership.broadcast(event)

    def facts(self) -> list[TopologyFact]:
        return [fact_of(event) for event in self.events.values()]


class Net:
    """Peers named n1..nN whose address is their name, on a seeded lossy network."""

    def __init__(self, seed: int, config: Config = CONFIG, loss: float = 0.0) -> None:
        self.seed = seed
        self.config = config
        self.loss = loss
        self.rng = random.Random(seed)
        self.now = 0.0
        self.peers: dict[str, Membership] = {}
        self.hosts: dict[str, FakeHost] = {}
        self.down: set[str] = set()
        self.cut: set[tuple[str, str]] = set()  # (src, dst) pairs that drop everything
        self.heap: list[tuple[float, int, str, str, object]] = []
        self.sequence = 0
        self.sent: list[tuple[float, str, str, object]] = []  # (time, src, dst, message)
        self.journal: list[tuple[float, str, Journal]] = []

    def add(self, name: str, seeds: Sequence[str] = (), host: FakeHost | None = None, incarnation: int = 0) -> None:
        host = host or FakeHost(name)
        membership = Membership(name, name, self.config, random.Random(f"{self.seed}/{name}"), host)
        membership.incarnation = incarnation
        host.membership = membership
        self.peers[name], self.hosts[name] = membership, host
        self.down.discard(name)
        self.apply(name, membership.start(self.now, seeds))

    def apply(self, src: str, effects: list[Effect]) -> None:
        for effect in effects:
            match effect:
                case Send(peer, message) | SendTo(peer, message):
                    self.send(src, peer, message)
                case Journal():
                    self.journal.append((self.now, src, effect))

    def send(self, src: str, dst: str, message: object) -> None:
        assert Membership.handles(message), message
        assert len(getattr(message, "gossip", ())) <= self.config.piggyback_updates_max, f"seed={self.seed}"
        self.sent.append((self.now, src, dst, message))
        if (src, dst) in self.cut or self.rng.random() < self.loss:
            return
        data = message_to_bytes(message)  # the real codec, both ways
        self.sequence += 1
        latency = self.rng.uniform(0.001, 0.02)
        heapq.heappush(self.heap, (self.now + latency, self.sequence, src, dst, data))

    def run_until(self, end: float) -> None:
        steps_at_instant = 0
        while True:
            when = self._next_time()
            if when is None or when > end:
                break
            steps_at_instant = steps_at_instant + 1 if when == self.now else 0
            assert steps_at_instant < MESSAGES_PER_INSTANT_MAX, f"seed={self.seed}: no progress at {self.now}"
            self.now = when
            if self.heap and self.heap[0][0] <= when:
                _, _, src, dst, data = heapq.heappop(self.heap)
                if dst in self.peers and dst not in self.down:
                    self.apply(dst, self.peers[dst].receive(src, message_from_bytes(data), self.now))
                    self.apply(dst, self.peers[dst].tick(self.now))
                continue
            for name in sorted(self.peers):
                deadline = self._deadline(name)
                if deadline is not None and deadline <= self.now:
                    self.apply(name, self.peers[name].tick(self.now))
        self.now = max(self.now, end)

    def _deadline(self, name: str) -> float | None:
        return None if name in self.down else self.peers[name].next_deadline()

    def _next_time(self) -> float | None:
        times = [self.heap[0][0]] if self.heap else []
        times += [d for d in (self._deadline(name) for name in self.peers) if d is not None]
        return max(min(times), self.now) if times else None

    def crash(self, name: str) -> None:
        self.down.add(name)

    def status(self, viewer: str, peer: str) -> str | None:
        member = self.hosts[viewer].state.member(peer)
        return None if member is None else member.status

    def live_viewers(self) -> list[str]:
        return sorted(name for name in self.peers if name not in self.down and not self.peers[name].leaving)

    def wait_for(self, condition, deadline: float, step: float = 0.1) -> float:
        """Run until `condition()` holds; return the time it first held. Fails at `deadline`."""
        while not condition():
            assert self.now < deadline, f"seed={self.seed}: condition not met by t={deadline}"
            self.run_until(self.now + step)
        return self.now


def mesh(seed: int, count: int, **kwargs) -> Net:
    net = Net(seed, **kwargs)
    net.add("n1")
    for index in range(2, count + 1):
        net.add(f"n{index}", seeds=["n1"])
    names = [f"n{i}" for i in range(1, count + 1)]
    net.wait_for(lambda: all(net.status(v, p) == "alive" for v in names for p in names), deadline=30.0)
    return net


# -- joining --


def test_peers_join_through_one_seed_and_learn_each_other():
    seed = 1
    net = mesh(seed, 3)
    for viewer in ("n1", "n2", "n3"):
        state = net.hosts[viewer].state
        assert state.live_peers() == ["n1", "n2", "n3"], f"seed={seed}"
        assert (state.shards, state.replication_factor) == (CONFIG.shards, CONFIG.replication_factor)
    assert net.now < 5.0, f"seed={seed}: joining took {net.now} s"
    assert any(isinstance(m, Join) for _, _, _, m in net.sent)
    assert any(isinstance(m, JoinReply) and m.last for _, _, _, m in net.sent)


def test_a_large_snapshot_is_sent_in_bounded_chunks():
    seed = 2
    config = Config.preset("sim", anti_entropy_batch_events_max=4)
    net = Net(seed, config=config)
    net.add("n1")
    for index in range(2, 8):
        net.add(f"n{index}", seeds=["n1"])
    net.run_until(3.0)
    net.add("n8", seeds=["n1"])
    net.wait_for(lambda: net.hosts["n8"].state.live_count() == 8, deadline=10.0)
    replies = [m for _, _, dst, m in net.sent if dst == "n8" and isinstance(m, JoinReply)]
    assert len(replies) >= 3 and all(len(m.events) <= 4 for m in replies), f"seed={seed}"
    assert [m.last for m in replies].count(True) == 1 and replies[-1].last


def test_join_is_retried_until_the_seed_answers():
    seed = 3
    net = Net(seed)
    net.add("n1")
    net.cut.add(("n2", "n1"))
    net.add("n2", seeds=["n1"])
    net.run_until(3.0)
    net.cut.clear()
    net.wait_for(lambda: net.status("n1", "n2") == "alive" and net.status("n2", "n1") == "alive", deadline=10.0)
    joins = [t for t, src, _, m in net.sent if src == "n2" and isinstance(m, Join)]
    assert len(joins) >= 2, f"seed={seed}: {joins}"


def test_a_seed_pushes_a_new_join_to_the_members_at_once():
    seed = 7
    net = mesh(seed, 6)
    net.run_until(net.now + 3 * CONFIG.probe_interval_s)  # quiet: nothing left to piggyback
    sent_before = len(net.sent)
    net.add("n7", seeds=["n1"])
    joined_at = net.now
    # One round trip (latencies <= 20 ms each way), far less than a probe period.
    knows = net.wait_for(lambda: all(net.status(v, "n7") == "alive" for v in net.live_viewers()),
                         deadline=joined_at + CONFIG.probe_interval_s, step=0.005)
    assert knows - joined_at <= 0.06, f"seed={seed}: members learned the join after {knows - joined_at:.3f} s"
    pushes = [(src, dst) for _, src, dst, m in net.sent[sent_before:]
              if isinstance(m, Gossip) and any(isinstance(fact_of(e), MemberJoined) and fact_of(e).peer == "n7"
                                               for e in m.gossip)]
    assert sorted(dst for src, dst in pushes if src == "n1") == ["n2", "n3", "n4", "n5", "n6"], f"seed={seed}"


def test_a_join_already_known_is_not_pushed_again():
    seed = 8
    net = mesh(seed, 4)
    net.run_until(net.now + 3 * CONFIG.probe_interval_s)
    join = next(m for _, src, _, m in net.sent if src == "n4" and isinstance(m, Join))
    effects = net.peers["n1"].receive("n4", join, net.now)
    assert not [e for e in effects if isinstance(e, Send) and isinstance(e.message, Gossip)], f"seed={seed}"
    assert any(isinstance(e, (Send, SendTo)) and isinstance(e.message, JoinReply) for e in effects), f"seed={seed}"


def test_probe_order_visits_every_live_peer_once_a_round_in_fresh_orders():
    seed = 9
    order = ProbeOrder(random.Random(seed))
    peers = sorted(f"n{i}" for i in range(2, 12))
    live = set(peers)
    rounds = []
    for _ in range(3):
        visited = []
        for step in range(len(peers)):
            target, renewed = order.next(live.__contains__, lambda: sorted(live))
            assert renewed == (step == 0), f"seed={seed}"
            visited.append(target)
        assert sorted(visited) == peers, f"seed={seed}: {visited}"
        rounds.append(visited)
    assert len({tuple(r) for r in rounds}) == 3, f"seed={seed}: rounds repeat their order"
    first, _ = order.next(live.__contains__, lambda: sorted(live))  # a fourth round begins
    gone = next(peer for peer in peers if peer != first)
    live.discard(gone)  # a peer no longer live is skipped without spending a turn
    order.add("n99")  # a newcomer joins the rest of this round
    live.add("n99")
    rest = []
    while not rest or not rest[-1][1]:
        rest.append(order.next(live.__contains__, lambda: sorted(live)))
    targets = [first] + [target for target, _ in rest[:-1]]
    assert sorted(targets) == sorted((set(peers) - {gone}) | {"n99"}), f"seed={seed}: {targets}"


def _probing(net: Net, name: str):
    """Run until `name` has a probe out; return (membership, probe)."""
    membership = net.peers[name]
    net.wait_for(lambda: membership._probe is not None and not membership._probe.acked, deadline=net.now + 10.0,
                 step=0.001)
    return membership, membership._probe


def test_a_starved_prober_reads_its_answers_before_accusing():
    seed = 10
    net = mesh(seed, 4)
    membership, probe = _probing(net, "n1")
    grace_s = 0.5 * CONFIG.probe_timeout_s
    late = probe.direct_deadline + 4 * grace_s  # the process was not running at the deadline
    effects = membership.tick(late)
    assert not [e for e in effects if isinstance(e.message if isinstance(e, Send) else None, PingReq)], f"seed={seed}"
    assert membership.next_deadline() == pytest.approx(late + grace_s), f"seed={seed}"
    membership.receive(probe.target, Ack(probe.seq, probe.target, ()), late)  # the answer, read at last
    effects = membership.tick(late + grace_s)
    assert probe.acked and not [e for e in effects if isinstance(e, Journal) and e.kind == "suspect"], f"seed={seed}"


def test_a_starved_prober_still_accuses_a_dead_peer_after_the_grace():
    seed = 11
    net = mesh(seed, 4)
    membership, probe = _probing(net, "n1")
    grace_s = 0.5 * CONFIG.probe_timeout_s
    now = probe.direct_deadline + 4 * grace_s
    assert not membership.tick(now) or not probe.indirect_sent, f"seed={seed}"
    effects = membership.tick(now + grace_s)  # nothing came in meanwhile
    assert probe.indirect_sent and any(isinstance(e, Send) and isinstance(e.message, PingReq) for e in effects), \
        f"seed={seed}"
    period_end = membership._period_end
    suspected = []
    for step in range(4):  # at most two graces, then the verdict
        now = max(now, period_end) + 4 * grace_s
        suspected += [e for e in membership.tick(now) if isinstance(e, Journal) and e.kind == "suspect"]
        period_end = membership._period_end
    assert suspected, f"seed={seed}: a starved prober never suspected a silent peer"


# -- failure detection --


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_a_silent_peer_is_suspected_then_declared_failed_in_time(seed):
    count = 5
    net = mesh(seed, count)
    crashed_at = net.now
    net.crash("n3")
    others = [p for p in net.live_viewers() if p != "n3"]
    suspected_at = net.wait_for(lambda: any(net.status(v, "n3") in ("suspect", "failed") for v in others), 60.0)
    # Round robin: each prober reaches n3 within two of its rounds of N-1 periods.
    assert suspected_at - crashed_at <= 2 * (count - 1) + 1, f"seed={seed}"
    failed_at = net.wait_for(lambda: all(net.status(v, "n3") == "failed" for v in others), 60.0)
    timeout = CONFIG.suspicion_timeout_s(count)
    # The suspecter declares after the timeout; should gossip miss a peer, that peer's own
    # backup timer declares after twice the timeout.
    limit = BACKUP_DECLARE_FACTOR * timeout + 2 * CONFIG.probe_interval_s
    assert failed_at - suspected_at <= limit, f"seed={seed}"
    assert failed_at - suspected_at >= timeout - CONFIG.probe_interval_s, f"seed={seed}: declared too early"
    kinds = [(src, j.kind) for _, src, j in net.journal if "n3" in j.text and j.kind in ("suspect", "failed")]
    assert ("suspect" in [k for _, k in kinds]) and ("failed" in [k for _, k in kinds]), f"seed={seed}"
    failed_facts = {f for f in net.hosts["n1"].facts() if isinstance(f, MemberFailed)}
    assert 1 <= len(failed_facts) <= 2, f"seed={seed}: {failed_facts}"
    # Regular probes stop; only the occasional dead-probe (to notice a heal) remains.
    net.run_until(net.now + 2 * CONFIG.probe_interval_s)  # probes and relays already under way
    net.sent.clear()
    periods = 20
    net.run_until(net.now + periods * CONFIG.probe_interval_s)
    to_n3 = [(src, m) for _, src, dst, m in net.sent if dst == "n3"]
    assert all(isinstance(m, Ping) for _, m in to_n3), f"seed={seed}: {to_n3}"
    for prober in others:
        pings = sum(src == prober for src, _ in to_n3)
        assert pings <= periods // DEAD_PROBE_PERIODS + 1, f"seed={seed}: {prober} pinged n3 {pings} times"


def test_indirect_probes_keep_a_peer_with_one_broken_link_alive():
    seed = 7
    net = mesh(seed, 4)
    net.cut |= {("n1", "n2"), ("n2", "n1")}
    net.run_until(net.now + 30)
    assert all(net.status(v, "n2") == "alive" for v in net.live_viewers()), f"seed={seed}"
    assert any(isinstance(m, PingReq) and m.target == "n2" for _, src, _, m in net.sent if src == "n1")


def test_a_suspected_live_peer_refutes_with_a_higher_incarnation():
    seed = 8
    net = mesh(seed, 4)
    net.apply("n1", net.hosts["n1"].publish_fact(MemberSuspect("n2", 0, "n1"), net.now)[1])
    assert net.peers["n1"].next_deadline() <= net.now, "a new fact is work for now"
    net.run_until(net.now)
    assert net.status("n1", "n2") == "suspect" and "n2" in net.peers["n1"].suspicions()
    net.wait_for(lambda: all(net.hosts[v].state.member("n2").incarnation == 1 for v in net.peers), 20.0)
    net.run_until(net.now + 3 * CONFIG.suspicion_timeout_s(4))
    assert all(net.status(v, "n2") == "alive" for v in net.peers), f"seed={seed}"
    assert not any(isinstance(f, MemberFailed) for f in net.hosts["n1"].facts()), f"seed={seed}"
    assert any(src == "n2" and j.kind == "refuted" for _, src, j in net.journal), f"seed={seed}"
    assert net.peers["n2"].incarnation == 1 and net.peers["n1"].suspicions() == {}


def test_a_partitioned_peer_refutes_after_the_heal_and_rejoins_after_failure():
    seed = 9
    net = mesh(seed, 4)
    everyone = list(net.peers)
    net.cut |= {(a, "n4") for a in everyone} | {("n4", a) for a in everyone}
    net.wait_for(lambda: all(net.status(v, "n4") == "failed" for v in ("n1", "n2", "n3")), 60.0)
    net.cut.clear()
    # n4 learns it was declared failed (it still probes others, whose acks carry gossip).
    net.wait_for(lambda: all(net.status(v, "n4") == "alive" for v in everyone), 60.0)
    assert net.peers["n4"].incarnation >= 1, f"seed={seed}"


def test_a_restarted_peer_rejoins_with_a_higher_incarnation():
    seed = 10
    net = mesh(seed, 3)
    net.crash("n3")
    net.wait_for(lambda: net.status("n1", "n3") == "failed", 60.0)
    recovered = FakeHost("n3")
    for event in net.hosts["n3"].events.values():  # its $topology stream, recovered from disk
        recovered.events[event.key] = event
        recovered.state.apply(fact_of(event))
    recovered._counter = net.hosts["n3"]._counter
    net.add("n3", seeds=["n1"], host=recovered)
    net.wait_for(lambda: all(net.status(v, "n3") == "alive" for v in net.peers), 20.0)
    assert net.hosts["n1"].state.member("n3").incarnation >= 1, f"seed={seed}"


# -- leaving --


def test_a_graceful_leave_spreads_and_stops_probes():
    seed = 11
    net = mesh(seed, 5)
    net.apply("n5", net.peers["n5"].leave(net.now))
    assert net.peers["n5"].next_deadline() is None
    net.wait_for(lambda: all(net.status(v, "n5") == "left" for v in net.live_viewers()), 5.0)
    net.run_until(net.now + 2)
    net.sent.clear()
    net.run_until(net.now + 10)
    assert not [m for _, _, dst, m in net.sent if dst == "n5"], f"seed={seed}"
    assert not any(net.status(v, p) != "alive" for v in net.live_viewers() for p in net.live_viewers())


# -- lossy network, determinism, exact deadlines --


def test_no_false_failures_at_ten_percent_loss():
    seed = 12
    net = mesh(seed, 6, loss=0.1)
    net.run_until(net.now + 60)
    states = {(v, p): net.status(v, p) for v in net.peers for p in net.peers}
    assert all(status in ("alive", "suspect") for status in states.values()), f"seed={seed}: {states}"


def test_the_same_seed_gives_the_same_run():
    def trace(seed: int) -> list:
        net = mesh(seed, 4, loss=0.05)
        net.crash("n2")
        net.run_until(net.now + 15)
        return [(t, s, d, message_to_bytes(m)) for t, s, d, m in net.sent]

    assert trace(13) == trace(13)
    assert trace(13) != trace(14)


def test_tick_before_the_deadline_does_nothing():
    seed = 15
    net = mesh(seed, 3)
    rng = random.Random(seed)
    for _ in range(200):
        name = rng.choice(sorted(net.peers))
        deadline = net.peers[name].next_deadline()
        assert deadline is not None and deadline >= net.now, f"seed={seed}"
        if deadline > net.now:
            early = rng.uniform(net.now, deadline)
            assert net.peers[name].tick(early) == [], f"seed={seed}: {name} acted before {deadline}"
        net.run_until(net.now + rng.uniform(0.01, 0.5))


# -- the piggyback queue --


def _event(index: int) -> Event:
    return topology_event(MemberJoined(f"p{index}", f"p{index}", 0), Dot("n1", index), VersionVector())


def test_queue_sends_each_update_transmit_limit_times_least_sent_newest_first():
    queue = BroadcastQueue()
    events = [_event(i) for i in range(1, 6)]
    for event in events:
        queue.push(event, REFRESH_TIER)  # (changes go newest first whatever their sends: test_broadcast)
    queue.push(events[0], REFRESH_TIER)  # a duplicate is one entry
    first = queue.take(2, transmit_limit=3)
    assert first == (events[4], events[3])  # newest first
    second = queue.take(3, transmit_limit=3)
    assert second == (events[2], events[1], events[0])  # then the never-sent ones
    sent = {event.digest: 0 for event in events}
    for message in [first, second] + [queue.take(2, transmit_limit=3) for _ in range(20)]:
        assert len(message) <= 3
        for event in message:
            sent[event.digest] += 1
    assert set(sent.values()) == {3} and len(queue) == 0


def test_queue_is_bounded_and_keeps_the_freshest():
    queue = BroadcastQueue(queue_events_max=8)
    events = [_event(i) for i in range(1, 20)]
    for event in events:
        queue.push(event)
    assert len(queue) <= 8
    assert events[-1].digest in queue.transmits()


def test_messages_piggyback_at_most_the_configured_updates():
    seed = 16
    config = Config.preset("sim", piggyback_updates_max=2)
    net = Net(seed, config=config)  # Net.send asserts the bound on every message
    net.add("n1")
    for index in range(2, 9):
        net.add(f"n{index}", seeds=["n1"])
    net.run_until(20.0)
    carried = [len(m.gossip) for _, _, _, m in net.sent if hasattr(m, "gossip")]
    assert max(carried) == 2, f"seed={seed}"
    assert all(net.hosts[v].state.live_count() == 8 for v in net.peers), f"seed={seed}"


# -- messages and misuse --


@given(st.binary(max_size=200))
def test_message_decoding_raises_only_remote_protocol_error(data):
    try:
        message_from_bytes(data)
    except RemoteProtocolError:
        pass


def test_messages_round_trip_and_reject_foreign_events():
    event = _event(1)
    for message in (
        Ping(1, "n2", "n1", (event,)),
        Ack(2, "n2", ()),
        PingReq(3, "n2", "127.0.0.1:7001", (event,)),
        Join(event),
        JoinReply((event,), True),
        Gossip((event,)),
    ):
        assert message_from_bytes(message_to_bytes(message)) == message
    foreign = Event.sequence("orders", b"k", b"", {}, Dot("n1", 1), VersionVector())
    with pytest.raises(RemoteProtocolError):
        message_from_bytes(message_to_bytes(Gossip.__new__(Gossip)) if False else _forged_gossip(foreign))


def _forged_gossip(event: Event) -> bytes:
    from meshstream.cbor import dumps

    return dumps([Gossip.KIND, [event.envelope]])


def test_a_join_must_carry_a_join_and_misuse_is_local():
    net = mesh(17, 2)
    alive = topology_event(MemberSuspect("n9", 0, "n2"), Dot("n9", 1), VersionVector())
    with pytest.raises(RemoteProtocolError):
        net.peers["n1"].receive("n9", Join(alive), net.now)
    with pytest.raises(LocalProtocolError):
        net.peers["n1"].receive("n2", "hello", net.now)
    with pytest.raises(LocalProtocolError):
        net.peers["n1"].start(net.now, [])


def test_cooldown_allows_one_per_interval_and_stays_bounded():
    from meshstream.protocol.broadcast import Cooldown, chunk_events

    cooldown = Cooldown(interval_s=3.0, keys_max=2)
    assert cooldown.allow("a", 0.0) and not cooldown.allow("a", 2.9) and cooldown.allow("a", 3.0)
    assert cooldown.allow("b", 3.0)
    assert not cooldown.allow("c", 4.0), "full of live keys: refuse rather than grow"
    assert cooldown.allow("c", 6.5), "expired keys make room"
    assert chunk_events([], 4, 1000) == [((), True)]
    events = [_event(i) for i in range(1, 6)]
    chunks = chunk_events(events, 2, 10**6)
    assert [len(c) for c, _ in chunks] == [2, 2, 1] and [last for _, last in chunks] == [False, False, True]
    assert [len(c) for c, _ in chunk_events(events, 100, events[0].size())] == [1] * 5
