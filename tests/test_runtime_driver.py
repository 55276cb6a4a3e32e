"""The driver on its own under trio's MockClock: ticks at deadlines and after inputs (coalesced),
group commit on its thread (a failed fsync ends the driver), effects."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from meshstream.clocks import Dot, VersionVector
from meshstream.config import Config
from meshstream.envelope import Event
from meshstream.protocol.effects import Deliver, Persist, Reply, Send, SendTo
from meshstream.runtime.driver import TICK_AFTER_INPUT_S, Driver
from meshstream.wire.messages import (
    AppendItem,
    AppendReply,
    AppendRequest,
    ReadReply,
    ReadRequest,
    StatusRequest,
    parse_route_hint,
    route_hint,
)

CONFIG = Config.preset("local")


def _event(counter):
    return Event.sequence("s", b"k%d" % counter, b"d", {}, Dot("n1", counter), VersionVector())


class Links:
    def __init__(self):
        self.sent = []

    def send(self, address, message):
        self.sent.append((address, message))
        return True

    async def drain(self, timeout_s):
        pass


class Store:
    def __init__(self):
        self.writes = []

    def prepare_batch(self, events, *, on_conflict):
        return list(events)

    def write_prepared(self, prepared):
        self.writes.append(prepared)

    def commit_prepared(self, prepared):
        return []


class Connection:
    def __init__(self):
        self.replies = []

    def send_nowait(self, message):
        self.replies.append((trio.current_time(), message))
        return True


class Node:
    def __init__(self):
        self.ticks = []
        self.persisted_tokens = []
        self.deadline = 10.0
        self.events = []
        self.five_persisted = trio.Event()

    def start(self, now):
        return [Send("n2", "hello"), SendTo("10.0.0.9:7000", "seed")]

    def next_deadline(self):
        return self.deadline

    def tick(self, now):
        self.ticks.append(now)
        if now >= self.deadline:
            self.deadline = now + 10.0
        return []

    def address_of(self, peer):
        return {"n2": "127.0.0.1:7002"}.get(peer)

    def master_of(self, stream):
        return None  # no shards here: replies carry no route hint

    def persisted(self, token, now):
        self.persisted_tokens.append(token)
        if len(self.persisted_tokens) == 5:
            self.five_persisted.set()
        return []

    def client_request(self, client, message, now):
        if isinstance(message, ReadRequest):
            new = tuple(e for e in self.events if e.dot not in message.cursor)
            return [Reply(client, ReadReply(message.request_id, new, message.cursor, "", ""))]
        return [Persist(message.request_id, (_event(message.request_id),))]

    def receive(self, src, message, now):
        return []

    def leave(self, now):
        return []


async def _driver(nursery):
    node, store, links = Node(), Store(), Links()
    driver = Driver(node, store, CONFIG, links)
    await nursery.start(driver.run)
    return driver, node, store, links


async def test_sends_resolve_addresses_and_ticks_follow_deadlines(autojump_clock):
    async with trio.open_nursery() as nursery:
        driver, node, store, links = await _driver(nursery)
        assert links.sent == [("127.0.0.1:7002", "hello"), ("10.0.0.9:7000", "seed")]
        await trio.sleep(35)
        deadline_ticks = [t for t in node.ticks if t >= 10.0]
        assert [round(t) for t in deadline_ticks] == [10, 20, 30]
        nursery.cancel_scope.cancel()


async def test_group_commit_batches_pending_persists(autojump_clock):
    async with trio.open_nursery() as nursery:
        driver, node, store, links = await _driver(nursery)
        for token in range(1, 6):
            driver.execute([Persist(token, (_event(token),))])
        driver.inputs_done()  # one run of inputs: one batch
        await node.five_persisted.wait()  # the fsync runs in the commit thread (no fail_after: the clock jumps)
        assert node.persisted_tokens == [1, 2, 3, 4, 5]
        assert store.writes == [[_event(token) for token in range(1, 6)]]
        nursery.cancel_scope.cancel()


async def test_long_poll_waits_for_deliver_or_times_out(autojump_clock):
    async with trio.open_nursery() as nursery:
        driver, node, store, links = await _driver(nursery)
        connection = Connection()
        client = driver.register_client(connection)
        start = trio.current_time()
        driver.client_request(client, ReadRequest(1, "s", VersionVector(), 10, 3.0))
        await trio.sleep(1.0)
        assert connection.replies == []
        node.events.append(_event(1))
        driver.execute([Deliver("s", (node.events[0],))])
        await trio.testing.wait_all_tasks_blocked()
        (when, reply), = connection.replies
        assert reply.events == (node.events[0],) and when - start < 1.5
        driver.client_request(client, ReadRequest(2, "s", VersionVector({"n1": 1}), 10, 3.0))
        await trio.sleep(5.0)
        (when, reply) = connection.replies[1]
        assert reply.events == () and 2.9 <= when - start - 1.0 <= 3.1
        nursery.cancel_scope.cancel()


async def test_replies_to_departed_clients_are_dropped(autojump_clock):
    async with trio.open_nursery() as nursery:
        driver, node, store, links = await _driver(nursery)
        connection = Connection()
        client = driver.register_client(connection)
        driver.unregister_client(client)
        driver.execute([Reply(client, StatusRequest(1))])
        assert connection.replies == []
        nursery.cancel_scope.cancel()


class _Topology:
    def master(self, shard):
        return ("n2", 7) if shard == 3 else None


async def test_successful_append_replies_name_the_streams_master(autojump_clock):
    async with trio.open_nursery() as nursery:
        driver, node, store, links = await _driver(nursery)
        node.master_of = lambda stream: "n2" if stream == "s" else None
        node.shard_of = lambda stream: 3
        node.topology = _Topology()
        connection = Connection()
        client = driver.register_client(connection)
        for request_id, stream in [(1, "s"), (2, "s"), (3, "other")]:
            driver.client_request(client, AppendRequest(request_id, stream, (AppendItem(b"k", b"d", {}),), "all"))
        driver.execute([Reply(client, AppendReply(1, (), "", "", True)),
                        Reply(client, AppendReply(2, (), "timeout", "not acknowledged in time", False)),
                        Reply(client, AppendReply(3, (), "", "", True))])
        ok, failed, unmastered = [reply for _, reply in connection.replies]
        assert parse_route_hint(ok.detail) == ("n2", "127.0.0.1:7002", 7)
        assert failed.detail == "not acknowledged in time"  # an error keeps its explanation
        assert unmastered.detail == ""  # no live master known: no hint
        assert driver._append_streams == {}
        nursery.cancel_scope.cancel()


def test_route_hints_parse_only_when_well_formed():
    assert parse_route_hint(route_hint("n2", "[::1]:7002", 3)) == ("n2", "[::1]:7002", 3)
    assert route_hint("n2", "", 3) == "" and route_hint("n2", "a b:1", 3) == ""
    for detail in ["", "route n2 127.0.0.1:7002", "route n2 127.0.0.1:7002 -1", "route n 2 x:1 3",
                   "route n2 nohost 3", "route bad/name 127.0.0.1:1 3", "hint n2 127.0.0.1:1 3",
                   "route n2 127.0.0.1:1 " + "9" * 30]:
        assert parse_route_hint(detail) is None, detail


async def test_inputs_are_followed_by_one_coalesced_tick(autojump_clock):
    async with trio.open_nursery() as nursery:
        driver, node, store, links = await _driver(nursery)
        await trio.sleep(1.0)
        assert node.ticks == []  # no deadline before 10 s, no input yet
        start = trio.current_time()
        for _ in range(3):
            driver.peer_message("n2", "gossip")
        driver.inputs_done()
        await trio.sleep(0.5)
        assert len(node.ticks) == 1, node.ticks
        assert 0 < node.ticks[0] - start <= TICK_AFTER_INPUT_S + 1e-9
        await trio.sleep(20)
        assert [round(t) for t in node.ticks[1:]] == [10, 20]  # deadlines as before
        nursery.cancel_scope.cancel()


async def test_an_earlier_deadline_from_an_input_is_kept(autojump_clock):
    async with trio.open_nursery() as nursery:
        driver, node, store, links = await _driver(nursery)
        await trio.sleep(1.0)
        node.deadline = 4.0  # as if the input armed a timer
        driver.peer_message("n2", "arm")
        driver.inputs_done()
        await trio.sleep(5.0)
        assert any(abs(t - 4.0) < 1e-6 for t in node.ticks), node.ticks
        nursery.cancel_scope.cancel()


class FailingStore(Store):
    def write_prepared(self, prepared):
        raise OSError(28, "No space left on device")


async def test_a_failed_fsync_ends_the_driver():
    node, links = Node(), Links()
    driver = Driver(node, FailingStore(), CONFIG, links)
    with pytest.raises(BaseException) as caught:
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            driver.execute([Persist(1, (_event(1),))])
            driver.inputs_done()
            with trio.fail_after(5):
                await trio.sleep_forever()
    errors = caught.value.exceptions if isinstance(caught.value, BaseExceptionGroup) else [caught.value]
    assert any(isinstance(e, OSError) and e.errno == 28 for e in _leaves(errors)), caught.value
    assert node.persisted_tokens == []  # never acknowledged


def _leaves(errors):
    for error in errors:
        if isinstance(error, BaseExceptionGroup):
            yield from _leaves(error.exceptions)
        else:
            yield error


class _CountingFlusher:
    def __init__(self):
        self.flushes = 0

    def flush(self):
        self.flushes += 1


async def test_effects_sent_early_leave_before_the_input_is_done(autojump_clock):
    """`Node.send_early` (a catch-up's next pull, before its batch is checked): the driver
    carries the effects out and flushes while the node is still handling the input."""
    node, store, links, flusher = Node(), Store(), Links(), _CountingFlusher()
    seen_during_input = []

    def receive(src, message, now):
        node.early_sink([Send("n2", "next pull")])
        seen_during_input.append((list(links.sent), flusher.flushes))
        return [Send("n2", "after the batch")]

    node.receive = receive
    async with trio.open_nursery() as nursery:
        driver = Driver(node, store, CONFIG, links, flusher)
        await nursery.start(driver.run)
        links.sent.clear()
        flushes = flusher.flushes
        driver.peer_message("n2", "a batch")
        assert seen_during_input == [([("127.0.0.1:7002", "next pull")], flushes + 1)]
        assert links.sent == [("127.0.0.1:7002", "next pull"), ("127.0.0.1:7002", "after the batch")]
        nursery.cancel_scope.cancel()
