"""The piggyback queue's tiers and membership's per-period gossip fan-out.

Membership changes (join, leave, failure, mesh shape, election) are sent before liveness
refreshes (suspect, alive), and every queued event still gets its `transmit_limit` sends.
A quiet mesh (nothing queued) sends no fan-out `Gossip`; a leave reaches nearly everyone
even when every Ping, Ack and PingReq is stripped of its gossip (only the fan-out carries it).
"""

from __future__ import annotations

import pytest

from meshstream.clocks import Dot, VersionVector
from meshstream.protocol.broadcast import CHANGE_TIER, REFRESH_TIER, BroadcastQueue, tier_of
from meshstream.protocol.membership import GOSSIP_FANOUT
from meshstream.wire.membership_messages import Gossip
from tests.test_membership import Net, mesh
from topology.events import (MasterElected, MemberAlive, MemberFailed, MemberJoined, MemberLeft, MemberSuspect,
                             MeshConfigured, topology_event)


def _event(fact, counter: int):
    return topology_event(fact, Dot("n1", counter), VersionVector())


def test_tiers_put_membership_changes_before_liveness_refreshes():
    assert tier_of(MemberSuspect("p1", 0, "p2")) == tier_of(MemberAlive("p1", 1)) == REFRESH_TIER
    changes = [MemberJoined("p1", "a", 0), MemberLeft("p1", 0), MemberFailed("p1", 0, "p2"), MeshConfigured(4, 3),
               MasterElected(0, "p1", 1)]
    assert {tier_of(fact) for fact in changes} == {CHANGE_TIER}


def test_a_change_overtakes_queued_refreshes_and_every_event_gets_its_sends():
    queue = BroadcastQueue()
    left = _event(MemberLeft("p9", 0), 9)
    queue.push(left, CHANGE_TIER)
    refreshes = [_event(MemberSuspect(f"p{i}", 0, "n1"), i) for i in range(1, 7)]
    for event in refreshes:  # newer than the change, so they would lead on freshness alone
        queue.push(event, REFRESH_TIER)
    limit = 3
    sent = {event.digest: 0 for event in refreshes + [left]}
    messages = [queue.take(2, transmit_limit=limit) for _ in range(30)]
    for index, message in enumerate(messages[:limit]):
        assert message[0] == left, f"message {index}: {message}"  # the change leads until spent
    for message in messages:
        for event in message:
            sent[event.digest] += 1
    assert set(sent.values()) == {limit} and len(queue) == 0
    assert queue.tier_counts() == (0, 0)


def test_a_quiet_mesh_sends_no_fan_out_gossip():
    seed = 31
    net = mesh(seed, 8)
    net.run_until(30.0)
    start = len(net.sent)
    net.run_until(40.0)
    quiet = [m for _, _, _, m in net.sent[start:] if isinstance(m, Gossip)]
    assert quiet == [], f"seed={seed}: {len(quiet)} Gossip messages in a quiet mesh"
    assert all(net.peers[name].queued_updates() == 0 for name in net.peers), f"seed={seed}"


class _NoPiggybackNet(Net):
    """Strips the gossip of every probe message: only `Gossip` messages carry events."""

    def send(self, src, dst, message):
        if hasattr(message, "gossip") and not isinstance(message, Gossip):
            message = type(message)(**{**{f: getattr(message, f) for f in message.__dataclass_fields__},
                                       "gossip": ()})
        super().send(src, dst, message)


@pytest.mark.parametrize("seed", [3, 4])
def test_the_fan_out_alone_spreads_a_leave(seed):
    net = _NoPiggybackNet(seed)
    net.add("n1")
    for index in range(2, 25):
        net.add(f"n{index}", seeds=["n1"])
    net.run_until(30.0)
    assert GOSSIP_FANOUT >= 1
    net.apply("n9", net.peers["n9"].leave(net.now))  # tells 8 of the 23 others directly
    net.run_until(net.now + 10 * net.config.probe_interval_s)
    # Stripped piggybacks still count as sends, so the rumour may die out before the last
    # peer or two (anti-entropy, absent here, repairs those); without the fan-out, 15 miss it.
    unaware = [v for v in net.live_viewers() if net.status(v, "n9") != "left"]
    assert len(unaware) <= 3, f"seed={seed}: {unaware} still hold n9 live"


def test_a_take_limited_to_changes_leaves_the_refreshes_queued():
    queue = BroadcastQueue()
    suspect = _event(MemberSuspect("p1", 0, "n1"), 1)
    queue.push(suspect, REFRESH_TIER)
    assert not queue.has_changes() and queue.take(4, transmit_limit=2, tier_max=CHANGE_TIER) == ()
    left = _event(MemberLeft("p2", 0), 2)
    queue.push(left, CHANGE_TIER)
    assert queue.has_changes()
    assert queue.take(4, transmit_limit=2, tier_max=CHANGE_TIER) == (left,)
    assert queue.take(4, transmit_limit=2) == (left, suspect)
    assert not queue.has_changes() and queue.tier_counts() == (0, 1)


def test_a_fresh_change_goes_before_a_backlog_of_less_sent_changes():
    queue = BroadcastQueue()
    backlog = [_event(MemberJoined(f"p{i}", f"p{i}", 0), i) for i in range(1, 41)]
    for event in backlog:
        queue.push(event, CHANGE_TIER)
    left = _event(MemberLeft("p99", 0), 99)
    queue.push(left, CHANGE_TIER)
    limit = 4
    messages = [queue.take(2, transmit_limit=limit) for _ in range(limit)]
    assert all(message[0] == left for message in messages), messages  # all its sends first
    assert left.digest not in queue.transmits()
