"""A node takes a catch-up batch that is a run (`EnvelopeRun`) whole: one Persist of the
run itself, its keys and dots tracked in flight, no Event built; a run any of whose
events is held or in flight here is taken event by event, and a conflict with a run in
flight is found as with any event in flight."""

from __future__ import annotations

from collections import Counter, deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshstream.clocks import Dot, VersionVector
from meshstream.envelope import Event
from meshstream.envelope_run import EnvelopeRun
from meshstream.errors import RemoteProtocolError
from meshstream.protocol.effects import Journal, Persist, take_group_commit
from meshstream.protocol.in_flight import InFlightDots
from meshstream.wire.envelope_batch import decode_run
from meshstream.wire.replication_messages import Replicate, SyncEnvelopes
from meshstream.wire.schema import message_from_bytes, message_to_bytes
from tests.node_harness import Harness

NAMES = ["n1", "n2", "n3"]
STREAM = "catch-up"


def _events(first: int, count: int, writer: str = "n1") -> list[Event]:
    return Event.seal_run(STREAM, writer, first - 1, VersionVector({writer: first - 2} if first > 2 else {}),
                          [(b"k%05d" % counter, b"x" * 50, ()) for counter in range(first, first + count)])


def _run(events: list[Event]) -> EnvelopeRun:
    run = decode_run([event.envelope for event in events])
    assert type(run) is EnvelopeRun
    return run


def _taken(node, batch, now: float) -> list[Persist]:
    effects = node.take_events("n1", batch, now, ("sync", "n1", None))
    return [effect for effect in effects if isinstance(effect, Persist)]


def _mesh(seed: int):
    harness = Harness(seed)
    harness.form_mesh(NAMES)
    return harness, harness.node("n3"), harness.now


def test_a_new_run_is_persisted_whole_and_tracked_until_durable() -> None:
    harness, node, now = _mesh(41)
    run = _run(_events(2, 100))
    persists = _taken(node, run, now)
    assert len(persists) == 1 and persists[0].events is run, "seed=41"
    assert run._events is None, "seed=41: no Event was built for the run"
    assert node.unpersisted[STREAM, b"k00050"] is run
    harness.peers["n3"].store.append_batch(run, on_conflict="resolve")
    stranger = Event.sequence(STREAM, b"k00050", b"other", {}, Dot("n2", 1), VersionVector())
    node.unpersisted[STREAM, b"k00050"] = stranger  # not the run's: must outlive its untracking
    node.persisted(persists[0].token, now)
    assert [natural for natural in node.unpersisted if natural[0] == STREAM] == [(STREAM, b"k00050")], "seed=41"
    assert node.unpersisted[STREAM, b"k00050"] is stranger
    del node.unpersisted[STREAM, b"k00050"]
    assert not any((STREAM, "n1", counter) in node._unpersisted_dots for counter in range(1, 103)), "seed=41"
    assert harness.peers["n3"].store.version_vector(STREAM).get("n1") == 0  # 2..101: dot 1 never came
    assert len(harness.peers["n3"].store.read(STREAM, VersionVector(), 1000)) == 100


def test_the_next_pull_names_a_run_in_flight() -> None:
    harness, node, now = _mesh(42)
    first = _events(1, 1)
    harness.peers["n3"].store.append_batch(first, on_conflict="resolve")
    _taken(node, _run(_events(2, 100)), now)
    assert node.pull_vector(STREAM).get("n1") == 101, "seed=42"


def test_a_run_overlapping_events_in_flight_is_taken_event_by_event() -> None:
    harness, node, now = _mesh(43)
    _taken(node, _events(2, 10), now)  # dots 2..11 in flight, as events
    persists = _taken(node, _run(_events(2, 30)), now)  # dots 2..31
    assert len(persists) == 1 and type(persists[0].events) is tuple, "seed=43"
    assert [event.dot.counter for event in persists[0].events] == list(range(12, 32)), "seed=43"


def test_a_conflict_with_a_run_in_flight_is_found() -> None:
    harness, node, now = _mesh(44)
    run = _run(_events(2, 10))
    _taken(node, run, now)
    rival = Event.sequence(STREAM, b"k00005", b"rival", {}, Dot("n2", 1), VersionVector())
    effects = node.take_events("n2", [rival], now, ("sync", "n2", None))
    conflicts = [effect for effect in effects if isinstance(effect, Journal) and effect.kind == "conflict"]
    assert len(conflicts) == 1 and "k00005" in conflicts[0].text, f"seed=44: {effects}"


def test_a_masters_push_reaches_its_replica_as_a_run_equal_to_what_was_sent() -> None:
    sent = Replicate(7, tuple(_events(5, 40)))
    received = message_from_bytes(message_to_bytes(sent))
    assert type(received.events) is EnvelopeRun and received == sent
    assert received.events != tuple(_events(5, 39)) and received.events != tuple(_events(6, 40))


def test_a_group_commit_joins_runs_that_continue_one_another() -> None:
    a, b = _run(_events(2, 10)), _run(_events(12, 10))
    gap, other = _run(_events(23, 5)), _run(_events(2, 5, writer="n2"))
    batch, events = take_group_commit(deque([Persist(1, a), Persist(2, b)]), 1000)
    assert [p.token for p in batch] == [1, 2] and type(events) is EnvelopeRun and list(events) == list(a) + list(b)
    for second in gap, other, tuple(_events(12, 3)):
        batch, events = take_group_commit(deque([Persist(1, a), Persist(2, second)]), 1000)
        assert len(batch) == 2 and type(events) is list and events == list(a) + list(second)
    pending = deque([Persist(1, a), Persist(2, b)])
    batch, events = take_group_commit(pending, 15)  # b does not fit: a alone, as it is
    assert events is a and len(pending) == 1


def test_a_run_with_one_tampered_envelope_is_refused_and_changes_nothing() -> None:
    harness, node, now = _mesh(45)
    envelopes = [event.envelope for event in _events(2, 50)]
    envelopes[20] = envelopes[20][:-1] + bytes([envelopes[20][-1] ^ 1])  # its digest no longer matches
    before = dict(node.unpersisted)
    with pytest.raises(RemoteProtocolError):
        node.receive("n1", SyncEnvelopes(1, tuple(envelopes), True), now)
    assert node.unpersisted == before, "seed=45"
    assert not harness.peers["n3"].store.read(STREAM, VersionVector(), 10), "seed=45"


@pytest.mark.parametrize("adds_between", [0, 1, 200])
def test_a_key_stored_between_a_runs_two_checks_is_caught_at_the_second(adds_between: int) -> None:
    """A run found new when it arrives is checked again when its batch is written, against
    the keys added since (or the whole table once those are no longer all kept): a key
    stored in between makes the run go event by event, and the store keeps one event."""
    harness, node, now = _mesh(43)
    store = harness.peers["n3"].store
    run = _run(_events(2, 20))
    assert store.unheld_run(run) and run.key_mark is not None
    for number in range(adds_between):
        store.append_batch([Event.sequence("other", b"o%d" % number, b"", {}, Dot("n2", number + 1), VersionVector())],
                           on_conflict="resolve")
    rival = Event.sequence(STREAM, b"k00010", b"rival", {}, Dot("n2", 500), VersionVector())
    store.append_batch([rival], on_conflict="resolve")
    store.append_batch(run, on_conflict="resolve")
    kept = store.get(STREAM, b"k00010")
    assert kept is not None and kept.digest == min(rival.digest, run.event_of(b"k00010").digest), "seed=43"
    assert store.get(STREAM, b"k00011").dot == Dot("n1", 11), "seed=43: the rest of the run is stored"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["run", "single", "done"]), st.sampled_from(["n1", "n2"]),
                          st.integers(1, 40), st.integers(1, 8)), max_size=30))
def test_dots_in_flight_agree_with_a_multiset_of_dots(steps) -> None:
    """`InFlightDots` (runs as ranges, single events in a set) answers as a count of the
    runs holding each dot and a set of the single dots would: in flight while any holds it."""
    dots, model, singles = InFlightDots(), Counter(), set()
    runs: list[EnvelopeRun] = []
    for action, writer, first, count in steps:
        if action == "run":
            run = _run(_events(first + 1, count, writer))
            counters = range(run.first, run.last + 1)
            assert dots.isdisjoint_run(run) == all(model[STREAM, writer, c] == 0 and (STREAM, writer, c) not in singles
                                                   for c in counters)
            dots.add_run(run)
            model.update((STREAM, writer, c) for c in counters)
            runs.append(run)
        elif action == "single":
            dots.single.add((STREAM, writer, first))
            singles.add((STREAM, writer, first))
        elif runs:
            run = runs.pop(first % len(runs))
            dots.discard_run(run)
            model.subtract((STREAM, run.writer, c) for c in range(run.first, run.last + 1))
        for counter in range(1, 52):
            for peer in ("n1", "n2"):
                held = model[STREAM, peer, counter] > 0 or (STREAM, peer, counter) in singles
                assert ((STREAM, peer, counter) in dots) == held, (steps, peer, counter)
    assert bool(dots) == (bool(singles) or any(value > 0 for value in model.values()))
