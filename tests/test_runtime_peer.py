"""A real Peer (listener, driver, links) on loopback with a stand-in node and store.

The stand-in node sequences appends itself and answers reads, so these tests exercise the
runtime and the client library on their own: group commit, replies, long-poll reads, the
handshake and connection limits, and refusal of bad input while others are served.
"""

from __future__ import annotations

import json
import os
import socket

import pytest
import trio
import trio.testing

from meshstream.client import KeyConflict, open_client
from meshstream.clocks import Dot, VersionVector
from meshstream.config import Config
from meshstream.envelope import Event
from meshstream.protocol.effects import Deliver, Journal, Persist, Reply
from meshstream.runtime.peer import Peer, PeerOptions
from meshstream.runtime.transport import handshake, make_hello
from meshstream.wire.mac import derive_cluster_key
from meshstream.wire.messages import AppendReply, Appended, AppendRequest, ReadReply, ReadRequest, StatusReply

CONFIG = Config.preset("local", handshake_timeout_s=0.3)


class FakeStore:
    def __init__(self):
        self.written = []
        self.closed = False

    def prepare_batch(self, events, *, on_conflict="raise"):
        assert on_conflict == "resolve"
        return list(events)

    def write_prepared(self, prepared):
        self.written.extend(prepared)

    def commit_prepared(self, prepared):
        return []

    def close(self):
        self.closed = True


class FakeNode:
    """Sequences appends locally; answers reads from memory; counts ticks."""

    def __init__(self, name, address, config, store, seeds):
        self.name, self.address, self.seeds = name, address, seeds
        self.events: dict[str, list[Event]] = {}
        self.pending: dict[int, tuple[int, AppendRequest, list[Event]]] = {}
        self.token = 0
        self.ticks = 0
        self.left = False

    def start(self, now):
        return [Journal("joined", f"{self.name} started")]

    def receive(self, src, message, now):
        return []

    def client_request(self, client, message, now):
        if isinstance(message, AppendRequest):
            return self._append(client, message)
        if isinstance(message, ReadRequest):
            have = self.events.get(message.stream, [])
            new = [e for e in have if e.dot not in message.cursor][: message.limit]
            cursor = message.cursor
            for event in new:
                cursor = cursor.with_dot(event.dot)
            return [Reply(client, ReadReply(message.request_id, tuple(new), cursor, "", ""))]
        return [Reply(client, StatusReply(message.request_id, json.dumps({"peer": self.name})))]

    def _append(self, client, request):
        stream = self.events.setdefault(request.stream, [])
        for existing in stream:
            for item in request.items:
                if existing.key == item.key and existing.data != item.data:
                    return [Reply(client, AppendReply(request.request_id, (), "key_conflict", repr(item.key), True))]
        made = []
        for item in request.items:
            dot = Dot(self.name, len(stream) + len(made) + 1)
            made.append(Event.sequence(request.stream, item.key, item.data, item.metadata, dot, VersionVector()))
        self.token += 1
        self.pending[self.token] = (client, request, made)
        return [Persist(self.token, tuple(made))]

    def persisted(self, token, now):
        client, request, made = self.pending.pop(token)
        self.events[request.stream].extend(made)
        appended = tuple(Appended(e.key, e.dot, e.digest, False) for e in made)
        return [Reply(client, AppendReply(request.request_id, appended, "", "", True)),
                Deliver(request.stream, tuple(made))]

    def tick(self, now):
        self.ticks += 1
        return []

    def next_deadline(self):
        return None

    def leave(self, now):
        self.left = True
        return []

    @property
    def departed(self):
        return self.left  # nothing to hand off: departed the moment it leaves

    def address_of(self, peer):
        return None

    def master_of(self, stream):
        return None  # no shards here: replies carry no route hint


async def _start(nursery, tmp_path, **options):
    store = FakeStore()
    nodes = []

    def node_factory(*args):
        nodes.append(FakeNode(*args))
        return nodes[-1]

    peer = Peer(PeerOptions(name="n1", listen="127.0.0.1:0", data_dir=str(tmp_path), config=CONFIG, **options),
                store_factory=lambda d, c: store, node_factory=node_factory)
    address = await nursery.start(peer.run)
    return peer, address, nodes[0], store


async def test_append_read_status_through_the_runtime(tmp_path):
    async with trio.open_nursery() as nursery:
        peer, address, node, store = await _start(nursery, tmp_path)
        async with open_client([address]) as client:
            first = await client.append("orders", b"one", key=b"k1")
            batch = await client.append_batch("orders", [b"two", b"three"], ack="all")
            assert first.dot == Dot("n1", 1) and [a.dot.counter for a in batch] == [2, 3]
            result = await client.read("orders")
            assert [e.data for e in result.events] == [b"one", b"two", b"three"]
            assert (await client.status())["peer"] == "n1"
            with pytest.raises(KeyConflict):
                await client.append("orders", b"other", key=b"k1")
        assert len(store.written) == 3
        peer.stop()
    assert node.left and store.closed


async def test_long_poll_read_wakes_on_deliver(tmp_path):
    async with trio.open_nursery() as nursery:
        peer, address, node, _ = await _start(nursery, tmp_path)
        async with open_client([address]) as reader, open_client([address]) as writer:
            got = []

            async def follow():
                result = await reader.read("s", wait_s=5.0)
                got.extend(result.events)

            async with trio.open_nursery() as inner:
                inner.start_soon(follow)
                await trio.testing.wait_all_tasks_blocked()
                start = trio.current_time()
                await writer.append("s", b"wake")
            assert [e.data for e in got] == [b"wake"] and trio.current_time() - start < 2.0
        peer.stop()


async def _raw(address, payload, close=True):
    host, port = address.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(payload)
    if close:
        await stream.aclose()
    return stream


async def test_bad_input_is_refused_while_serving(tmp_path):
    async with trio.open_nursery() as nursery:
        peer, address, node, _ = await _start(nursery, tmp_path)
        await _raw(address, os.urandom(64))
        await _raw(address, b"\xff\xff\xff\xff" + b"x" * 10)
        await _raw(address, b"\x00\x00\x01\x00abc")
        stalled = await _raw(address, b"", close=False)
        async with open_client([address]) as client:
            for index in range(20):
                await client.append("s", b"%d" % index)
            assert len((await client.read("s")).events) == 20
        await stalled.aclose()
        peer.stop()


async def test_wrong_cluster_key_is_refused(tmp_path):
    key = derive_cluster_key(b"the right secret, long enough")
    async with trio.open_nursery() as nursery:
        peer, address, node, _ = await _start(nursery, tmp_path, cluster_key=key)
        async with open_client([address], cluster_key=derive_cluster_key(b"a wrong secret, long enough"),
                               retry_timeout_s=0.3) as client:
            with pytest.raises(Exception, match="no answer|failed"):
                await client.append("s", b"x")
        assert "s" not in node.events
        async with open_client([address], cluster_key=key) as client:
            await client.append("s", b"x")
        assert len(node.events["s"]) == 1
        peer.stop()


async def test_connections_max_refuses_extra(tmp_path):
    import dataclasses

    global CONFIG
    saved = CONFIG
    CONFIG = dataclasses.replace(saved, connections_max=2)
    try:
        async with trio.open_nursery() as nursery:
            peer, address, node, _ = await _start(nursery, tmp_path)
            held = [await _raw(address, b"", close=False) for _ in range(2)]
            async with open_client([address], retry_timeout_s=0.2) as client:
                with pytest.raises(Exception):
                    await client.status()
            for stream in held:
                await stream.aclose()
            async with open_client([address]) as client:
                assert (await client.status())["peer"] == "n1"
            peer.stop()
    finally:
        CONFIG = saved


def test_generated_keys_never_repeat_across_pool_draws_or_a_fork():
    from meshstream import client

    items = [client.make_item(b"d") for _ in range(3 * client.KEYS_PER_DRAW + 5)]
    keys = [item.key for item in items]
    assert len(set(keys)) == len(keys) and {len(k) for k in keys} == {client.KEY_BYTES_GENERATED}
    assert all(type(item) is client.AppendItem and item == client.AppendItem(item.key, b"d", {}) for item in items)
    client._forget_keys()  # what a forked child runs: it draws a fresh pool
    assert client.make_item(b"d").key not in set(keys)


async def test_a_peer_dialling_in_wakes_the_links_to_its_address(tmp_path, monkeypatch):
    from meshstream.runtime import links as links_module

    woken: list[str] = []
    monkeypatch.setattr(links_module.PeerLinks, "wake", lambda self, address: woken.append(address))
    async with trio.open_nursery() as nursery:
        peer, address, node, _ = await _start(nursery, tmp_path)
        host, port = address.rsplit(":", 1)
        stream = await trio.open_tcp_stream(host, int(port))
        await handshake(stream, make_hello("meshstream", "n2", "peer", "127.0.0.1:7001"), CONFIG, None)
        async with open_client([address]) as client:  # a client's Hello wakes nothing
            await client.status()
        with trio.fail_after(5):
            while not woken:
                await trio.sleep(0.01)
        assert woken == ["127.0.0.1:7001"]
        await stream.aclose()
        peer.stop()
