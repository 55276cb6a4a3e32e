"""A real peer stopped with SIGTERM hands its shards over before it exits.

Three peers (replication factor 3) take ack=all writes; the master of the stream is sent
SIGTERM. It must exit cleanly, be recorded as `left` (never `failed`: the others did not
have to detect it), leave no shard mastered by itself, and every acknowledged event must be
readable on the survivors, which go on taking ack=all writes.
"""

from __future__ import annotations

import trio

from meshstream.client import open_client
from meshstream.demo import all_see, live_members, master_of, read_all, topology_view, wait_until

STREAM = "orders"


async def test_sigterm_hands_mastership_over_before_exit(mesh):
    seed = mesh.start("n1", extra_args=["--replication-factor", "3"])
    for name in ("n2", "n3"):
        mesh.start(name, join=[seed.address], extra_args=["--replication-factor", "3"])
    peers = [mesh.peers[n] for n in ("n1", "n2", "n3")]
    await wait_until(lambda: all_see(peers, lambda v: live_members(v) == ["n1", "n2", "n3"]), 30, "a mesh of 3")
    async with open_client(mesh.addresses(), retry_timeout_s=15) as client:
        for index in range(20):
            await client.append(STREAM, f"before {index}".encode(), ack="all")
        leaver = master_of(await topology_view(seed.address), STREAM)
        assert leaver in ("n1", "n2", "n3")
        await trio.to_thread.run_sync(mesh.peers[leaver].stop)
        assert mesh.peers[leaver].process.returncode == 0, mesh.logs()

        survivors = [p for n, p in sorted(mesh.peers.items()) if n != leaver]
        view = await topology_view(survivors[0].address)
        assert view["members"][leaver]["status"] == "left", f"{view['members']}\n{mesh.logs()}"
        assert leaver not in {m["peer"] for m in view["masters"].values()}, mesh.logs()
        for index in range(10):
            await client.append(STREAM, f"after {index}".encode(), ack="all")
    for peer in survivors:
        events = await wait_until(lambda: _holding(peer.address, 30), 20, f"30 events on {peer.name}")
        assert sorted(e.data for e in events) == sorted(
            [f"before {i}".encode() for i in range(20)] + [f"after {i}".encode() for i in range(10)]
        )


async def _holding(address: str, count: int):
    events = await read_all(address, STREAM)
    return events if len(events) >= count else None
