"""Anti-entropy with Nodes back to back: repair of corrupt records, the cost of an in-sync
round at two data sizes, and the bytes a returning peer needs to catch up."""

from __future__ import annotations

import pytest

from meshstream.clocks import Dot, VersionVector
from meshstream.envelope import Event
from meshstream.errors import CorruptRecord
from meshstream.store.segment import SegmentStore
from meshstream.wire.replication_messages import ForwardAppend, ForwardReply, Replicate, ReplicateAck
from meshstream.wire.replication_messages import SyncContinue, SyncEnvelopes, SyncEvents, SyncOffer, SyncPull
from meshstream.wire.replication_messages import SyncSummary
from tests.node_harness import Harness, fast_config

NAMES = ["n1", "n2", "n3"]
REPLICATION_KINDS = [k.__name__ for k in (ForwardAppend, ForwardReply, Replicate, ReplicateAck,
                                          SyncSummary, SyncOffer, SyncPull, SyncEvents, SyncContinue, SyncEnvelopes)]
SYNC_KINDS = ("SyncSummary", "SyncOffer", "SyncPull", "SyncEvents", "SyncContinue", "SyncEnvelopes")
OFFER_KINDS = ("SyncSummary", "SyncOffer")  # what a round costs before anything is pulled
CATCH_UP_RATIO_MAX = 1.2  # issue 4: catch-up moves at most 1.2x the bytes lacking


def test_corrupt_record_is_never_served_and_is_refetched() -> None:
    harness = Harness(31)
    harness.form_mesh(NAMES)
    stream = "scrubbed"
    reply = harness.append("n1", stream, [(f"k{i}".encode(), b"payload" * 10) for i in range(20)], "all")
    assert reply.code == ""
    victim = next(n for n in harness.replicas_of(stream, "n1") if n != harness.node("n1").master_of(stream))
    original = harness.peers[victim].store.get(stream, b"k7")
    assert harness.peers[victim].store.damage(stream, b"k7")
    served = [e.key for e in harness.read_all(victim, stream)]
    assert b"k7" not in served or harness.peers[victim].store.get(stream, b"k7") == original
    harness.wait_for(lambda: any(kind == "corrupt" for _, kind, _ in harness.journal), 3, "scrub finds it")
    harness.wait_for(lambda: len(harness.read_all(victim, stream)) == 20, 5, "record refetched")
    assert harness.peers[victim].store.get(stream, b"k7") == original, "seed=31: served intact again"
    assert harness.converged(stream, NAMES)


def test_flipped_byte_in_a_segment_file_is_repaired_from_a_replica(tmp_path) -> None:
    stores: dict[str, SegmentStore] = {}

    def segment_store(name: str) -> SegmentStore:
        stores[name] = SegmentStore.open(str(tmp_path / name))
        return stores[name]

    harness = Harness(34, store_factory=segment_store)
    harness.form_mesh(NAMES)
    stream = "on-disk"
    payload = b"the payload that gets a flipped byte"
    assert harness.append("n1", stream, [(b"victim", payload), (b"other", b"fine")], "all").code == ""
    victim = next(n for n in harness.replicas_of(stream, "n1") if n != harness.node("n1").master_of(stream))
    original = stores[victim].get(stream, b"victim")
    segments = sorted((tmp_path / victim).glob("*.seg"))
    flipped = False
    for segment in segments:
        data = bytearray(segment.read_bytes())
        at = data.find(payload)
        if at >= 0:
            data[at + 3] ^= 0x01
            segment.write_bytes(bytes(data))
            flipped = True
    assert flipped, "seed=34: the payload was not found in a segment"
    harness.wait_for(lambda: any(kind == "corrupt" and victim in text for _, kind, text in harness.journal),
                     3, "scrub reports the flipped byte")

    def served_intact() -> bool:
        try:
            return stores[victim].get(stream, b"victim") == original
        except CorruptRecord:
            return False  # never served while corrupt: get() says so instead

    harness.wait_for(served_intact, 5, "record served intact again")
    assert [e.key for e in harness.read_all(victim, stream)] == [e.key for e in harness.read_all("n1", stream)]
    for store in stores.values():
        store.close()


def _history(count: int, streams: int) -> list[Event]:
    """`count` events over `streams` streams, as a departed writer left them."""
    events: list[Event] = []
    for index in range(count):
        stream = f"s{index % streams}"
        counter = index // streams + 1
        dot = Dot("old.1", counter)
        context = VersionVector({"old.1": counter - 1})
        events.append(Event.sequence(stream, f"k{index}".encode(), b"v" * 100, {}, dot, context))
    return events


def _in_sync_round_bytes(events: list[Event]) -> tuple[int, int, int, dict[str, int]]:
    """Sync bytes over 3 s of an idle, in-sync mesh holding `events` on every peer: (of
    summaries and offers, of pulls and events, messages, bytes by kind)."""
    harness = Harness(32)
    for name in NAMES:
        harness.preload(name, events)
    harness.form_mesh(NAMES)
    harness.run_for(2.0)  # let the topology settle everywhere
    before = {kind: harness.bytes_by_kind[kind] for kind in SYNC_KINDS}
    offers_before = harness.messages
    harness.run_for(3.0)
    grown = {kind: harness.bytes_by_kind[kind] - before[kind] for kind in before}
    pulled = sum(grown[kind] for kind in SYNC_KINDS if kind not in OFFER_KINDS)
    return sum(grown[kind] for kind in OFFER_KINDS), pulled, harness.messages - offers_before, grown


@pytest.mark.parametrize("large_events", [20_000, pytest.param(200_000, marks=pytest.mark.slow)])
def test_in_sync_round_costs_the_same_at_small_and_large_sizes(large_events: int) -> None:
    small = _in_sync_round_bytes(_history(1_000, 10))
    large = _in_sync_round_bytes(_history(large_events, 10))
    assert small[1] == 0 and large[1] == 0, f"seed=32: in-sync rounds pulled {small[1]} / {large[1]} bytes"
    assert small[0] > 0
    assert small[0] == large[0], f"seed=32: offers cost {small[0]} bytes at 1k events, {large[0]} at {large_events}"


def test_an_in_sync_round_is_one_summary_whatever_the_shard_count() -> None:
    """Peers in sync exchange only `SyncSummary` (no per-shard offer), and its bytes do not
    grow with the number of shards."""
    costs = {}
    for shards in (16, 256):
        harness = Harness(34, fast_config(shards=shards))
        harness.form_mesh(NAMES)
        harness.append("n1", "summary", [(b"k1", b"v")], "all")
        harness.run_for(2.0)
        before = dict(harness.bytes_by_kind)
        harness.run_for(3.0)
        grown = {kind: harness.bytes_by_kind[kind] - before.get(kind, 0) for kind in SYNC_KINDS}
        assert grown["SyncSummary"] > 0, f"seed=34 shards={shards}: no rounds ran"
        assert all(grown[kind] == 0 for kind in SYNC_KINDS if kind != "SyncSummary"), \
            f"seed=34 shards={shards}: in-sync rounds sent more than summaries: {grown}"
        costs[shards] = grown["SyncSummary"]
    assert costs[16] == costs[256], f"seed=34: summaries cost {costs} bytes over 3 s by shard count"


def test_a_summary_that_differs_is_answered_by_an_offer_and_repaired() -> None:
    """Events only one peer holds are found by summary rounds: the summaries differ, an
    offer answers, the others pull the events."""
    harness = Harness(35)
    harness.preload("n1", _history(50, 1))
    harness.form_mesh(NAMES)
    harness.wait_for(lambda: all(len(harness.read_all(name, "s0")) == 50 for name in NAMES), 10,
                     "every peer holding the events only n1 had")
    kinds = harness.bytes_by_kind
    assert kinds["SyncSummary"] > 0 and kinds["SyncOffer"] > 0 and kinds["SyncPull"] > 0, f"seed=35: {kinds}"


def test_returning_peer_catches_up_with_little_more_than_what_it_lacks() -> None:
    harness = Harness(33)
    harness.form_mesh(NAMES)
    stream = "catch-up"
    ratio = harness.catch_up_ratio(stream, NAMES, batches=10, batch_events=200, kinds=REPLICATION_KINDS, timeout_s=10)
    print(f"catch-up: received {ratio:.3f}x the bytes it lacked in replication messages")
    assert ratio <= CATCH_UP_RATIO_MAX, f"seed=33: catch-up ratio {ratio:.3f}"
    assert harness.converged(stream, NAMES)


def test_a_summary_with_another_topology_is_answered_with_a_topology_pull_and_an_offer() -> None:
    harness = Harness(36)
    harness.form_mesh(NAMES)
    node = harness.node("n2")
    effects = node.anti_entropy.on_summary("n1", SyncSummary(1, bytes(16), bytes(16)), harness.now)
    sent = [effect.message for effect in effects]
    pulls = [m for m in sent if type(m) is SyncPull]
    assert len(pulls) == 1 and pulls[0].topology is not None and pulls[0].answer_topology, f"seed=36: {sent}"
    assert any(type(m) is SyncOffer for m in sent), f"seed=36: no offer in {sent}"
    in_sync = node.anti_entropy.on_summary("n1", SyncSummary(2, bytes(16), node.log.digest()), harness.now)
    assert [type(effect.message) for effect in in_sync] == [SyncOffer], "seed=36: differing shards want an offer only"
