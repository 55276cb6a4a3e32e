"""Catch-up pulls between Nodes back to back: a pull's shards stay locked until its own
answer is durable (an answer to another pull from the same partner does not free them), a
lock held by a failed partner is free, continuations ask for big batches, and a returning
peer that lacks several batches still receives little more than what it lacks."""

from __future__ import annotations

import pytest

from meshstream.clocks import VersionVector
from meshstream.envelope import Event, decode_event
from meshstream.errors import RemoteProtocolError
from meshstream.protocol.anti_entropy import CONTINUE_LOCK_S_MIN, TOPOLOGY_SHARD
from meshstream.protocol.effects import Send
from meshstream.wire.replication_messages import (CATCHUP_BATCH_EVENTS_MAX, SyncContinue, SyncEnvelopes,
                                                  SyncPull)
from tests.node_harness import Harness

NAMES = ["n1", "n2", "n3"]
SEED = 41
CATCH_UP_RATIO_MAX = 1.2


def _mesh() -> Harness:
    harness = Harness(SEED)
    harness.form_mesh(NAMES)
    return harness


def test_an_answer_to_another_pull_does_not_free_a_catch_up_lock() -> None:
    harness = _mesh()
    node = harness.node("n3")
    entropy, now = node.anti_entropy, harness.now
    shard = node.shard_of("catch-up")
    continuation = entropy._pull(901, "n1", [shard], False, now, CONTINUE_LOCK_S_MIN)
    topology_only = entropy._pull(902, "n1", [], True, now)
    assert continuation.shards == (shard,) and topology_only.topology is not None
    entropy.on_durable("n1", (902, False), now)  # the $topology answer, empty and done
    assert entropy.pulling(shard, now), f"seed={SEED}: the catch-up's shard was released"
    assert not entropy.pulling(TOPOLOGY_SHARD, now)
    assert entropy._pull(903, "n2", [shard], False, now).shards == (), "another partner got the shard"
    entropy.on_durable("n1", (901, False), now)
    assert not entropy.pulling(shard, now)


def test_a_continuation_lock_outlives_slow_answers_but_not_its_partner() -> None:
    harness = _mesh()
    node = harness.node("n3")
    entropy, now = node.anti_entropy, harness.now
    shard = node.shard_of("catch-up")
    entropy._pull(911, "n1", [shard], False, now, CONTINUE_LOCK_S_MIN)
    assert entropy.pulling(shard, now + CONTINUE_LOCK_S_MIN - 0.5)
    assert not entropy.pulling(shard, now + CONTINUE_LOCK_S_MIN + 0.5)
    harness.crash("n1")
    harness.wait_for(lambda: not node.topology.is_live("n1"), 10, "n1 declared failed")
    assert not entropy.pulling(shard, harness.now), f"seed={SEED}: a failed partner kept its lock"


def test_a_cut_batch_is_continued_with_a_big_batch_pull() -> None:
    harness = _mesh()
    node = harness.node("n3")
    entropy, now = node.anti_entropy, harness.now
    shard = node.shard_of("catch-up")
    pull = entropy._pull(921, "n1", [shard], False, now)
    effects = entropy.on_events("n1", SyncEnvelopes(pull.round_id, (), True), now)
    sent = [e.message for e in effects if isinstance(e, Send)]
    assert [type(m) for m in sent] == [SyncContinue], sent
    assert sent[0].shards == (shard,) and entropy.pulling(shard, now)
    # The partner answers a continuation with up to CATCHUP_BATCH_EVENTS_MAX events.
    master = harness.node("n1").master_of("catch-up")
    items = [(f"k{i}".encode(), bytes(100)) for i in range(1000)]
    for batch in range(3):
        assert harness.append(master, "catch-up", [(b"%d-" % batch + k, v) for k, v in items], "master").code == ""
    server = harness.node(master)
    for message, limit in ((SyncPull(1, (shard,), (), None, (), (), False), server.config.anti_entropy_batch_events_max),
                           (SyncContinue(2, (shard,), (), None, (), (), False), CATCHUP_BATCH_EVENTS_MAX)):
        answer = [e.message for e in server.anti_entropy.on_pull("n3", message, harness.now) if isinstance(e, Send)][0]
        assert isinstance(answer, SyncEnvelopes) and answer.more
        assert len(answer.events) == limit, f"{type(message).__name__}: {len(answer.events)} events"


def test_returning_peer_lacking_many_batches_moves_little_more_than_it_lacks() -> None:
    harness = _mesh()
    stream = "catch-up"
    kinds = ("SyncOffer", "SyncPull", "SyncEvents", "SyncContinue", "SyncEnvelopes", "Replicate")
    ratio = harness.catch_up_ratio(stream, NAMES, batches=12, batch_events=1000, kinds=kinds, timeout_s=20)
    assert ratio <= CATCH_UP_RATIO_MAX, f"seed={SEED}: catch-up moved {ratio:.3f}x what was lacking"
    assert harness.converged(stream, NAMES)


def _cut_run(stream: str, count: int, writer: str = "n1") -> SyncEnvelopes:
    """A partner's cut batch (more): `count` consecutive events of `writer` in `stream`."""
    context = VersionVector({writer: 40})
    events = Event.seal_run(stream, writer, 40, context, [(b"k%d" % i, bytes(100), ()) for i in range(count)])
    return SyncEnvelopes(0, tuple(event.envelope for event in events), True)


def _pulled_vector(message: SyncPull, stream: str) -> dict[str, int]:
    """The vector `message` pulls `stream` with (absent: empty, all of it)."""
    return next((dict(v.vector.items()) for v in message.vectors if v.stream == stream), {})


def test_a_cut_run_is_continued_before_it_is_checked_naming_its_dots() -> None:
    """The next pull leaves (through the runtime's early sink) before the batch is taken,
    and names the batch's dots, so the partner does not send them again."""
    harness = _mesh()
    stream, master = "fresh-stream", "n1"  # a stream n3 does not know yet: the pull must name it all the same
    batch = _cut_run(stream, 300)
    node = harness.node("n3")
    entropy, now = node.anti_entropy, harness.now
    pull = entropy._pull(931, master, [node.shard_of(stream)], False, now)
    early: list[tuple[list, int]] = []
    node.early_sink = lambda effects: early.append((effects, len(node.unpersisted)))
    effects = entropy.on_events(master, SyncEnvelopes(pull.round_id, batch.events, True), now)
    assert len(early) == 1 and early[0][1] == 0, "the continuation did not leave before the batch was taken"
    sent = [e.message for e in early[0][0] if isinstance(e, Send)]
    assert [type(m) for m in sent] == [SyncContinue], sent
    last = decode_event(batch.events[-1]).dot
    assert _pulled_vector(sent[0], stream).get(last.peer) == last.counter, f"seed={SEED}: {sent[0].vectors}"
    assert not any(isinstance(e, Send) and isinstance(e.message, SyncPull) for e in effects), "continued twice"
    assert len(node.unpersisted) == 300


def test_without_an_early_sink_the_continuation_comes_first_in_the_effects() -> None:
    harness = _mesh()
    master, batch = "n1", _cut_run("catch-up", 50)
    node = harness.node("n3")
    pull = node.anti_entropy._pull(941, master, [node.shard_of("catch-up")], False, harness.now)
    effects = node.anti_entropy.on_events(master, SyncEnvelopes(pull.round_id, batch.events, True), harness.now)
    assert isinstance(effects[0], Send) and isinstance(effects[0].message, SyncContinue), effects[:2]


def test_a_bad_run_continued_early_is_asked_for_again() -> None:
    """A batch whose first and last envelopes look like a run but whose middle is damaged is
    rejected after its continuation left naming its dots; the pull after that names only
    what is held, so the events are sent again."""
    harness = _mesh()
    master, batch = "n1", _cut_run("catch-up", 40)
    node = harness.node("n3")
    entropy, now = node.anti_entropy, harness.now
    events = list(batch.events)
    events[20] = events[20][:-1] + bytes([events[20][-1] ^ 1])  # a wrong digest
    sent: list = []
    node.early_sink = sent.extend
    pull = entropy._pull(951, master, [node.shard_of("catch-up")], False, now)
    with pytest.raises(RemoteProtocolError):
        entropy.on_events(master, SyncEnvelopes(pull.round_id, tuple(events), True), now)
    assert [type(e.message) for e in sent] == [SyncContinue]
    assert not node.unpersisted, "a rejected batch left events in flight"
    again = entropy._pull(952, master, [node.shard_of("catch-up")], False, now + CONTINUE_LOCK_S_MIN + 1)
    assert _pulled_vector(again, "catch-up").get("n1", 0) == 0, f"seed={SEED}: {again.vectors}"
