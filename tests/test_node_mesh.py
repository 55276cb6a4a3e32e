"""Nodes wired back to back (tests/node_harness.py): mesh formation, the write path with
each ack level, forwarding, natural-key dedup, conflicts, reads and status."""

from __future__ import annotations

import json

import pytest

from meshstream.clocks import VersionVector
from meshstream.protocol.reads import status_document
from meshstream.wire.messages import AppendItem, AppendRequest, ReadRequest, StatusReply, StatusRequest
from meshstream.wire.messages import TopologyReply, TopologyRequest
from tests.node_harness import Harness

NAMES = ["n1", "n2", "n3"]


def mesh(seed: int) -> Harness:
    harness = Harness(seed)
    harness.form_mesh(NAMES)
    return harness


def test_three_nodes_form_a_mesh_from_one_seed() -> None:
    harness = mesh(1)
    views = [harness.node(n).topology for n in NAMES]
    for view in views:
        assert view.live_peers() == NAMES, f"seed=1: {view}"
        assert view.shards == harness.config.shards
    masters = [{s: v.master(s) for s in range(view.shards)} for v in views]
    assert masters[0] == masters[1] == masters[2], "seed=1: peers disagree on masters"
    events = [[e.digest for e in harness.node(n).log.events()] for n in NAMES]
    harness.wait_for(lambda: len({len(harness.node(n).log) for n in NAMES}) == 1, 5, "topology logs equal")


@pytest.mark.parametrize("ack", ["master", "quorum", "all"])
def test_append_each_ack_level_and_read_back_everywhere_in_one_order(ack: str) -> None:
    harness = mesh(2)
    stream = f"orders-{ack}"
    master = harness.node("n1").master_of(stream)
    items = [(f"k{i}".encode(), f"data {i}".encode()) for i in range(20)]
    reply = harness.append(master, stream, items, ack)
    assert reply.code == "", f"seed=2: {reply}"
    assert [a.key for a in reply.appended] == [k for k, _ in items]
    assert not any(a.duplicate for a in reply.appended)
    if ack == "all":  # every live replica holds it the moment the client hears back
        for name in harness.replicas_of(stream, master):
            assert len(harness.read_all(name, stream)) == 20, f"seed=2: {name} lacks events at ack"
    harness.wait_for(lambda: harness.converged(stream, NAMES) and len(harness.read_all("n3", stream)) == 20,
                     5, "replicas converge")
    order = [e.key for e in harness.read_all("n2", stream)]
    assert order == [k for k, _ in items], "seed=2: one master's events keep their order"


def test_quorum_ack_waits_for_a_second_copy() -> None:
    harness = mesh(3)
    stream = "quorum-check"
    master = harness.node("n1").master_of(stream)
    reply = harness.append(master, stream, [(b"a", b"1")], "quorum")
    assert reply.code == ""
    holders = [n for n in NAMES if harness.read_all(n, stream)]
    assert len(holders) >= 2, f"seed=3: quorum ack with copies only on {holders}"


def test_non_master_forwards_to_the_master() -> None:
    harness = mesh(4)
    stream = "forwarded"
    master = harness.node("n1").master_of(stream)
    other = next(n for n in NAMES if n != master)
    reply = harness.append(other, stream, [(b"x", b"1"), (b"y", b"2")], "quorum")
    assert reply.code == "", f"seed=4: {reply}"
    assert {a.dot.peer.split(".")[0] for a in reply.appended} == {master}, "seed=4: only the master sequences"


def test_duplicate_retry_returns_the_original_event() -> None:
    harness = mesh(5)
    stream = "retries"
    first = harness.append("n2", stream, [(b"once", b"payload")], "all")
    again = harness.append("n3", stream, [(b"once", b"payload")], "all")
    assert again.code == "" and again.appended[0].duplicate, f"seed=5: {again}"
    assert again.appended[0].dot == first.appended[0].dot
    assert again.appended[0].digest == first.appended[0].digest
    harness.run_for(1.0)
    assert all(len(harness.read_all(n, stream)) == 1 for n in NAMES)


def test_same_key_with_other_content_is_a_definite_conflict() -> None:
    harness = mesh(6)
    stream = "conflicts"
    assert harness.append("n1", stream, [(b"k", b"one")], "quorum").code == ""
    reply = harness.append("n2", stream, [(b"k", b"two")], "quorum")
    assert reply.code == "key_conflict" and reply.definite, f"seed=6: {reply}"
    inside = harness.append("n3", stream, [(b"j", b"a"), (b"j", b"b")], "master")
    assert inside.code == "key_conflict" and inside.definite


def test_pending_key_is_deduplicated_before_persistence() -> None:
    harness = mesh(7)
    stream = "pending"
    master = harness.node("n1").master_of(stream)
    first = AppendRequest(harness.next_request_id(), stream, (AppendItem(b"k", b"v", {}),), "master")
    second = AppendRequest(harness.next_request_id(), stream, (AppendItem(b"k", b"v", {}),), "master")
    harness.client(master, first)
    harness.client(master, second)  # before the first is durable
    one = harness.await_reply(master, first.request_id)
    two = harness.await_reply(master, second.request_id)
    assert two.appended[0].duplicate and two.appended[0].dot == one.appended[0].dot, "seed=7"


def test_invalid_requests_are_refused_definitely() -> None:
    harness = mesh(8)
    reply = harness.append("n1", "$system", [(b"k", b"v")])
    assert reply.code == "invalid" and reply.definite
    big = b"x" * (harness.config.event_bytes_max + 1)
    assert harness.append("n1", "s", [(b"k", big)]).code == "invalid"


def test_reads_resume_from_a_cursor_on_another_peer() -> None:
    harness = mesh(9)
    stream = "cursor"
    harness.append("n1", stream, [(f"a{i}".encode(), b"x") for i in range(10)], "all")
    first = harness.read_via_client("n2", stream, VersionVector())
    assert len(first.events) == 10
    harness.append("n2", stream, [(f"b{i}".encode(), b"y") for i in range(5)], "all")
    second = harness.read_via_client("n3", stream, first.cursor)
    assert [e.key for e in second.events] == [f"b{i}".encode() for i in range(5)], "seed=9"
    assert harness.read_via_client("n1", stream, second.cursor).events == ()


def test_following_read_wakes_on_new_events() -> None:
    harness = mesh(10)
    request_id = harness.next_request_id()
    harness.client("n3", ReadRequest(request_id, "follow", VersionVector(), 100, 5.0))
    harness.run_for(0.2)
    assert not [r for r in harness.peers["n3"].replies if getattr(r, "request_id", 0) == request_id]
    harness.append("n1", "follow", [(b"k", b"v")], "all")
    reply = harness.await_reply("n3", request_id, 2.0)
    assert [e.key for e in reply.events] == [b"k"], "seed=10"


def test_status_and_topology_documents() -> None:
    harness = mesh(11)
    harness.append("n1", "orders", [(b"k", b"v")], "all")
    harness.client("n2", StatusRequest(500))
    status = harness.await_reply("n2", 500)
    assert isinstance(status, StatusReply)
    document = json.loads(status.status_json)
    assert [m["peer"] for m in document["members"]] == NAMES
    assert document["streams"][0]["stream"] == "orders" and document["streams"][0]["events"] == 1
    harness.client("n3", TopologyRequest(501))
    topology = harness.await_reply("n3", 501)
    assert isinstance(topology, TopologyReply) and topology.events
    assert json.loads(topology.view_json)["shards"] == harness.config.shards


def test_same_seed_same_journal() -> None:
    first, second = mesh(12), mesh(12)
    for harness in (first, second):
        harness.append("n2", "det", [(f"{i}".encode(), b"v") for i in range(5)], "quorum")
        harness.run_for(1.0)
    assert first.journal == second.journal
    assert first.bytes_to == second.bytes_to


def test_a_joiner_holding_part_of_its_snapshot_does_not_think_it_is_alone() -> None:
    """A snapshot chunk with the mesh's elections but none of its members' joins left a
    joiner with no live peer in view: it took itself for alone, counted its view as
    current and elected itself master of shards whose masters were alive."""
    import random

    from meshstream.protocol.node import Node
    from meshstream.store.memory import MemoryStore
    from meshstream.wire.membership_messages import JoinReply
    from topology.events import MasterElected, MemberJoined, fact_of

    harness = Harness(81)
    harness.form_mesh(["n1", "n2", "n3"])
    harness.wait_for(lambda: all(harness.node("n1").topology.live_master(s) for s in range(harness.config.shards)),
                     10, "seed=81: every shard has a master")
    chunk = tuple(e for e in harness.node("n1").topology_events() if not isinstance(fact_of(e), MemberJoined))
    assert any(isinstance(fact_of(e), MasterElected) for e in chunk)
    joiner = Node("n4", "n4", harness.config, random.Random(81), MemoryStore(), ("n1",))
    joiner.start(harness.now)
    effects = joiner.receive("n1", JoinReply(chunk, False), harness.now + 0.01)
    effects += joiner.tick(harness.now + 0.02)
    assert not status_document(joiner)["synced"], "seed=81: a joiner mid-snapshot took itself for alone"
    elected = [e for e in joiner.topology_events() if isinstance(fact_of(e), MasterElected)
               and fact_of(e).peer == "n4"]
    assert not elected, f"seed=81: the joiner elected itself: {[fact_of(e) for e in elected]}"
