"""Membership on real peer processes on loopback (the `local` preset).

    python bench/membership_bench.py [--peers 16] [--idle-s 300]

1. Start N peers together (all joining n1) and time until every one sees all N alive
   (target: within 1 s).
2. SIGKILL one and time until every other peer declares it failed (target: within 3 s).
3. Idle for --idle-s seconds and count peers any view reports suspect or failed though
   alive (target: no false failure in a 5-minute idle run).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import trio

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from meshstream.client import open_client  # noqa: E402
from meshstream.demo import start_mesh, wait_until  # noqa: E402


def line(what, value, unit, target, ok):
    print(f"{what:<52} {value:>9.2f} {unit:<6} target {target:<22} {'met' if ok else 'MISSED'}", flush=True)


async def all_listening(peers):
    for peer in peers:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", peer.port)
        except OSError:
            return False
        await stream.aclose()
    return True


async def members(address):
    """peer -> status in the view of the peer at `address`. `status` names the members
    without shipping the whole `$topology` stream (hundreds of events at 16 peers, which
    made the bench's own decoding part of what it measured)."""
    async with open_client([address], retry_timeout_s=0.5) as client:
        status = await client.status()
    return {m["peer"]: m["status"] for m in status["members"]}


async def all_members(peers, predicate):
    for peer in peers:
        if not predicate(await members(peer.address)):
            return False
    return True


def live(view):
    return sorted(p for p, status in view.items() if status in ("alive", "suspect"))


async def false_failures(peers):
    bad = set()
    for peer in peers:
        bad.update(p for p, status in (await members(peer.address)).items() if status in ("failed", "suspect"))
    return bad


async def main_async(args):
    with tempfile.TemporaryDirectory(prefix="meshstream-members-") as root:
        start = time.perf_counter()
        peers = start_mesh(root, args.peers)
        try:
            names = sorted(p.name for p in peers)
            await wait_until(lambda: all_listening(peers), 60, "all peers to listen")
            listening = time.perf_counter()
            line(f"{args.peers} Python processes started and listening", listening - start, "s", "(not a target)",
                 True)
            await wait_until(lambda: all_members(peers, lambda v: live(v) == names), 60, "all peers to meet")
            met = time.perf_counter() - listening
            line(f"{args.peers} peers see each other (from all listening)", met, "s", "<= 1 s", met <= 1)
            victim = peers[-1]
            rest = peers[:-1]
            victim.kill()
            killed = time.perf_counter()
            await wait_until(lambda: all_members(rest, lambda v: v.get(victim.name) == "failed"),
                             60, "the killed peer to be declared failed by all")
            detected = time.perf_counter() - killed
            line("a killed peer declared failed by all", detected, "s", "<= 3 s", detected <= 3)
            if args.idle_s:
                deadline = time.perf_counter() + args.idle_s
                seen = set()
                while time.perf_counter() < deadline:
                    seen |= (await false_failures(rest)) - {victim.name}
                    await trio.sleep(1.0)
                line(f"false failures in {args.idle_s} s idle", len(seen), "peers", "0", not seen)
        finally:
            for peer in peers:
                peer.kill()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=16)
    parser.add_argument("--idle-s", type=int, default=300)
    trio.run(main_async, parser.parse_args())


if __name__ == "__main__":
    main()
