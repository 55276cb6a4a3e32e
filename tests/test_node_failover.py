"""Failover, rejoin and partitions with Nodes wired back to back (tests/node_harness.py)."""

from __future__ import annotations

from meshstream.clocks import VersionVector
from tests.node_harness import Harness

NAMES = ["n1", "n2", "n3"]
FIVE = ["n1", "n2", "n3", "n4", "n5"]


def keys(count: int, prefix: str) -> list[tuple[bytes, bytes]]:
    return [(f"{prefix}{i}".encode(), f"value {prefix}{i}".encode()) for i in range(count)]


def write_acked(harness: Harness, via: str, stream: str, items, ack: str) -> list[bytes]:
    reply = harness.append(via, stream, items, ack)
    assert reply.code == "", f"seed={harness.seed}: {reply}"
    return [a.key for a in reply.appended]


def test_master_crash_elects_a_new_master_that_takes_writes() -> None:
    harness = Harness(21)
    harness.form_mesh(NAMES)
    stream = "orders"
    old = harness.node("n1").master_of(stream)
    acked = write_acked(harness, old, stream, keys(10, "a"), "all")
    harness.crash(old)
    survivors = [n for n in NAMES if n != old]
    harness.wait_for(lambda: all(harness.node(n).master_of(stream) not in (None, old) for n in survivors),
                     10, "a new master elected")
    new = harness.node(survivors[0]).master_of(stream)
    assert harness.node(survivors[1]).master_of(stream) == new
    acked += write_acked(harness, survivors[0], stream, keys(10, "b"), "quorum")
    dots = {e.dot.peer.split(".")[0] for e in harness.read_all(new, stream) if e.key.startswith(b"b")}
    assert dots == {new}, f"seed=21: writes after failover sequenced by {dots}"
    harness.wait_for(lambda: harness.converged(stream, survivors), 5, "survivors converge")
    assert {e.key for e in harness.read_all(survivors[1], stream)} == set(acked)


def test_old_master_returns_as_replica_and_catches_up() -> None:
    harness = Harness(22)
    harness.form_mesh(NAMES)
    stream = "ledger"
    old = harness.node("n1").master_of(stream)
    acked = write_acked(harness, old, stream, keys(5, "a"), "all")
    harness.crash(old)
    survivors = [n for n in NAMES if n != old]
    harness.wait_for(lambda: harness.node(survivors[0]).master_of(stream) not in (None, old), 10, "failover")
    acked += write_acked(harness, survivors[1], stream, keys(20, "b"), "quorum")
    returned = harness.start(old)
    harness.wait_for(lambda: harness.agreed(NAMES), 10, "old master rejoined")
    new = harness.node(survivors[0]).master_of(stream)
    assert new != old and returned.master_of(stream) == new, f"seed=22: {returned.master_of(stream)}"
    assert returned.writer != f"{old}.1", "a restarted peer sequences under a fresh writer"
    harness.wait_for(lambda: harness.converged(stream, NAMES), 5, "returning master caught up")
    assert {e.key for e in harness.read_all(old, stream)} == set(acked)
    acked += write_acked(harness, old, stream, keys(3, "c"), "all")  # forwarded to the new master
    assert all(e.dot.peer.split(".")[0] == new for e in harness.read_all(old, stream) if e.key.startswith(b"c"))


def test_master_only_events_flow_back_after_return() -> None:
    """Events acknowledged with `master` acks that only the old master held reach the
    others when it returns (the eventual window), and nothing is lost."""
    harness = Harness(23)
    harness.form_mesh(NAMES)
    stream = "eventual"
    old = harness.node("n1").master_of(stream)
    others = [n for n in NAMES if n != old]
    harness.partition([old], others)  # its pushes are lost, but the acks still come
    acked = write_acked(harness, old, stream, keys(8, "m"), "master")
    harness.crash(old)
    harness.heal()
    harness.wait_for(lambda: harness.node(others[0]).master_of(stream) not in (None, old), 10, "failover")
    acked += write_acked(harness, others[0], stream, keys(4, "n"), "quorum")
    harness.start(old)
    harness.wait_for(lambda: harness.converged(stream, NAMES) and len(harness.read_all(others[1], stream)) == 12,
                     10, "the old master's own events spread")
    assert {e.key for e in harness.read_all(others[1], stream)} == set(acked), "seed=23"


def test_partition_with_writers_on_both_sides_merges_losing_nothing() -> None:
    harness = Harness(24)
    harness.form_mesh(FIVE, timeout_s=15)
    stream = "both-sides"
    minority, majority = ["n1", "n2"], ["n3", "n4", "n5"]
    harness.partition(minority, majority)
    harness.wait_for(lambda: all(harness.node(n).master_of(stream) is not None and
                                 harness.node(n).master_of(stream) in side
                                 for side in (minority, majority) for n in side),
                     15, "a master on each side")
    acked = write_acked(harness, "n1", stream, keys(6, "left"), "master")
    acked += write_acked(harness, "n4", stream, keys(6, "right"), "quorum")
    acked += write_acked(harness, "n3", stream, [(b"same", b"x")], "master")
    acked += write_acked(harness, "n2", stream, [(b"same", b"x")], "master")  # retried on the other side
    harness.heal()
    harness.wait_for(lambda: harness.agreed(FIVE), 15, "membership merged")
    replicas = harness.replicas_of(stream, "n5")
    harness.wait_for(lambda: harness.converged(stream, replicas), 10, "identical order on every replica")
    for name in replicas:
        served = [e.key for e in harness.read_all(name, stream)]
        assert set(served) == set(acked) and len(served) == len(set(served)), f"seed=24: {name} {served}"
    harness.wait_for(lambda: len({harness.node(n).master_of(stream) for n in FIVE}) == 1, 10, "one master")


def test_quorum_write_on_the_minority_side_fails_definitely() -> None:
    harness = Harness(25)
    harness.form_mesh(FIVE, timeout_s=15)
    stream = "minority"
    minority, majority = ["n1", "n2"], ["n3", "n4", "n5"]
    harness.partition(minority, majority)
    harness.wait_for(lambda: all(harness.node(n).topology.live_peers() == minority for n in minority),
                     15, "the minority declares the others failed")
    for ack in ("quorum", "all"):
        reply = harness.append("n1", stream, [(b"k", b"v")], ack)
        assert reply.code in ("quorum_unreachable", "no_master") and reply.definite, f"seed=25: {reply}"
    harness.run_for(1.0)
    assert not harness.read_all("n1", stream) and not harness.read_all("n2", stream), "seed=25: nothing written"
    assert harness.append("n4", stream, [(b"k", b"v")], "quorum").code == ""


def test_reader_cursor_across_failover_sees_each_event_once() -> None:
    harness = Harness(26)
    harness.form_mesh(NAMES)
    stream = "follow"
    old = harness.node("n1").master_of(stream)
    reader = next(n for n in NAMES if n != old)
    write_acked(harness, old, stream, keys(5, "a"), "all")
    seen = list(harness.read_via_client(reader, stream, VersionVector()).events)
    cursor = VersionVector()
    for event in seen:
        cursor = cursor.with_dot(event.dot)
    harness.crash(old)
    harness.wait_for(lambda: harness.node(reader).master_of(stream) not in (None, old), 10, "failover")
    write_acked(harness, reader, stream, keys(5, "b"), "quorum")
    harness.start(old)
    harness.wait_for(lambda: harness.converged(stream, NAMES), 10, "converged")
    more = harness.read_via_client(old, stream, cursor).events
    keys_seen = [e.key for e in seen] + [e.key for e in more]
    assert sorted(keys_seen) == sorted(k for k, _ in keys(5, "a") + keys(5, "b")), f"seed=26: {keys_seen}"


def test_graceful_leave_hands_mastership_on() -> None:
    harness = Harness(27)
    harness.form_mesh(NAMES)
    stream = "leaving"
    master = harness.node("n1").master_of(stream)
    write_acked(harness, master, stream, keys(3, "a"), "all")
    harness._run(harness.peers[master], harness.node(master).leave(harness.now))
    refused = harness.append(master, stream, [(b"late", b"v")], "master")
    assert refused.code == "unavailable" and refused.definite
    others = [n for n in NAMES if n != master]
    harness.wait_for(lambda: all(harness.node(n).master_of(stream) in others for n in others), 5, "handover")
    write_acked(harness, others[0], stream, keys(3, "b"), "quorum")


def test_unacknowledged_quorum_write_times_out_indefinitely() -> None:
    harness = Harness(28)
    harness.form_mesh(NAMES)
    stream = "cut-off"
    master = harness.node("n1").master_of(stream)
    harness.partition([master], [n for n in NAMES if n != master])
    reply = harness.append(master, stream, [(b"k", b"v")], "quorum", timeout_s=harness.config.append_timeout_s + 1)
    assert reply.code in ("timeout", "quorum_unreachable"), f"seed=28: {reply}"
    if reply.code == "timeout":
        assert not reply.definite, "it is durable on the master and may still spread"
        assert harness.read_all(master, stream), "seed=28: the master holds it"


def test_too_many_appends_in_flight_are_refused() -> None:
    from meshstream.wire.messages import AppendItem, AppendRequest
    from tests.node_harness import fast_config

    harness = Harness(29, config=fast_config(appends_in_flight_max=2))
    harness.form_mesh(NAMES)
    stream = "busy"
    master = harness.node("n1").master_of(stream)
    ids = []
    for index in range(3):
        request = AppendRequest(harness.next_request_id(), stream, (AppendItem(f"{index}".encode(), b"v", {}),), "all")
        harness.client(master, request)
        ids.append(request.request_id)
    third = harness.await_reply(master, ids[2])
    assert third.code == "overloaded" and third.definite, f"seed=29: {third}"
    assert harness.await_reply(master, ids[0]).code == ""
