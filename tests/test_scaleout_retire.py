"""Retired replicas drop their data once the new set holds it (meshstream/protocol/retire.py),
between Nodes wired back to back."""

from __future__ import annotations

from meshstream.clocks import VersionVector
from meshstream.protocol.effects import Send
from meshstream.wire.replication_messages import SyncEvents
from topology.placement import top_peers
from meshstream.wire.rebalance_messages import ReleaseQuery, ReleaseReply
from meshstream.wire.replication_messages import StreamVector
from meshstream.wire.schema import message_from_bytes, message_to_bytes
from tests.node_harness import Harness, fast_config

STREAMS = [f"s{i}" for i in range(24)]


def keys(count: int, prefix: str) -> list[tuple[bytes, bytes]]:
    return [(f"{prefix}{i}".encode(), f"value {prefix}{i}".encode()) for i in range(count)]


def held(harness: Harness, name: str, stream: str) -> set[bytes]:
    return {event.key for event in harness.read_all(name, stream)}


def placement_holds_all(harness: Harness, names: list[str], written: dict[str, set[bytes]]) -> bool:
    """Every replica of every stream holds all of it; every other peer holds none of it."""
    for stream, wanted in written.items():
        replicas = set(harness.replicas_of(stream, names[0]))
        for name in names:
            have = held(harness, name, stream)
            if (name in replicas and have != wanted) or (name not in replicas and have):
                return False
    return True


def grow(seed: int, joiners: list[str]) -> tuple[Harness, dict[str, set[bytes]], list[str]]:
    harness = Harness(seed, config=fast_config(shards=8, replication_factor=2))
    harness.form_mesh(["n1", "n2"])
    written: dict[str, set[bytes]] = {}
    for stream in STREAMS:
        reply = harness.append("n1", stream, keys(10, stream), "quorum")
        assert reply.code == "", f"seed={seed}: {reply}"
        written[stream] = {a.key for a in reply.appended}
    for name in joiners:
        harness.start(name, seeds=("n1",))
    return harness, written, ["n1", "n2", *joiners]


def test_messages_round_trip() -> None:
    query = ReleaseQuery((1, 5), (StreamVector("s", VersionVector({"n1": 4})),))
    for message in (query, ReleaseReply((1, 5)), ReleaseReply(())):
        assert message_from_bytes(message_to_bytes(message)) == message


def test_replaced_replicas_drop_their_data_and_the_new_set_holds_all_of_it() -> None:
    harness, written, names = grow(71, ["n3", "n4", "n5"])
    harness.wait_for(lambda: harness.agreed(names) and placement_holds_all(harness, names, written), 30,
                     "seed=71: retired replicas dropped, new sets complete")
    dropped = sum(harness.node(n).rebalance.retirement.shards_dropped for n in names)
    assert dropped > 0, "seed=71: nothing was dropped"
    harness.run_for(2.0)  # anti-entropy must not pull a dropped shard back
    assert placement_holds_all(harness, names, written), "seed=71: a dropped shard came back"


def test_no_drop_while_a_member_of_the_new_set_is_not_caught_up() -> None:
    harness, written, names = grow(72, [])
    joiner = harness.start("n3", seeds=("n1",))
    joiner.take_events = lambda src, events, now, purpose: []  # n3 never stores what it is sent
    harness.wait_for(lambda: harness.agreed(["n1", "n2", "n3"]), 10, "seed=72: n3 joined")
    harness.run_for(4.0)
    moved = [s for s in STREAMS if "n3" in harness.replicas_of(s, "n1")]
    assert moved, "seed=72: no shard moved to n3"
    for stream, wanted in written.items():
        assert held(harness, "n1", stream) | held(harness, "n2", stream) == wanted, \
            f"seed=72: {stream} dropped while n3 could not catch up"
    for stream in moved:
        assert all(held(harness, n, stream) == wanted for n in ("n1", "n2") for wanted in [written[stream]]), \
            f"seed=72: a retiring replica of {stream} dropped it before n3 was caught up"
    assert sum(harness.node(n).rebalance.retirement.shards_dropped for n in ("n1", "n2")) == 0


def test_a_peer_that_reenters_the_set_catches_up_again() -> None:
    harness, written, names = grow(73, ["n3", "n4"])
    harness.wait_for(lambda: harness.agreed(names) and placement_holds_all(harness, names, written), 30,
                     "seed=73: dropped after the join")
    harness.crash("n4")  # n4's shards move back among n1-n3
    rest = ["n1", "n2", "n3"]
    harness.wait_for(lambda: harness.agreed(rest) and placement_holds_all(harness, rest, written), 40,
                     "seed=73: the shards n4 held are back on their old replicas")


def test_a_leaving_peer_hands_every_replicated_shard_to_its_successor() -> None:
    harness, written, names = grow(74, ["n3", "n4", "n5", "n6"])
    harness.wait_for(lambda: harness.agreed(names) and placement_holds_all(harness, names, written), 30,
                     "seed=74: retired replicas dropped")
    leaver = harness.node("n1")
    topology = leaver.topology
    effects = leaver.leave(harness.now)
    handed: dict[str, set[tuple[str, bytes]]] = {}
    for effect in effects:
        if isinstance(effect, Send) and isinstance(effect.message, SyncEvents):
            handed.setdefault(effect.peer, set()).update((e.stream, e.key) for e in effect.message.events)
    rest = [p for p in topology.live_peers() if p != "n1"]
    for stream, keys in written.items():
        shard = leaver.shard_of(stream)
        if "n1" not in topology.replica_set(shard):
            continue
        successors = [p for p in top_peers(shard, rest, 2) if p not in leaver.placement(shard)]
        assert successors, f"seed=74: no successor for shard {shard}"
        for peer in successors:
            assert {(stream, key) for key in keys} <= handed.get(peer, set()), \
                f"seed=74: {stream} not handed to {peer}"
    assert not leaver.rebalance.handoff.settled(harness.now), "seed=74: left before the handoff settled"


def test_a_new_set_that_lacks_what_a_retired_replica_holds_pulls_it_from_it() -> None:
    """The old set was replaced and the new one never caught up from it (seen in the
    500-peer scale-out: joiners that did not know the master was alive elected one of
    themselves). No anti-entropy round reaches the retired replica (in a large mesh the new
    set rarely picks it as a partner; here rounds are off), so only its release queries
    do: the member that lacks its events pulls them, and then it may drop them."""
    from meshstream.clocks import Dot
    from meshstream.envelope import Event

    seed = 75
    harness, written, names = grow(seed, ["n3", "n4"])
    harness.wait_for(lambda: harness.agreed(names) and placement_holds_all(harness, names, written), 30,
                     f"seed={seed}: retired replicas dropped")
    retiree, stream = next((n, s) for n in ("n2", "n3", "n4") for s in STREAMS
                           if n not in harness.replicas_of(s, "n1"))
    orphans, context = [], VersionVector()
    for counter in range(1, 6):  # acknowledged once by a master the new set never heard from
        orphans.append(Event.sequence(stream, b"orphan%d" % counter, b"x", {}, Dot("n9", counter), context))
        context = context.merge({"n9": counter})
    harness.crash(retiree)
    harness.preload(retiree, orphans)
    harness.node_setup = lambda node: setattr(node.anti_entropy, "choose_partner", lambda: None)
    harness.start(retiree, seeds=("n1",))
    for name in names:
        harness.node(name).anti_entropy.choose_partner = lambda: None
    written[stream] |= {event.key for event in orphans}
    harness.wait_for(lambda: placement_holds_all(harness, names, written), 30,  # (views need no rounds)
                     f"seed={seed}: {stream}'s replicas pulled what only retired {retiree} held, and it dropped it")
