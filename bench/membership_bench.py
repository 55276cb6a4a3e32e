"""Membership on real peer processes on loopback (the `local` preset).

    python bench/membership_bench.py [--peers 16] [--idle-s 300] [--runs 3]

1. Start N peers together (all joining n1) and time until every one sees all N alive
   (target: within 1 s of all listening; also printed from the start of the processes).
2. SIGKILL one and time until every other peer declares it failed (target: within 3 s).
3. Idle for --idle-s seconds and count live peers any view reports failed (target: no
   false failure in a 5-minute idle run; only in the last run); suspicions that were
   refuted are listed apart.

Where the time goes: each peer's listening time is found by dialling it every 10 ms (it
is Python start-up; the socket accepts before the store and node exist, ~0.5 s of CPU
later per process, so the time from a peer's first answer to `status` is printed too: that
part is the protocol's), then every peer's `status` is polled over
one kept-open client connection per peer, all peers at once, every POLL_S. A figure is the
end of the first poll round that saw the condition (an upper bound); the round's own
duration, the resolution, is printed beside it. With --runs > 1 the medians are printed.

Each peer's CPU (user + system, from /proc) when it listens and when all have met is
printed too: 16 processes on 2 cores cannot all have met before 16 x that / 2 seconds,
whatever the protocol does (the "CPU-bound floor" lines; on a machine busy with other work
the wall-time figures are mostly other processes' turns). The package's modules are byte-compiled first (`compileall`), as an
installed package is: with PYTHONDONTWRITEBYTECODE set, every start would otherwise
compile ~50 modules (~50 ms of CPU each).
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import os
import resource
import statistics
import sys
import tempfile
import time

import trio

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from meshstream.client import open_client  # noqa: E402
from meshstream.demo import start_mesh  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client_bench import process_cpu_s  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

POLL_S = 0.02  # between two status rounds
DIAL_S = 0.01  # between two listening checks of one peer
WAIT_S_MAX = 60.0


def line(what, value, unit, target, ok):
    """One figure; `ok` None for a figure printed to show where the time goes (no target)."""
    verdict = "-" if ok is None else "met" if ok else "MISSED"
    print(f"{what:<60} {value:>8.2f} {unit:<6} target {target:<18} {verdict}", flush=True)


async def wait_listening(peer, started):
    """Seconds from `started` until `peer` accepts a TCP connection."""
    while True:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", peer.port)
        except OSError:
            await trio.sleep(DIAL_S)
            continue
        await stream.aclose()
        return time.perf_counter() - started


class Poller:
    """One open client per peer; `views()` asks every peer for its members at once."""

    def __init__(self, peers, stack):
        self.peers, self.stack, self.clients = peers, stack, {}
        self.first_answer = {}  # peer -> perf_counter at the end of the first round it answered

    async def open(self):
        """Clients connect on their first request, so opening them costs nothing."""
        for peer in self.peers:
            self.clients[peer.name] = await self.stack.enter_async_context(
                open_client([peer.address], retry_timeout_s=0.5))

    async def views(self, names):
        found = {}

        async def one(name):
            try:
                with trio.fail_after(2.0):
                    status = await self.clients[name].status()
                found[name] = {m["peer"]: m["status"] for m in status["members"]}
            except Exception:  # a peer just killed, or overloaded: not seen this round
                found[name] = None

        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(one, name)
        return found

    async def until(self, names, predicate, what):
        """(seconds until every view in `names` satisfies `predicate`, last round's duration)."""
        started = time.perf_counter()
        while time.perf_counter() - started < WAIT_S_MAX:
            round_started = time.perf_counter()
            views = await self.views(names)
            for name, view in views.items():
                if view is not None:
                    self.first_answer.setdefault(name, time.perf_counter())
            if all(view is not None and predicate(view) for view in views.values()):
                return time.perf_counter() - started, time.perf_counter() - round_started
            await trio.sleep(POLL_S)
        seen = {name: None if view is None else len(live(view)) for name, view in views.items()}
        raise TimeoutError(f"timed out waiting for {what}; live members per view: {seen}")


def live(view):
    return sorted(p for p, status in view.items() if status in ("alive", "suspect"))


async def one_run(args, root, idle_s):
    result = {}
    started = time.perf_counter()
    if args.profile:
        os.environ["MESHSTREAM_PROFILE"] = args.profile
    peers = start_mesh(root, args.peers)
    os.environ.pop("MESHSTREAM_PROFILE", None)
    names = sorted(p.name for p in peers)
    try:
        listening = {}

        cpu_listening = {}

        async def note(peer):
            listening[peer.name] = await wait_listening(peer, started)
            cpu_listening[peer.name] = process_cpu_s(peer.process.pid) or 0.0

        with trio.fail_after(WAIT_S_MAX):
            async with trio.open_nursery() as nursery:
                for peer in peers:
                    nursery.start_soon(note, peer)
        result["first_listening"] = min(listening.values())
        result["all_listening"] = max(listening.values())
        async with contextlib.AsyncExitStack() as stack:
            poller = Poller(peers, stack)
            await poller.open()
            since_listening = time.perf_counter() - started - result["all_listening"]
            met, resolution = await poller.until(names, lambda v: live(v) == names, "all peers to meet")
            if args.profile:
                await dump_profiles(peers, args.profile)
            cpu = {p.name: process_cpu_s(p.process.pid) or 0.0 for p in peers}
            result["peer_cpu_median"], result["peer_cpu_max"] = statistics.median(cpu.values()), max(cpu.values())
            result["peer_cpu_listening"] = statistics.median(cpu_listening.values())
            result["peer_cpu_after_listening"] = statistics.median(cpu[n] - cpu_listening[n] for n in cpu)
            result["meet"] = since_listening + met
            result["meet_resolution"] = resolution
            result["all_serving"] = max(poller.first_answer.values()) - started
            result["meet_from_serving"] = result["meet"] + result["all_listening"] - result["all_serving"]
            victim, rest = peers[-1], peers[:-1]
            victim.kill()
            detected, resolution = await poller.until(
                [p.name for p in rest], lambda v: v.get(victim.name) == "failed", "the killed peer declared failed")
            result["failed"], result["failed_resolution"] = detected, resolution
            if idle_s:
                result["false"] = await idle(poller, [p.name for p in rest], victim.name, idle_s)
    finally:
        for peer in peers:
            peer.kill()
    return result


async def dump_profiles(peers, directory):
    """SIGUSR1 every peer (each writes DIR/<name>.prof) and print the functions that took
    most of their CPU until now, summed over all peers."""
    import pstats
    import signal

    for peer in peers:
        peer.process.send_signal(signal.SIGUSR1)
    paths = [os.path.join(directory, f"{peer.name}.prof") for peer in peers]
    deadline = time.perf_counter() + 10
    while not all(os.path.exists(path) for path in paths) and time.perf_counter() < deadline:
        await trio.sleep(0.05)
    await trio.sleep(0.5)  # let the last one finish writing
    stats = pstats.Stats(*[path for path in paths if os.path.exists(path)])
    print(f"profile of {len(peers)} peers until all met, summed (cumulative, then own time):")
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(25)


async def idle(poller, names, victim, idle_s):
    """Peers any view held failed (the target: none) and, apart, held suspect (refuted)."""
    deadline = time.perf_counter() + idle_s
    failed, suspect = set(), set()
    rounds = 0
    while time.perf_counter() < deadline:
        for view in (await poller.views(names)).values():
            if view is not None:
                failed |= {p for p, status in view.items() if status == "failed" and p != victim}
                suspect |= {p for p, status in view.items() if status == "suspect" and p != victim}
        rounds += 1
        await trio.sleep(1.0)
    print(f"idle {idle_s} s: {rounds} polls of {len(names)} views; live peers seen failed: {sorted(failed) or 'none'}; "
          f"seen suspect (then refuted): {sorted(suspect) or 'none'} (load {os.getloadavg()[0]:.2f})", flush=True)
    return len(failed)


async def main_async(args):
    for package in ("meshstream", "topology"):
        compileall.compile_dir(os.path.join(ROOT, package), quiet=1)
    runs = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="meshstream-members-") as root:
            idle_s = args.idle_s if run == args.runs - 1 else 0
            result = await one_run(args, root, idle_s)
        runs.append(result)
        print(f"run {run + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in result.items()) +
              f" (load {os.getloadavg()[0]:.2f})", flush=True)
    median = {key: statistics.median(r[key] for r in runs) for key in runs[0] if key != "false"}
    n = args.peers
    print(f"medians of {len(runs)} runs, load {os.getloadavg()[0]:.2f}, bench CPU "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_utime:.1f} s, peers' CPU "
          f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime:.1f} s:")
    line(f"{n} processes: start -> first listening (Python start-up)", median["first_listening"], "s",
         "(not a target)", None)
    line(f"{n} processes: start -> all listening", median["all_listening"], "s", "(not a target)", None)
    line(f"{n} peers see each other (from all listening; +-{median['meet_resolution']:.2f} s)", median["meet"], "s",
         "<= 1 s", median["meet"] <= 1)
    line(f"{n} processes: start -> all answer status (node running)", median["all_serving"], "s",
         "(not a target)", None)
    line(f"{n} peers see each other (from all answering status)", median["meet_from_serving"], "s",
         "(protocol part)", None)
    line(f"{n} peers see each other (from the start of the processes)",
         median["meet"] + median["all_listening"], "s", "(serf: 0.4 s)", None)
    line(f"{n} peers: each peer's CPU until all met (median; max {median['peer_cpu_max']:.2f} s)",
         median["peer_cpu_median"], "s", "(not a target)", None)
    line(f"{n} peers: each peer's CPU until it listened (median)", median["peer_cpu_listening"], "s",
         "(not a target)", None)
    line(f"{n} peers: each peer's CPU from listening until all met (median)", median["peer_cpu_after_listening"], "s",
         "(not a target)", None)
    cores = os.cpu_count() or 1
    line(f"  CPU-bound floor from all listening: {n} x that / {cores} cores",
         n * median["peer_cpu_after_listening"] / cores, "s", "(estimate)", None)
    line(f"  CPU-bound floor from process start: {n} x CPU until met / {cores} cores",
         n * median["peer_cpu_median"] / cores, "s", "(estimate)", None)
    line(f"a killed peer declared failed by all (+-{median['failed_resolution']:.2f} s)", median["failed"], "s",
         "<= 3 s", median["failed"] <= 3)
    if "false" in runs[-1]:
        false = runs[-1]["false"]
        line(f"false failures in {args.idle_s} s idle (peers)", false, "peers", "0", not false)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=16)
    parser.add_argument("--idle-s", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", metavar="DIR", help="profile the peers (cProfile) and print where their "
                        "CPU went until all met (profiling slows them: figures are then not comparable)")
    trio.run(main_async, parser.parse_args())


if __name__ == "__main__":
    main()
