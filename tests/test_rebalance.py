"""Rebalancing between Nodes wired back to back: catch-up before acks, master handovers,
draining on leave (meshstream/protocol/rebalance.py)."""

from __future__ import annotations

import math

from meshstream.wire.messages import AppendItem, AppendRequest
from meshstream.wire.rebalance_messages import CatchUpQuery, CatchUpReply, HandoverDone, ShardEpoch, ShardProgress
from meshstream.wire.schema import message_from_bytes, message_to_bytes
from tests.node_harness import Harness, fast_config


def keys(count: int, prefix: str) -> list[tuple[bytes, bytes]]:
    return [(f"{prefix}{i}".encode(), f"value {prefix}{i}".encode()) for i in range(count)]


def masters_per_peer(harness: Harness, via: str) -> dict[str, int]:
    topology = harness.node(via).topology
    load: dict[str, int] = {}
    for shard in range(topology.shards or 0):
        master = topology.live_master(shard)
        if master is not None:
            load[master] = load.get(master, 0) + 1
    return load


def test_messages_round_trip() -> None:
    query = CatchUpQuery((ShardEpoch(3, 2),), ())
    reply = CatchUpReply((ShardProgress(3, 2, 17, False),))
    for message in (query, reply):
        assert message_from_bytes(message_to_bytes(message)) == message


def test_a_joining_replica_counts_toward_acks_only_once_caught_up() -> None:
    harness = Harness(61, config=fast_config(shards=4, replication_factor=3))
    harness.form_mesh(["n1", "n2"])
    stream = "history"
    for batch in range(20):
        reply = harness.append("n1", stream, keys(50, f"b{batch}-"), "quorum")
        assert reply.code == "", f"seed=61: {reply}"
    master = harness.node("n1").master_of(stream)
    shard = harness.node(master).shard_of(stream)
    harness.start("n3", seeds=("n1",))
    harness.wait_for(lambda: "n3" in harness.node(master).placement(shard), 10, "n3 placed")
    master_node = harness.node(master)
    counted_at_join = master_node.ack_members(stream, master_node.write_placement(shard))
    held_at_join = len(harness.read_all("n3", stream))
    assert "n3" not in counted_at_join or held_at_join == 1000, f"seed=61: counted with {held_at_join} events"

    def counted() -> bool:
        return "n3" in master_node.ack_members(stream, master_node.write_placement(shard))

    harness.wait_for(counted, 10, "n3 confirmed caught up")
    assert len(harness.read_all("n3", stream)) == 1000, "seed=61: confirmed before holding everything"


def test_masters_spread_out_as_peers_join() -> None:
    harness = Harness(62, config=fast_config(shards=16, replication_factor=3))
    names = [f"n{i}" for i in range(1, 7)]
    harness.form_mesh(names[:1])
    for name in names[1:]:
        harness.start(name, seeds=("n1",))
    cap = math.ceil(16 / len(names)) + 1

    def balanced() -> bool:
        if not harness.agreed(names):
            return False
        return max(masters_per_peer(harness, "n1").values()) <= cap

    harness.wait_for(balanced, 30, f"at most {cap} masters per peer")
    topology = harness.node("n1").topology
    for shard in range(16):
        assert topology.live_master(shard) in topology.replica_set(shard), f"seed=62: shard {shard}"
    assert sum(harness.node(n).rebalance.handovers_done for n in names) > 0
    assert all(harness.node(n).rebalance.status()["handovers"] == [] for n in names)


def test_no_acknowledged_write_lost_across_joins_and_handovers() -> None:
    harness = Harness(63, config=fast_config(shards=8, replication_factor=3))
    harness.form_mesh(["n1", "n2"])
    acked: dict[str, set[bytes]] = {}
    pending: list[tuple[str, int, str]] = []
    joiners = iter([f"n{i}" for i in range(3, 9)])
    for step in range(240):
        stream = f"s{step % 12}"
        request_id = harness.next_request_id()
        key = f"k{step}".encode()
        harness.client("n1" if step % 2 else "n2", AppendRequest(request_id, stream, (AppendItem(key, b"v", {}),),
                                                               "quorum"))
        pending.append(("n1" if step % 2 else "n2", request_id, stream))
        if step % 40 == 10:
            name = next(joiners, None)
            if name is not None:
                harness.start(name, seeds=("n1",))
        harness.run_for(0.05)
    for via, request_id, stream in pending:
        reply = harness.await_reply(via, request_id, timeout_s=10)
        if reply.code == "":
            acked.setdefault(stream, set()).update(a.key for a in reply.appended)
    names = [f"n{i}" for i in range(1, 9)]
    harness.wait_for(lambda: harness.agreed(names), 20, "all eight agree")
    assert sum(len(k) for k in acked.values()) >= 200, f"seed=63: only {sum(len(k) for k in acked.values())} acked"
    for stream, keys_acked in sorted(acked.items()):
        replicas = harness.replicas_of(stream, "n1")
        harness.wait_for(lambda: harness.converged(stream, replicas), 20, f"{stream} converged")
        for name in replicas:
            held = {e.key for e in harness.read_all(name, stream)}
            assert keys_acked <= held, f"seed=63: {name} lacks {sorted(keys_acked - held)[:5]} of {stream}"
    assert sum(harness.node(n).rebalance.handovers_done for n in names) > 0, "seed=63: no handover exercised"


def test_graceful_leave_hands_shards_off_before_member_left() -> None:
    harness = Harness(64, config=fast_config(shards=8, replication_factor=3))
    names = ["n1", "n2", "n3", "n4"]
    harness.form_mesh(names)
    leaver = "n1"
    mastered = [s for s in range(8) if harness.node(leaver).topology.live_master(s) == leaver]
    assert mastered, "seed=64: n1 masters something after forming"
    for shard in mastered:
        stream = next(f"x{i}" for i in range(1000) if harness.node(leaver).shard_of(f"x{i}") == shard)
        assert harness.append(leaver, stream, keys(5, "a"), "master").code == ""
    harness._run(harness.peers[leaver], harness.node(leaver).leave(harness.now))
    harness.wait_for(lambda: harness.node(leaver).departed, 3, "drained and left")
    left = [text for _at, kind, text in harness.journal if kind == "left"]
    assert left[0] == f"{leaver} leaves, 0 shard(s) not handed over", f"seed=64: {left}"
    others = [n for n in names if n != leaver]
    harness.wait_for(lambda: all(harness.node(n).topology.member(leaver).status == "left" for n in others), 5,
                     "MemberLeft spread")
    harness.wait_for(lambda: all(harness.node(n).topology.live_master(s) in others for n in others for s in mastered),
                     5, "successors known everywhere")


def test_handover_done_with_a_forged_event_is_rejected() -> None:
    import pytest

    from meshstream.errors import RemoteProtocolError
    from meshstream.envelope import Event
    from meshstream.clocks import Dot, VersionVector

    harness = Harness(65)
    harness.form_mesh(["n1", "n2", "n3"])
    bogus = Event.sequence("$topology", b"0" * 16, b"\x82\x07\x00", (), Dot("n9.1", 1), VersionVector())
    with pytest.raises(RemoteProtocolError):
        harness.node("n2").receive("n1", HandoverDone(0, bogus, ()), harness.now)
