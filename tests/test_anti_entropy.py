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
from tests.node_harness import Harness

NAMES = ["n1", "n2", "n3"]
REPLICATION_KINDS = [k.__name__ for k in (ForwardAppend, ForwardReply, Replicate, ReplicateAck,
                                          SyncOffer, SyncPull, SyncEvents, SyncContinue, SyncEnvelopes)]
SYNC_KINDS = ("SyncOffer", "SyncPull", "SyncEvents", "SyncContinue", "SyncEnvelopes")
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


def _in_sync_round_bytes(events: list[Event]) -> tuple[int, int, int]:
    """Sync bytes over 3 s of an idle, in-sync mesh holding `events` on every peer."""
    harness = Harness(32)
    for name in NAMES:
        harness.preload(name, events)
    harness.form_mesh(NAMES)
    harness.run_for(2.0)  # let the topology settle everywhere
    before = {kind: harness.bytes_by_kind[kind] for kind in SYNC_KINDS}
    offers_before = harness.messages
    harness.run_for(3.0)
    grown = {kind: harness.bytes_by_kind[kind] - before[kind] for kind in before}
    pulled = sum(grown[kind] for kind in SYNC_KINDS if kind != "SyncOffer")
    return grown["SyncOffer"], pulled, harness.messages - offers_before


@pytest.mark.parametrize("large_events", [20_000, pytest.param(200_000, marks=pytest.mark.slow)])
def test_in_sync_round_costs_the_same_at_small_and_large_sizes(large_events: int) -> None:
    small = _in_sync_round_bytes(_history(1_000, 10))
    large = _in_sync_round_bytes(_history(large_events, 10))
    assert small[1] == 0 and large[1] == 0, f"seed=32: in-sync rounds pulled {small[1]} / {large[1]} bytes"
    assert small[0] > 0
    assert small[0] == large[0], f"seed=32: offers cost {small[0]} bytes at 1k events, {large[0]} at {large_events}"


def test_returning_peer_catches_up_with_little_more_than_what_it_lacks() -> None:
    harness = Harness(33)
    harness.form_mesh(NAMES)
    stream = "catch-up"
    ratio = harness.catch_up_ratio(stream, NAMES, batches=10, batch_events=200, kinds=REPLICATION_KINDS, timeout_s=10)
    print(f"catch-up: received {ratio:.3f}x the bytes it lacked in replication messages")
    assert ratio <= CATCH_UP_RATIO_MAX, f"seed=33: catch-up ratio {ratio:.3f}"
    assert harness.converged(stream, NAMES)
