"""Failover and catch-up against real peer processes on loopback.

    python bench/failover_bench.py [--runs 5] [--catchup-events 1000000]

1. Kill the master under load: three peers (replication factor 3), a writer appending
   single events with ack=all; SIGKILL the stream's master and time until the first write
   acknowledged after the kill (target: median of the runs <= 2 s), then check that every
   acknowledged event is on both survivors (target: zero lost).
2. Catch-up: stop one peer, write N events to the other two with ack=master, restart it and
   time until it holds them all (target: >= 100,000 events/s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import trio

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from client_bench import process_cpu_s  # noqa: E402
from meshstream.client import make_item, open_client  # noqa: E402
from meshstream.demo import mesh_settled, read_all, all_see, live_members, master_of, start_mesh, topology_view, wait_until  # noqa: E402

DATA = b"x" * 200
STREAM = "failover"


async def mesh_ready(peers):
    names = sorted(p.name for p in peers)
    await wait_until(lambda: all_see(peers, lambda v: live_members(v) == names), 30, "the mesh to form")
    await mesh_settled(peers)  # measure the steady mesh, not its first rebalancing of masters


async def count_keys(address, stream):
    return {event.key for event in await read_all(address, stream, page_events=10_000)}


async def one_failover(root):
    peers = start_mesh(root, 3, ["--replication-factor", "3"])
    try:
        await mesh_ready(peers)
        acked = []
        async with open_client([p.address for p in peers], retry_timeout_s=30) as client:
            await client.append(STREAM, DATA, ack="all")
            view = await topology_view(peers[0].address)
            master = master_of(view, STREAM)
            killed_at = None
            first_after = None
            for index in range(400):
                if index == 200:
                    next(p for p in peers if p.name == master).kill()
                    killed_at = time.perf_counter()
                key = b"k%06d" % index
                await client.append(STREAM, DATA, key=key, ack="all")
                acked.append(key)
                if killed_at is not None and first_after is None:
                    first_after = time.perf_counter() - killed_at
        lost = 0
        for peer in peers:
            if peer.name != master:
                held = await count_keys(peer.address, STREAM)
                lost = max(lost, len(set(acked) - held))
        return first_after, lost
    finally:
        for peer in peers:
            peer.kill()


async def catchup(root, events):
    peers = start_mesh(root, 3, ["--replication-factor", "3"])
    try:
        await mesh_ready(peers)
        away = peers[2]
        others = [p.address for p in peers[:2]]
        async with open_client(others, retry_timeout_s=30) as client:
            await client.append("catchup", DATA, ack="all")
            away.kill()
            written = 1

            async def worker(count):
                nonlocal written
                for _ in range(count // 100):
                    await client.append_batch("catchup", [make_item(DATA) for _ in range(100)], ack="master")
                    written += 100

            async with trio.open_nursery() as nursery:
                for _ in range(8):
                    nursery.start_soon(worker, events // 8)
        away.join = [peers[0].address]
        before = [process_cpu_s(p.process.pid) for p in peers[:2]]
        start = time.perf_counter()
        away.start()
        await wait_until(lambda: _holds(away.address, written), 600, "the returning peer to catch up")
        elapsed = time.perf_counter() - start
        spent = [process_cpu_s(p.process.pid) for p in peers]
        spent[:2] = [b - a if a is not None and b is not None else None for a, b in zip(before, spent[:2])]
        cpu = ", ".join(f"{p.name} {s / written * 1e6:.1f}" for p, s in zip(peers, spent) if s is not None)
        print(f"    catch-up CPU us/event: {cpu} (the returning peer: {peers[2].name}, start-up included)", flush=True)
        return written / elapsed, written
    finally:
        for peer in peers:
            peer.kill()


async def _holds(address, expected):
    async with open_client([address], retry_timeout_s=1) as client:
        status = await client.status()
    counts = [s.get("events", 0) for s in status.get("streams", []) if s.get("stream") == "catchup"]
    return bool(counts) and counts[0] >= expected


async def main_async(args):
    with tempfile.TemporaryDirectory(prefix="meshstream-failover-") as root:
        times, losses = [], []
        for run in range(args.runs):
            first, lost = await one_failover(os.path.join(root, f"run{run}"))
            times.append(first)
            losses.append(lost)
            print(f"run {run + 1}: first write acknowledged {first:.3f} s after the kill; {lost} acked lost", flush=True)
        if times:
            median = statistics.median(times)
            print(f"{'kill the master under load: first ack after kill (median)':<60} {median:>8.3f} s      "
                  f"target <= 2 s   {'met' if median <= 2 else 'MISSED'}")
            print(f"{'acknowledged events lost (all runs)':<60} {sum(losses):>8d}        target 0        "
                  f"{'met' if sum(losses) == 0 else 'MISSED'}")
        if args.catchup_events:
            rate, written = await catchup(os.path.join(root, "catchup"), args.catchup_events)
            print(f"{f'catch-up of {written} events':<60} {rate:>8.0f} ev/s   target >= 100,000 "
                  f"{'met' if rate >= 100_000 else 'MISSED'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--catchup-events", type=int, default=1_000_000)
    trio.run(main_async, parser.parse_args())


if __name__ == "__main__":
    main()
