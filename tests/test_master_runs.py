"""A master's usual append sealed as an `EnvelopeRun` (replication.Writes._fresh_run):
the same bytes as `Event.seal_run`, and the same answers, events and stores as the
item-by-item path, for fresh batches, retries in flight and after, duplicates inside a
batch, conflicts and metadata."""

from __future__ import annotations

import os
import random

import pytest

from meshstream.clocks import VersionVector
from meshstream.envelope import Event, _head, count_heads
from meshstream.envelope_run import EnvelopeRun
from meshstream.protocol.effects import Persist
from meshstream.protocol import replication
from meshstream.protocol.replication import Writes, validate_append
from meshstream.store.segment import SegmentStore
from meshstream.wire.messages import AppendItem, AppendRequest
from meshstream.wire.replication_messages import Replicate
from meshstream.wire.schema import message_from_bytes, message_to_bytes
from tests.node_harness import Harness, fast_config

NAMES = ["n1", "n2", "n3"]


def test_count_heads_are_the_heads_of_each_counter() -> None:
    for start in [1, 20, 23, 24, 250, 255, 256, 65530, 65535, 65536, 2**32 - 2, 2**32, 2**64 - 4]:
        assert count_heads(start, start + 4) == [_head(0, n) for n in range(start, start + 4)], start
    assert count_heads(0, 300) == [_head(0, n) for n in range(300)]


@pytest.mark.parametrize("seed", range(4))
def test_run_envelopes_are_the_bytes_seal_run_makes(seed: int) -> None:
    rng = random.Random(seed)
    for trial in range(60):
        items = [(rng.randbytes(rng.randint(1, 200)), rng.randbytes(rng.choice([0, 1, 23, 24, 255, 256, 300, 70000])), ())
                 for _ in range(rng.randint(1, 30))]
        counter = rng.choice([1, 5, 22, 23, 250, 65530, 2**32 - 3, rng.randint(1, 10**6)])
        writer = rng.choice(["a", "m", "z", "p1.2"])
        others = {f"p{i}": rng.randint(1, 1000) for i in range(rng.randint(0, 4))}
        context = VersionVector({**others, writer: rng.randint(1, 5)} if rng.random() < 0.5 else others)
        events = Event.seal_run("s" * rng.randint(1, 30), writer, counter, context, items)
        digests, envelopes = Event.seal_run_envelopes(events[0].stream, writer, counter, others,
                                                      [key for key, _, _ in items], [data for _, data, _ in items])
        assert digests == [e.digest for e in events], f"seed={seed} trial={trial}"
        assert envelopes == [e.envelope for e in events], f"seed={seed} trial={trial}"


def test_a_masters_second_append_is_persisted_as_one_run_and_answered_per_event() -> None:
    harness = Harness(11)
    harness.form_mesh(NAMES)
    stream = "runs"
    master = harness.node("n1").master_of(stream)
    assert harness.append(master, stream, [(b"first", b"x")]).code == ""  # the writer joins the contexts
    node = harness.node(master)
    request = AppendRequest(harness.next_request_id(), stream,
                            tuple(AppendItem(f"k{i}".encode(), b"d" * i, {}) for i in range(1, 6)), "all")
    effects = node.client_request(1, request, harness.now)
    persists = [e for e in effects if isinstance(e, Persist)]
    assert len(persists) == 1 and type(persists[0].events) is EnvelopeRun, f"seed=11: {persists}"
    run = persists[0].events
    assert len(node.writes.pending_keys) == 5 and all(v is run for v in node.writes.pending_keys.values())
    harness._run(harness.peers[master], effects)
    reply = harness.await_reply(master, request.request_id)
    assert reply.code == "" and [a.key for a in reply.appended] == [item.key for item in request.items]
    assert [(a.dot.peer, a.dot.counter) for a in reply.appended] == [(run.writer, c) for c in run.counters()]
    assert [a.digest for a in reply.appended] == run.digests and not any(a.duplicate for a in reply.appended)
    assert not node.writes.pending_keys, "seed=11: durable keys leave the pending map"
    for name in NAMES:
        held = {e.key: e for e in harness.read_all(name, stream)}
        assert [held[item.key].envelope for item in request.items] == run.envelopes, f"seed=11: {name}"


def _script(rng: random.Random, stream: str) -> list[list[tuple[bytes, bytes, dict]]]:
    """Rounds of appends sent together (so later ones meet earlier ones in flight): fresh
    batches, retries, duplicates inside a batch, conflicting content, metadata."""
    sent: list[tuple[bytes, bytes, dict]] = []
    rounds = []
    for round_number in range(14):
        requests = []
        for number in range(rng.randint(1, 4)):
            fresh = [(f"r{round_number}-{number}-{i}".encode(), rng.randbytes(rng.randint(0, 300)), {})
                     for i in range(rng.randint(1, 12))]
            kind = rng.choice(["fresh", "fresh", "fresh", "retry", "mixed", "inside", "conflict", "metadata"])
            if kind == "retry" and sent:
                items = rng.sample(sent, min(len(sent), rng.randint(1, 5)))
            elif kind == "mixed" and sent:
                items = fresh + [rng.choice(sent)]
            elif kind == "inside":
                items = fresh + [fresh[0]]
            elif kind == "conflict" and sent:
                key, data, metadata = rng.choice(sent)
                items = fresh + [(key, data + b"!", metadata)]
            elif kind == "metadata":
                items = fresh[:-1] + [(fresh[-1][0], fresh[-1][1], {"n": round_number})]
            else:
                items = fresh
            requests.append(items)
            sent += [item for item in items if item not in sent and not any(k == item[0] for k, _, _ in sent)]
        rounds.append(requests)
    return rounds


def _play(seed: int, rounds: list, stream: str) -> tuple[list, dict]:
    harness = Harness(seed)
    harness.form_mesh(NAMES)
    replies = []
    for round_number, requests in enumerate(rounds):
        ack = ["master", "quorum", "all"][round_number % 3]
        ids = []
        for number, items in enumerate(requests):
            request = AppendRequest(harness.next_request_id(), stream,
                                    tuple(AppendItem(k, d, m) for k, d, m in items), ack)
            ids.append(harness.client(NAMES[number % 3], request))  # forwarded to the master from the others
        replies += [harness.await_reply(NAMES[number % 3], request_id) for number, request_id in enumerate(ids)]
    harness.run_for(2.0)
    stores = {name: [e.envelope for e in harness.read_all(name, stream)] for name in NAMES}
    return replies, stores


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_runs_answer_and_store_exactly_as_the_item_by_item_path(seed: int, monkeypatch) -> None:
    rounds = _script(random.Random(seed), "mixed")
    made: list[EnvelopeRun] = []
    fresh_run = Writes._fresh_run

    def counted(self, stream, items):
        run = fresh_run(self, stream, items)
        made.extend([run] if run is not None else [])
        return run

    with monkeypatch.context() as patch:
        patch.setattr(Writes, "_fresh_run", counted)
        with_runs = _play(seed, rounds, "mixed")
    assert len(made) >= 5, f"seed={seed}: only {len(made)} appends took the run path"
    with monkeypatch.context() as patch:
        patch.setattr(Writes, "_fresh_run", lambda self, stream, items: None)
        without = _play(seed, rounds, "mixed")
    assert with_runs[0] == without[0], f"seed={seed}: replies differ"
    assert with_runs[1] == without[1], f"seed={seed}: stores differ"
    codes = {reply.code for reply in with_runs[0]}
    assert "" in codes and "key_conflict" in codes, f"seed={seed}: the script lacks a case: {codes}"
    assert any(a.duplicate for reply in with_runs[0] for a in reply.appended), f"seed={seed}: no duplicate"


def test_a_push_of_a_run_encodes_to_the_bytes_of_its_events() -> None:
    keys, datas = [f"k{i}".encode() for i in range(7)], [bytes(i * 40) for i in range(7)]
    digests, envelopes = Event.seal_run_envelopes("s", "w.1", 3, {"a.1": 9}, keys, datas)
    run = EnvelopeRun("s", "w.1", 4, keys, datas, {"a.1": 9}, list(range(3, 10)), digests, envelopes)
    as_run = message_to_bytes(Replicate(5, run))
    assert run._events is None, "no Event is built to encode a run"
    assert as_run == message_to_bytes(Replicate(5, tuple(run.events())))
    assert message_from_bytes(as_run).events == run


@pytest.mark.parametrize("seed", range(3))
def test_the_column_check_of_an_append_agrees_with_the_item_rules(seed: int, monkeypatch) -> None:
    config = fast_config()
    rng = random.Random(seed)
    appends = [tuple(AppendItem(rng.choice([b"", b"k" * rng.randint(1, 210), "text"]) if rng.random() < 0.03
                                else rng.randbytes(rng.randint(1, 200)),
                                bytes(rng.choice([0, 10, config.event_bytes_max, config.event_bytes_max + 1])
                                      if rng.random() < 0.03 else 10),
                                {"m": 1} if rng.random() < 0.01 else {})
                     for _ in range(rng.randint(1, 20))) for _ in range(400)]
    answers = [validate_append("s", items, config) for items in appends]
    usual = sum(map(replication._usual_append, appends, [config] * len(appends)))
    monkeypatch.setattr(replication, "_usual_append", lambda items, config: False)
    assert answers == [validate_append("s", items, config) for items in appends], f"seed={seed}"
    assert 50 < usual < len(appends) - 50 and {""} < set(answers), f"seed={seed}: the draw lacks a case"


def test_acknowledged_run_writes_survive_a_reopen_of_the_segment_log(tmp_path) -> None:
    """Runs reach the disk as envelopes never decoded on the way: the reopened log checks
    every digest and serves the events the replies named."""
    stores: dict[str, SegmentStore] = {}

    def open_store(name: str) -> SegmentStore:
        stores[name] = SegmentStore.open(str(tmp_path / name), fast_config())
        return stores[name]

    harness = Harness(31, store_factory=open_store)
    harness.form_mesh(["n1"])
    made: list[EnvelopeRun] = []
    original = Writes._fresh_run

    def counted(self, stream, items):
        run = original(self, stream, items)
        made.extend([run] if run is not None else [])
        return run

    acked = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Writes, "_fresh_run", counted)
        for batch in range(6):
            items = [(f"b{batch}-{i}".encode(), bytes([batch]) * (i * 7)) for i in range(1, 40)]
            reply = harness.append("n1", "durable", items, "master")
            assert reply.code == "", f"seed=31: {reply}"
            acked += reply.appended
    assert len(made) == 5, "seed=31: every append after the first takes the run path"
    stores["n1"].close()
    reopened = SegmentStore.open(str(tmp_path / "n1"), fast_config())
    try:
        held = {event.key: event for event in reopened.read("durable", VersionVector(), 10_000)}
        assert [(held[a.key].dot, held[a.key].digest) for a in acked] == [(a.dot, a.digest) for a in acked]
        assert not reopened.corrupt_records() and not reopened.scrub(10_000), "seed=31: a record fails its digest"
    finally:
        reopened.close()
