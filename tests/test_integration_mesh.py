"""Real peer processes on 127.0.0.1: discovery, the shotgun (SIGKILL the master under an
ack=all writer) and bad input. Each waits for conditions with deadlines, never sleeps."""

from __future__ import annotations

import os
import random

import pytest
import trio

from meshstream.client import open_client
from meshstream.demo import read_all, all_see, live_members, master_of, topology_view, wait_until
from meshstream.ordering import canonical_order
from meshstream.wire.mac import derive_cluster_key

STREAM = "orders"


def _start_mesh(mesh, count, extra_args=()):
    seed = mesh.start("n1", extra_args=extra_args)
    for index in range(2, count + 1):
        mesh.start(f"n{index}", join=[seed.address], extra_args=extra_args)
    return [f"n{i}" for i in range(1, count + 1)]


async def _agree(mesh, names, timeout_s):
    peers = [mesh.peers[n] for n in names]
    try:
        await wait_until(lambda: all_see(peers, lambda v: live_members(v) == sorted(names)), timeout_s,
                         f"{len(names)} peers to agree on membership")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{mesh.logs()}") from None


@pytest.mark.parametrize("count", [3, 5])
async def test_peers_find_each_other_from_one_seed(mesh, count):
    names = _start_mesh(mesh, count)
    await _agree(mesh, names, 20)
    views = [await topology_view(mesh.peers[n].address) for n in names]
    assert all(v["members"].keys() == views[0]["members"].keys() for v in views)
    # With 5 peers and 3 replicas per shard, two peers hold no copy of the stream: a read
    # there is redirected to a replica, so every peer serves the acknowledged event.
    async with open_client([mesh.peers["n1"].address]) as client:
        written = await client.append(STREAM, b"one", ack="all")
    for name in names:
        events = await read_all(mesh.peers[name].address, STREAM)
        assert [e.digest for e in events] == [written.digest], f"read via {name}: {events}"


async def _all_events(address):
    return await read_all(address, STREAM)


async def test_shotgun_kill_master_under_ack_all_writer(mesh):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    names = _start_mesh(mesh, 3, extra_args=["--replication-factor", "3"])
    await _agree(mesh, names, 20)
    acked: list[bytes] = []
    async with open_client(mesh.addresses(), retry_timeout_s=15) as client:
        await client.append(STREAM, b"first", ack="all")  # makes sure the stream's shard has a master
        master = await wait_until(lambda: _master(mesh.peers["n1"].address), 10, "a master")
        killed = trio.Event()

        async def writer():
            index = 0
            while not (killed.is_set() and index > 60):
                key = b"k%06d" % index
                await client.append(STREAM, b"event %d" % index, key=key, ack="all")
                acked.append(key)
                index += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            await wait_until(lambda: _trio_true(len(acked) >= 20 + rng.randrange(20)), 20, "early acks")
            mesh.peers[master].kill()
            killed.set()
    survivors = [n for n in names if n != master]
    new_master = await wait_until(lambda: _master(mesh.peers[survivors[0]].address, not_peer=master), 10,
                                  f"a new master (seed {seed})")
    assert new_master in survivors
    mesh.start(master, join=[mesh.peers[survivors[0]].address])
    await wait_until(lambda: _is_replica(mesh.peers[master].address, master), 20,
                     f"{master} to return as a replica (seed {seed})")

    async def converged():
        orders = []
        for name in names:
            events = await _all_events(mesh.peers[name].address)
            keys = [e.key for e in events]
            if len(keys) != len(set(keys)) or not set(acked) <= set(keys):
                return False
            orders.append([(e.dot, e.key) for e in events])
        return all(order == orders[0] for order in orders)

    try:
        await wait_until(converged, 20, f"every acked event on every peer in one order (seed {seed})")
    except TimeoutError as exc:
        details = {n: len(await _all_events(mesh.peers[n].address)) for n in names}
        raise AssertionError(f"{exc}; acked {len(acked)}; held {details}\n{mesh.logs()}") from None
    events = await _all_events(mesh.peers[names[0]].address)
    assert [e.key for e in events] == [e.key for e in canonical_order(events)]


async def _trio_true(value):
    return value


async def _master(address, not_peer=None):
    found = master_of(await topology_view(address), STREAM)
    return None if found == not_peer else found


async def _is_replica(address, name):
    view = await topology_view(address)
    return name in live_members(view) and master_of(view, STREAM) not in (None, name)


async def _raw(address, payload, close=True):
    host, port = address.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    if payload:
        await stream.send_all(payload)
    if close:
        await stream.aclose()
    return stream


async def test_bad_input_is_refused_while_the_peer_serves(mesh, tmp_path):
    key_file = tmp_path / "cluster.key"
    key_file.write_bytes(b"integration cluster secret 1234567890\n")
    key = derive_cluster_key(key_file.read_bytes())
    peer = mesh.start("n1", extra_args=["--cluster-key-file", str(key_file)])
    await wait_until(lambda: topology_view(peer.address, cluster_key=key), 15, "the peer to start")
    stalled = await _raw(peer.address, b"", close=False)
    await _raw(peer.address, os.urandom(200))
    await _raw(peer.address, b"\x7f\xff\xff\xff" + b"\x00" * 64)
    await _raw(peer.address, b"\x00\x00\x10\x00" + b"\x01" * 100)
    wrong = derive_cluster_key(b"not the cluster secret at all....")
    async with open_client([peer.address], cluster_key=wrong, retry_timeout_s=0.3) as client:
        with pytest.raises(Exception):
            await client.append(STREAM, b"forged", key=b"forged")
    async with open_client([peer.address], cluster_key=key) as client:
        for index in range(10):
            await client.append(STREAM, b"ok %d" % index, ack="master")
        events = (await client.read(STREAM)).events
        assert len(events) == 10 and b"forged" not in {e.key for e in events}
    await stalled.aclose()
    log = open(peer.log_path, encoding="utf-8", errors="replace").read()
    assert log.count("refused connection") >= 4, log[-3000:]
    assert peer.running
