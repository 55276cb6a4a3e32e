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
import re
import signal
import statistics
import subprocess
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


async def catchup(root, events, profile_dir=None):
    """Catch-up of `events` events; returns a dict of figures. With `profile_dir`, py-spy
    records every peer during the catch-up (raw collapsed stacks, one file per peer)."""
    peers = start_mesh(root, 3, ["--replication-factor", "3"])
    profilers = []
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
        # Replication to the other peer finishes first (ack=master writes run ahead of it).
        await wait_until(lambda: _holds(peers[1].address, written), 600, "the second peer to hold every event")
        lacking = await wait_until(lambda: _stream_bytes(peers[0].address, "catchup", written), 120, "a read")
        away.join = [peers[0].address]
        before = [process_cpu_s(p.process.pid) for p in peers[:2]]
        start = time.perf_counter()
        away.start()
        if profile_dir:
            profilers = [_profile(p, profile_dir) for p in peers]
        samples = []  # (wall, the returning peer's CPU, events it holds): the steady part's figures

        async def caught_up():
            held = await _held(away.address)
            samples.append((time.perf_counter(), process_cpu_s(away.process.pid), held))
            return held >= written

        await wait_until(caught_up, 1800, "the returning peer to catch up")
        elapsed = time.perf_counter() - start
        spent = [process_cpu_s(p.process.pid) for p in peers]
        spent[:2] = [b - a if a is not None and b is not None else None for a, b in zip(before, spent[:2])]
        received = _socket_bytes_read(away.process.pid)
        first_held = next((wall - start for wall, _, held in samples if held > 1), None)
        return {"rate": written / elapsed, "written": written, "elapsed": elapsed, "cpu": spent,
                "names": [p.name for p in peers], "lacking": lacking, "received": received,
                "steady": _steady(samples, written), "first_held": first_held}
    finally:
        for profiler in profilers:
            profiler.send_signal(signal.SIGINT)
        for profiler in profilers:
            profiler.wait()
        for peer in peers:
            peer.kill()


def _profile(peer, directory):
    os.makedirs(directory, exist_ok=True)
    py_spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    out = os.path.join(directory, f"{peer.name}.txt")
    return subprocess.Popen([py_spy, "record", "--nonblocking", "--rate", "200", "--format", "raw",
                             "--output", out, "--pid", str(peer.process.pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _socket_bytes_read(pid):
    """Bytes received on the TCP connections `pid` has open (`ss -tinp`, Linux), or None."""
    try:
        lines = subprocess.run(["ss", "-tinpH"], capture_output=True, text=True, timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    total, mine = 0, False
    for line in lines:
        if not line.startswith((" ", "\t")):
            mine = f"pid={pid}," in line
        elif mine:
            found = re.search(r"bytes_received:(\d+)", line)
            total += int(found.group(1)) if found else 0
    return total


async def _stream_bytes(address, stream, written):
    """Envelope bytes of `stream` (what a returning peer lacks), estimated from the mean
    envelope size of its first 1,000 events (reading all of them timed out under load)."""
    async with open_client([address], retry_timeout_s=30) as client:
        reply = await client.read(stream, limit=1000)
    sizes = [len(event.envelope) for event in reply.events]
    return int(sum(sizes) / len(sizes) * written) if sizes else 0


async def _holds(address, expected):
    return await _held(address) >= expected


async def _held(address):
    async with open_client([address], retry_timeout_s=1) as client:
        status = await client.status()
    counts = [s.get("events", 0) for s in status.get("streams", []) if s.get("stream") == "catchup"]
    return counts[0] if counts else 0


def _steady(samples, written):
    """(events/s, the returning peer's CPU us an event) from the first sample holding 10%
    of the events to the last: the catch-up without the peer's start-up and first round."""
    begun = [s for s in samples if s[2] >= written // 10 and s[1] is not None]
    if len(begun) < 2 or begun[-1][2] <= begun[0][2]:
        return None
    (wall0, cpu0, held0), (wall1, cpu1, held1) = begun[0], begun[-1]
    return (held1 - held0) / (wall1 - wall0), (cpu1 - cpu0) / (held1 - held0) * 1e6


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
        if args.catchup_events and args.catchup_runs > 0:
            rates = []
            for run in range(args.catchup_runs):
                figures = await catchup(os.path.join(root, f"catchup{run}"), args.catchup_events, args.profile)
                rates.append(figures["rate"])
                _print_catchup(run, figures)
            rate = statistics.median(rates)
            label = f"catch-up of {figures['written']} events (median of {len(rates)})"
            print(f"{label:<60} {rate:>8.0f} ev/s   "
                  f"target >= 100,000 {'met' if rate >= 100_000 else 'MISSED'}   load {os.getloadavg()[0]:.2f}")


def _print_catchup(run, figures):
    written, elapsed = figures["written"], figures["elapsed"]
    cpu = ", ".join(f"{name} {s:.1f} s ({s / written * 1e6:.1f} us/event)"
                    for name, s in zip(figures["names"], figures["cpu"]) if s is not None)
    received = figures["received"]
    ratio = f"{received / figures['lacking']:.2f}x" if received and figures["lacking"] else "?"
    print(f"catch-up run {run + 1}: {written} events in {elapsed:.2f} s wall = {figures['rate']:.0f} ev/s; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"    CPU: {cpu} (returning peer: {figures['names'][2]}, start-up included)", flush=True)
    if figures["first_held"] is not None:
        print(f"    start-up: the returning peer first held new events {figures['first_held']:.2f} s after its start "
              f"(status polled every ~0.05 s)", flush=True)
    if figures["steady"]:
        rate, cpu_us = figures["steady"]
        print(f"    from 10% held to the end: {rate:.0f} ev/s, returning peer {cpu_us:.1f} us CPU an event", flush=True)
    print(f"    bytes: lacked ~{figures['lacking']} envelope bytes; the returning peer read {received} "
          f"(TCP bytes received on its open connections) = {ratio}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--catchup-events", type=int, default=1_000_000)
    parser.add_argument("--catchup-runs", type=int, default=1, help="catch-up runs (median printed)")
    parser.add_argument("--profile", metavar="DIR", help="py-spy each peer during catch-up into DIR")
    trio.run(main_async, parser.parse_args())


if __name__ == "__main__":
    main()
