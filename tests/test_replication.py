"""Unit tests of the node's parts without a mesh: the `$topology` log, append validation,
the timer heap and the replication message codec."""

from __future__ import annotations

import random

import pytest

from meshstream.clocks import Dot, VersionVector
from meshstream.config import Config
from meshstream.errors import RemoteProtocolError
from meshstream.envelope import Event
from meshstream.protocol.replication import validate_append
from meshstream.protocol.timers import Timers
from meshstream.protocol.topology_log import TopologyLog
from meshstream.wire.messages import AppendItem
from meshstream.wire.replication_messages import ShardDigest, SyncPull
from meshstream.wire.schema import message_from_bytes, message_to_bytes
from topology.events import MasterElected, MemberJoined, MeshConfigured, topology_event


def facts(count: int) -> list:
    return [MemberJoined(f"p{i}", f"p{i}", 0) for i in range(count)]


def test_topology_log_digest_depends_only_on_the_dots_held() -> None:
    writer = TopologyLog("w.1")
    events = [writer.sequence(fact) for fact in facts(20)]
    for seed in range(5):
        shuffled = list(events)
        random.Random(seed).shuffle(shuffled)
        other = TopologyLog("x.1")
        other.load(shuffled + shuffled[:3])
        assert other.digest() == writer.digest(), f"seed={seed}"
        assert other.vector == writer.vector == VersionVector({"w.1": 20})
        assert other.state == writer.state


def test_topology_log_summary_names_holes_and_partners_fill_them() -> None:
    writer = TopologyLog("w.1")
    events = [writer.sequence(fact) for fact in facts(10)]
    partial = TopologyLog("x.1")
    partial.load([events[i] for i in (0, 1, 4, 7)])
    assert partial.vector == VersionVector({"w.1": 2})
    tops, holes = partial.summary(100)
    assert tops == VersionVector({"w.1": 8})
    assert holes == [Dot("w.1", c) for c in (3, 4, 6, 7)]
    sent = writer.missing_for(tops, 100, holes)
    assert [e.dot.counter for e in sent] == [3, 4, 6, 7, 9, 10], "only what it lacks"
    partial.load(sent)
    assert partial.digest() == writer.digest()


def test_same_fact_from_two_writers_keeps_one_served_and_both_dots() -> None:
    fact = MasterElected(3, "p1", 2)
    first, second = TopologyLog("a.1"), TopologyLog("b.1")
    one, two = first.sequence(fact), second.sequence(fact)
    first.add(two)
    second.add(one)
    assert first.digest() == second.digest()
    assert [e.digest for e in first.events()] == [e.digest for e in second.events()]
    assert len(first.events()) == 1 and first.sequence(fact) is None
    lacking = first.missing_for(VersionVector(), 10)
    assert {e.dot for e in lacking} == {one.dot, two.dot}, "the loser is handed on too"


def test_topology_log_rejects_events_that_are_not_facts() -> None:
    log = TopologyLog("w.1")
    bogus = Event.sequence("$topology", b"k" * 16, b"\x01", {}, Dot("z.1", 1), VersionVector())
    with pytest.raises(RemoteProtocolError):
        log.add(bogus)
    mismatched = topology_event(MeshConfigured(8, 3), Dot("z.1", 1), VersionVector())
    forged = Event.sequence("$topology", b"x" * 16, mismatched.data, {}, Dot("z.1", 2), VersionVector())
    with pytest.raises(RemoteProtocolError):
        log.add(forged)


def test_validate_append_names_the_broken_rule() -> None:
    config = Config.preset("sim", event_bytes_max=100, append_batch_events_max=2)
    ok = AppendItem(b"k", b"v", {})
    assert validate_append("orders", (ok,), config) == ""
    assert "reserved" in validate_append("$topology", (ok,), config)
    assert "1-2 events" in validate_append("orders", (ok, ok, ok), config)
    assert "at most 100" in validate_append("orders", (AppendItem(b"k", b"x" * 101, {}),), config)
    assert "key" in validate_append("orders", (AppendItem(b"", b"v", {}),), config)


def test_timers_fire_in_deadline_then_insertion_order() -> None:
    timers = Timers()
    timers.add(2.0, "write", 1)
    timers.add(1.0, "push", 2)
    timers.add(1.0, "read", 3)
    assert timers.next() == 1.0
    assert timers.pop_due(1.5) == [("push", 2), ("read", 3)]
    assert timers.pop_due(2.0) == [("write", 1)] and timers.next() is None


def test_replication_messages_round_trip_and_reject_bad_fields() -> None:
    pull = SyncPull(7, (1, 2), (), VersionVector({"a.1": 3}), (Dot("a.1", 2),), (4,), True)
    assert message_from_bytes(message_to_bytes(pull)) == pull
    with pytest.raises(ValueError):
        ShardDigest(1, b"short")


def test_seal_makes_the_same_envelope_as_sequence() -> None:
    rng = random.Random(5)
    for _ in range(50):
        metadata = {f"m{rng.randrange(40)}": rng.choice(["text", 7, b"\x00\xff"]) for _ in range(rng.randrange(4))}
        vector = VersionVector({f"p{rng.randrange(9)}": rng.randrange(1, 99) for _ in range(rng.randrange(4))})
        args = ("s", rng.randbytes(8), rng.randbytes(rng.randrange(300)))
        dot = Dot("w.1", rng.randrange(1, 1000))
        made = Event.sequence(*args, metadata, dot, vector)
        sealed = Event.seal(*args, made.metadata, dot, vector)
        assert sealed == made and sealed.envelope == made.envelope, f"metadata={metadata} vector={vector}"


def test_a_batch_is_sequenced_each_event_in_the_context_of_the_one_before() -> None:
    from meshstream.protocol.node import Node
    from meshstream.store.memory import MemoryStore

    node = Node("n1", "127.0.0.1:1", Config.preset("sim"), random.Random(1), MemoryStore())
    node.start(0.0)
    node._writer_durable = node._topology_synced = True  # a lone founder, durable at once
    items = [(AppendItem(b"k%d" % i, b"d", {}), ()) for i in range(3)]
    first = node.sequence_events("s", items)
    second = node.sequence_events("s", items[:1])
    writer = node.writer
    assert [e.dot for e in first + second] == [Dot(writer, c) for c in (1, 2, 3, 4)]
    assert [e.context for e in first + second] == [VersionVector({writer: c}) for c in (0, 1, 2, 3)]


def test_a_forward_to_a_master_declared_failed_is_rerouted_without_waiting_out_its_timer() -> None:
    from tests.node_harness import Harness, fast_config

    harness = Harness(31, fast_config(forward_timeout_s=4.0, append_timeout_s=8.0))
    names = ["n1", "n2", "n3"]
    harness.form_mesh(names)
    stream = "orders"
    master = harness.node("n1").master_of(stream)
    via = next(n for n in names if n != master)
    assert harness.append(via, stream, [(b"before", b"v")], "quorum").code == "", f"seed={harness.seed}"
    harness.crash(master)
    crashed_at = harness.now
    reply = harness.append(via, stream, [(b"after", b"v")], "quorum", timeout_s=8.0)
    waited = harness.now - crashed_at
    assert reply.code == "", f"seed={harness.seed}: {reply}"
    assert waited < 4.0, f"seed={harness.seed}: acknowledged {waited:.2f} s after the crash (forward timer: 4 s)"
