"""The client sends a stream's appends straight to its master (real peer processes).

Three `meshstream run` processes with `MESHSTREAM_TRACE` set, so each peer notes every
client request it takes (`in AppendRequest`) and every append forwarded to it (`in
ForwardAppend`). The client is given one address, a peer that is not the stream's master:
after its first reply it must send the stream's appends to the master itself (the master
takes them as client requests, nobody forwards), again after the master is SIGKILLed and
another takes over, and a wrong or undialable hint must only cost the forward.
"""

from __future__ import annotations

import collections
import os

import pytest
import trio

from meshstream.client import open_client
from meshstream.demo import all_see, free_port, live_members, master_of, start_mesh, topology_view, wait_until
from meshstream.wire.messages import route_hint

STREAM = "routed"


def _counts(trace_dir, peers):
    """peer name -> Counter of the steps it noted ("in AppendRequest", "in ForwardAppend")."""
    counts = {}
    for peer in peers:
        counter = collections.Counter()
        path = os.path.join(trace_dir, f"{peer.process.pid}.trace")
        if os.path.exists(path):
            with open(path) as file:
                for row in file:
                    step = " ".join(row.split()[3:5])  # "in ForwardAppend n2": the sender follows
                    if step in ("in AppendRequest", "in ForwardAppend"):
                        counter[step] += 1
        counts[peer.name] = counter
    return counts


def _delta(before, after):
    return {name: {k: after[name][k] - before.get(name, {}).get(k, 0) for k in after[name]} for name in after}


async def _master(peers):
    """The stream's master once every live peer names the same one."""
    async def agreed():
        masters = {master_of(await topology_view(p.address), STREAM) for p in peers}
        return masters.pop() if len(masters) == 1 and None not in masters else None

    return await wait_until(agreed, 30, "the peers to agree on the stream's master")


async def _appends_go_direct(client, peers, trace_dir, master, count=20):
    """`count` appends after the route is open: each is a client request on the master,
    none on another peer, and nothing is forwarded."""
    by_name = {p.name: p for p in peers}

    async def routed():
        await client.append(STREAM, b"warm", ack="all")
        return client.route_address(STREAM) == by_name[master].address

    await wait_until(routed, 20, f"the client to route {STREAM!r} to {master}")
    before = _counts(trace_dir, peers)
    keys = [(await client.append(STREAM, b"e%d" % i, ack="all")).key for i in range(count)]
    delta = await wait_until(lambda: _settled_delta(trace_dir, peers, before, master, count), 10, "the trace lines")
    assert delta[master].get("in ForwardAppend", 0) == 0, delta
    for name, steps in delta.items():
        if name != master:
            assert steps.get("in AppendRequest", 0) == 0, delta
    return keys


async def _settled_delta(trace_dir, peers, before, master, count):
    await trio.sleep(0)
    delta = _delta(before, _counts(trace_dir, peers))
    return delta if delta[master].get("in AppendRequest", 0) >= count else None


async def test_appends_reach_the_master_directly_before_and_after_it_moves(tmp_path, monkeypatch):
    trace_dir = tmp_path / "traces"
    trace_dir.mkdir()
    monkeypatch.setenv("MESHSTREAM_TRACE", str(trace_dir))
    peers = start_mesh(str(tmp_path / "mesh"), 3, ["--replication-factor", "3"])
    try:
        names = sorted(p.name for p in peers)
        await wait_until(lambda: all_see(peers, lambda v: live_members(v) == names), 30, "the mesh to form")
        master = await _master(peers)
        entry = next(p for p in peers if p.name != master)  # the only address the client gets
        acked = []
        async with open_client([entry.address], retry_timeout_s=30, route_appends=False) as client:
            before = _counts(str(trace_dir), peers)
            for i in range(5):
                acked.append((await client.append(STREAM, b"forwarded %d" % i, ack="all")).key)
            assert client.route_address(STREAM) == entry.address

            async def forwarded():
                delta = _delta(before, _counts(str(trace_dir), peers))
                return delta if delta[master].get("in ForwardAppend", 0) >= 5 else None

            delta = await wait_until(forwarded, 10, "the forwards in the master's trace")
            assert delta[entry.name].get("in AppendRequest", 0) == 5, delta
        seen = []  # a subscriber on the master, which fails over to the entry peer when it dies
        async with trio.open_nursery() as nursery, open_client([entry.address], retry_timeout_s=30) as client:
            nursery.start_soon(_follow, [p.address for p in peers if p.name == master] + [entry.address], seen)
            acked += await _appends_go_direct(client, peers, str(trace_dir), master)
            assert client.peer_address == entry.address  # reads and the rest stay where they were

            # The master dies: the routed connection is lost, appends fall back to the entry
            # peer, whose replies name the new master, which the client then dials.
            next(p for p in peers if p.name == master).kill()
            alive = [p for p in peers if p.running]
            new_master = await wait_until(lambda: _new_master(alive, master), 30, "a new master")
            acked += await _appends_go_direct(client, alive, str(trace_dir), new_master)

            # A wrong hint (a live peer that is not the master) and an undialable one: the
            # appends still land once, forwarded, and the replies correct the hint.
            wrong = next(p for p in alive if p.name != new_master)
            for peer_name, address in [(wrong.name, wrong.address), ("gone", f"127.0.0.1:{free_port()}")]:
                client._hints[STREAM] = (peer_name, address, 10**9, route_hint(peer_name, address, 10**9))
                acked.append((await client.append(STREAM, b"after a stale hint", ack="all")).key)
                acked += await _appends_go_direct(client, alive, str(trace_dir), new_master, count=5)

            async def followed():
                await trio.sleep(0)
                return set(acked) <= set(seen)

            await wait_until(followed, 20, "the subscriber to see every acknowledged append")
            assert len(seen) == len(set(seen)), "the subscriber saw an event twice"

            events, cursor = [], None
            async with open_client([alive[0].address]) as reader:
                while True:
                    result = await (reader.read(STREAM, cursor) if cursor is not None else reader.read(STREAM))
                    if not result.events:
                        break
                    events += result.events
                    cursor = result.cursor
            nursery.cancel_scope.cancel()  # the subscriber
        keys = [event.key for event in events]
        assert len(keys) == len(set(keys)), "an event was written twice"
        assert set(acked) <= set(keys), "an acknowledged append is missing"
    finally:
        for peer in peers:
            peer.kill()


async def _follow(addresses, seen):
    async with open_client(addresses, retry_timeout_s=30) as follower:
        async for event in follower.subscribe(STREAM, wait_s=0.5):
            seen.append(event.key)


async def _new_master(alive, old):
    master = await _master(alive)
    return master if master != old else None
