"""The client's routing of appends to masters, against real runtime Peers on loopback with
stand-in nodes: each node takes appends itself, records them, and names as the stream's
master whatever the test says (the driver turns that into the replies' route hints).
Fast checks of what the process test (test_client_routing) cannot steer: a moved master,
a stopped one, a pool of one connection, an address that answers with another name.
"""

from __future__ import annotations

import trio

from meshstream import client as client_module
from meshstream.client import open_client
from meshstream.clocks import Dot
from meshstream.config import Config
from meshstream.protocol.effects import Reply
from meshstream.runtime.peer import Peer, PeerOptions
from meshstream.wire.messages import Appended, AppendReply, AppendRequest, StatusReply

CONFIG = Config.preset("local", handshake_timeout_s=0.3)


class Mesh:
    """What the stand-in nodes agree on: stream -> (master, epoch), peer -> address."""

    def __init__(self):
        self.masters: dict[str, tuple[str, int]] = {}
        self.addresses: dict[str, str] = {}
        self.took: list[tuple[str, str]] = []  # (peer, stream) per append taken


class Store:
    def prepare_batch(self, events, *, on_conflict="raise"):
        return list(events)

    def write_prepared(self, prepared):
        pass

    def commit_prepared(self, prepared):
        return []

    def close(self):
        pass


class RoutingNode:
    def __init__(self, mesh, name):
        self.mesh, self.name, self.counter = mesh, name, 0
        self.topology = self

    def client_request(self, client, message, now):
        if not isinstance(message, AppendRequest):
            return [Reply(client, StatusReply(message.request_id, "{}"))]
        self.mesh.took.append((self.name, message.stream))
        appended = []
        for item in message.items:
            self.counter += 1
            appended.append(Appended(item.key, Dot(self.name, self.counter), b"\0" * 32, False))
        return [Reply(client, AppendReply(message.request_id, tuple(appended), "", "", True))]

    def master_of(self, stream):
        return self.mesh.masters.get(stream, (None, 0))[0]

    def shard_of(self, stream):
        return stream  # one shard a stream, for this stand-in

    def master(self, shard):
        return self.mesh.masters.get(shard)

    def address_of(self, peer):
        return self.mesh.addresses.get(peer)

    def start(self, now):
        return []

    def receive(self, src, message, now):
        return []

    def persisted(self, token, now):
        return []

    def tick(self, now):
        return []

    def next_deadline(self):
        return None

    def leave(self, now):
        return []

    @property
    def departed(self):
        return True


async def _mesh(nursery, tmp_path, names=("n1", "n2", "n3")):
    mesh, peers = Mesh(), {}
    for name in names:
        peer = Peer(PeerOptions(name=name, listen="127.0.0.1:0", data_dir=str(tmp_path / name), config=CONFIG),
                    store_factory=lambda d, c: Store(), node_factory=lambda n, *rest: RoutingNode(mesh, n))
        mesh.addresses[name] = await nursery.start(peer.run)
        peers[name] = peer
    return mesh, peers


async def _until_routed(client, stream, address):
    with trio.fail_after(5):
        while client.route_address(stream) != address:
            await client.append(stream, b"warm")  # each reply may name the master; dialling is in the background
            await trio.sleep(0.01)


async def _took(mesh, client, stream, count=5):
    start = len(mesh.took)
    for i in range(count):
        await client.append(stream, b"%d" % i)
    return {peer for peer, _ in mesh.took[start:]}


async def test_appends_follow_the_master_as_it_moves_and_fall_back_when_it_stops(tmp_path):
    async with trio.open_nursery() as nursery:
        mesh, peers = await _mesh(nursery, tmp_path)
        mesh.masters["s"] = ("n2", 1)
        async with open_client([mesh.addresses["n1"]], retry_timeout_s=5) as client:
            assert await _took(mesh, client, "s", 1) == {"n1"}  # no hint yet: the main connection
            await _until_routed(client, "s", mesh.addresses["n2"])
            assert await _took(mesh, client, "s") == {"n2"}
            assert client.peer_address == mesh.addresses["n1"]

            mesh.masters["s"] = ("n3", 2)  # n2's next reply names n3
            await _until_routed(client, "s", mesh.addresses["n3"])
            assert await _took(mesh, client, "s") == {"n3"}

            mesh.masters["s"] = ("n1", 1)  # an older epoch, from the very peer we send to: taken
            await client.append("s", b"moved back")
            assert client.route_address("s") == mesh.addresses["n1"]
            assert await _took(mesh, client, "s") == {"n1"}

            mesh.masters["s"] = ("n3", 3)
            await _until_routed(client, "s", mesh.addresses["n3"])
            peers["n3"].stop()  # its listener closes: the route is lost and not re-dialled at once
            with trio.fail_after(5):
                while client.route_address("s") == mesh.addresses["n3"]:
                    await trio.sleep(0.01)
            assert await _took(mesh, client, "s") == {"n1"}
        nursery.cancel_scope.cancel()


async def test_the_pool_is_bounded_and_a_peer_answering_with_another_name_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setattr(client_module, "ROUTES_MAX", 1)
    async with trio.open_nursery() as nursery:
        mesh, peers = await _mesh(nursery, tmp_path)
        mesh.masters.update(a=("n2", 1), b=("n3", 1))
        async with open_client([mesh.addresses["n1"]], retry_timeout_s=5) as client:
            await _until_routed(client, "a", mesh.addresses["n2"])
            await _until_routed(client, "b", mesh.addresses["n3"])
            assert len(client._routes) == 1  # n2's idle connection made room for n3's

            mesh.masters["c"] = ("n9", 5)
            mesh.addresses["n9"] = mesh.addresses["n2"]  # an address that answers as n2
            with trio.fail_after(5):
                while mesh.addresses["n2"] not in client._undialable:  # dialled once, refused
                    await client.append("c", b"learn")
                    await trio.sleep(0.01)
            assert await _took(mesh, client, "c") == {"n1"}
            assert client.route_address("c") == mesh.addresses["n1"]
        nursery.cancel_scope.cancel()
