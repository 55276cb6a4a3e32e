"""Client throughput and latency against real peer processes on loopback.

    python bench/client_bench.py [--events N] [--in-flight K] [--batch B] [--runs R]

1. One peer, ack=master, batches of B events with K batches in flight (target 50,000/s).
2. Three peers, replication factor 3, ack=all, same load (target 25,000/s).
3. Three peers, ack=all, single-event appends one at a time: latency p50 (< 2 ms) and
   p99 (< 10 ms).
With MESHSTREAM_PROFILE=DIR the peers are profiled (cli.py) and, for each throughput run,
their CPU per event is printed by function (cProfile slows them several times over: the
rates are then not comparable, periodic work is overcounted per event). `--part latency`
runs 3 alone; `--part trace` runs it with `MESHSTREAM_TRACE` set for the peers
(runtime/trace.py) and prints, per step of an append's path (client -> master -> replicas
-> master -> client), its median time from the client's send, so where the time goes is
read off one table.
The trace also sums each peer thread's CPU between consecutive steps (trace lines carry the
thread's CPU time), which is what a hop costs apart from its wait for a CPU.
Events carry 200 bytes of data. Each figure is printed beside its target, and beside each
throughput the CPU it cost per event: each peer's (user + system, from /proc) and this
client's, so a figure depressed by a busy machine can still be compared. With `--runs R`
the chosen parts run R times (fresh meshes) and each figure's median is printed at the end,
with the load averages seen.
The client sends each stream's appends to its master (`meshstream.client`: route hints);
the latency line says which peer took them and which one the client first connected to
(after the throughput runs the latency stream's master has usually moved away from it).
`--no-routing` keeps every append on the first connection, whose peer forwards it to the
master, for comparison (two more hops an append).
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

from meshstream.client import make_item, open_client  # noqa: E402
from meshstream.demo import all_see, live_members, master_of, mesh_settled, start_mesh, topology_view, wait_until  # noqa: E402

DATA = b"x" * 200


def process_cpu_s(pid):
    """User + system CPU seconds of process `pid` so far (Linux /proc); None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU per event of the peer processes and of this client between start and stop."""

    def __init__(self, peers):
        self.peers = peers

    def __enter__(self):
        self.start = [process_cpu_s(p.process.pid) for p in self.peers], time.process_time()
        return self

    def __exit__(self, *exc):
        self.stop = [process_cpu_s(p.process.pid) for p in self.peers], time.process_time()

    def line(self, events):
        pairs = zip(self.peers, self.start[0], self.stop[0])
        peers = [(p.name, a, b) for p, a, b in pairs if a is not None and b is not None]
        parts = [f"{name} {(b - a) / events * 1e6:.1f}" for name, a, b in peers]
        client = (self.stop[1] - self.start[1]) / events * 1e6
        return f"    CPU us/event: peers {', '.join(parts)}; client {client:.1f}"


async def throughput(peers, events, batch, in_flight, ack):
    addresses = [p.address for p in peers]
    async with open_client(addresses, retry_timeout_s=30, route_appends=ROUTING[0]) as client:
        await client.append("bench", DATA, ack=ack)  # elects the shard's master first
        per_task = events // in_flight

        async def worker(index):
            done = 0
            while done < per_task:
                size = min(batch, per_task - done)
                await client.append_batch(f"bench", [make_item(DATA) for _ in range(size)], ack=ack)
                done += size

        await profile_mark(peers)
        start = time.perf_counter()
        with CpuMeter(peers) as meter:
            async with trio.open_nursery() as nursery:
                for index in range(in_flight):
                    nursery.start_soon(worker, index)
        rate = per_task * in_flight / (time.perf_counter() - start)
        await profile_mark(peers, per_task * in_flight)
        return rate, meter.line(per_task * in_flight)


PROFILE_DIR = os.environ.get("MESHSTREAM_PROFILE", "")


async def profile_mark(peers, events=0):
    """With MESHSTREAM_PROFILE=DIR (inherited by the peers: cli.py), SIGUSR1 each peer so it
    writes DIR/<name>.prof; after a measured run (`events` > 0) print where each peer's CPU
    went, per event, by own time."""
    if not PROFILE_DIR:
        return
    import pstats
    import signal

    paths = {p.name: os.path.join(PROFILE_DIR, f"{p.name}.prof") for p in peers}
    before = {name: os.path.getmtime(path) if os.path.exists(path) else 0 for name, path in paths.items()}
    for peer in peers:
        peer.process.send_signal(signal.SIGUSR1)
    await wait_until(lambda: _all_newer(paths, before), 30, "the peers' profiles")
    if events:
        for name, path in sorted(paths.items()):
            stats = pstats.Stats(path)
            print(f"    profile of {name} during the run: {stats.total_tt / events * 1e6:.1f} us of CPU per event; "
                  f"functions by own time (us/event):")
            rows = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:25]
            for (file, line_no, function), (_, calls, own, cumulative, _) in rows:
                where = f"{os.path.basename(file)}:{line_no}({function})"
                print(f"      {own / events * 1e6:7.2f} own {cumulative / events * 1e6:8.2f} cum "
                      f"{calls / events:8.3f} calls/event  {where}")


async def _all_newer(paths, before):
    await trio.sleep(0.1)
    return all(os.path.exists(path) and os.path.getmtime(path) > before[name] for name, path in paths.items())


async def latency(addresses, count, ack, windows=None):
    """(p50, p99) in ms of `count` single appends one at a time; their (start, end)
    perf_counter pairs are appended to `windows` when given."""
    async with open_client(addresses, retry_timeout_s=30, route_appends=ROUTING[0]) as client:
        await client.append("latency", DATA, ack=ack)
        samples = []
        for _ in range(count):
            start = time.perf_counter()
            await client.append("latency", DATA, ack=ack)
            end = time.perf_counter()
            samples.append((end - start) * 1000)
            if windows is not None:
                windows.append((start, end))
        view = await topology_view(client.peer_address)
        master = master_of(view, "latency")
        master_address = view.get("members", {}).get(master, {}).get("address") if master else None
        sent_to = client.route_address("latency")
        how = "straight to it" if sent_to == master_address else f"to {sent_to}, which forwards them"
        print(f"    the stream's master: {master} at {master_address}; appends sent {how} "
              f"(first connected to {client.peer_address})", flush=True)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


async def mesh_ready(peers):
    names = sorted(p.name for p in peers)
    await wait_until(lambda: all_see(peers, lambda v: live_members(v) == names), 30, "the mesh to form")
    await mesh_settled(peers)  # measure the steady mesh, not its first rebalancing of masters


FIGURES = {}  # (what, unit, target) -> [(value, ok), ...] over the runs, for --runs
LOADS = []


def line(what, value, unit, target, ok):
    print(f"{what:<58} {value:>10.1f} {unit:<9} target {target:<12} {'met' if ok else 'MISSED'}", flush=True)
    FIGURES.setdefault((what, unit, target), []).append((value, ok))


ROUTING = [True]  # --no-routing: every append on the first connection (forwarded by its peer)


async def main_async(args):
    ROUTING[0] = not args.no_routing
    for run in range(args.runs):
        LOADS.append(os.getloadavg()[0])
        print(f"load {LOADS[-1]:.2f}" + (f" (run {run + 1} of {args.runs})" if args.runs > 1 else ""), flush=True)
        with tempfile.TemporaryDirectory(prefix="meshstream-bench-") as root:
            if args.part in ("all", "one"):
                await one_peer(root, args)
            if args.part in ("all", "three"):
                await three_peers(root, args)
            if args.part in ("latency", "trace"):
                await latency_only(root, args)
    LOADS.append(os.getloadavg()[0])
    print(f"load {LOADS[-1]:.2f}", flush=True)
    if args.runs > 1:
        print(f"medians of {args.runs} runs (load seen {min(LOADS):.2f}-{max(LOADS):.2f}):")
        for (what, unit, target), values in FIGURES.items():
            value = statistics.median(v for v, _ in values)
            ok = statistics.median(1.0 if met else 0.0 for _, met in values) >= 0.5
            runs = ", ".join(f"{v:.1f}" for v, _ in values)
            print(f"{what:<58} {value:>10.1f} {unit:<9} target {target:<12} {'met' if ok else 'MISSED'}  ({runs})")


def disk_floor(directory, samples=200):
    """(p50, p99) ms of one 300-byte append + fdatasync in `directory`: what a group commit
    of one event costs on this disk, on the master and on each replica (ack=all waits for
    all three, and here the three share one disk)."""
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    times = []
    try:
        for _ in range(samples):
            os.write(fd, DATA + b"x" * 100)
            start = time.perf_counter()
            os.fdatasync(fd)
            times.append((time.perf_counter() - start) * 1000)
    finally:
        os.close(fd)
        os.unlink(path)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def print_disk_floor(root):
    p50, p99 = disk_floor(root)
    print(f"{'disk: one 300-byte append + fdatasync (the floor of ack=all)':<58} p50 {p50:.2f} ms, p99 {p99:.2f} ms "
          f"(load {os.getloadavg()[0]:.2f})", flush=True)


async def latency_only(root, args):
    traces = os.path.join(root, "traces")
    if args.part == "trace":
        os.makedirs(traces)
        os.environ["MESHSTREAM_TRACE"] = traces
    peers = start_mesh(os.path.join(root, "three"), 3, ["--replication-factor", "3"])
    try:
        await mesh_ready(peers)
        print_disk_floor(root)
        samples = []
        with CpuMeter(peers) as meter:
            p50, p99 = await latency([p.address for p in peers], args.latency_samples, "all", samples)
        line("3 peers rf=3, ack=all, single append latency p50", p50, "ms", "< 2 ms", p50 < 2)
        line("3 peers rf=3, ack=all, single append latency p99", p99, "ms", "< 10 ms", p99 < 10)
        print(meter.line(len(samples)), flush=True)
        if args.part == "trace":
            print_trace(traces, {p.process.pid: p.name for p in peers}, samples)
    finally:
        os.environ.pop("MESHSTREAM_TRACE", None)
        for peer in peers:
            peer.kill()


def print_trace(directory, names, samples):
    """Median time from the client's send of each traced step, per role, over `samples`;
    then where the peers' CPU went during the appends, between steps."""
    lines, cpu_lines = {}, {}
    for pid, name in names.items():
        with open(os.path.join(directory, f"{pid}.trace")) as file:
            rows = [row.rstrip("\n").split(" ", 3) for row in file]
        lines[name] = [(float(t), what) for t, _, _, what in rows]
        cpu_lines[name] = [(float(t), int(cpu), thread, what) for t, cpu, thread, what in rows]
    print_trace_steps(lines, samples)
    print_trace_cpu(lines, cpu_lines, samples)


def _step(what):
    words = what.split()
    return " ".join(words[:2]) if words[0] in ("in", "out") else " ".join(
        words[:1] + [w for w in words[1:] if not w.replace(".", "").isdigit()])


def print_trace_cpu(lines, cpu_lines, samples, rows_max=16):
    """CPU (the noting thread's) between consecutive traced steps of one thread within an
    append's window, summed and divided by the appends: what each hop costs in CPU, apart
    from the time it waited for one (on a loaded machine the wall times above grow; these
    do much less)."""
    spent, windows_total = {}, 0.0
    for start, end in samples:
        windows = {name: [(t, what) for t, what in rows if start <= t <= end] for name, rows in lines.items()}
        for name, rows in cpu_lines.items():
            role, last = _role(windows, name), {}
            for t, cpu, thread, what in rows:
                if not start <= t <= end:
                    continue
                if thread in last:
                    before_cpu, before = last[thread]
                    key = (role, "commit thread" if thread != "MainThread" else "main", before, _step(what))
                    spent[key] = spent.get(key, 0) + cpu - before_cpu
                    windows_total += cpu - before_cpu
                last[thread] = (cpu, _step(what))
    count = len(samples)
    print(f"where the peers' CPU goes between traced steps: us per append ({windows_total / count:.0f} us an "
          f"append in all, between steps of one thread inside its window; the largest {rows_max})")
    for (role, thread, before, after), cpu_us in sorted(spent.items(), key=lambda item: -item[1])[:rows_max]:
        print(f"    {cpu_us / count:7.1f} us  {role:<11} {thread:<13} {before} -> {after}")


def print_trace_steps(lines, samples):
    steps, ticks = {}, []
    for start, end in samples:
        windows = {name: [(t, what) for t, what in rows if start <= t <= end] for name, rows in lines.items()}
        for name, window in windows.items():
            seen = {}
            role = _role(windows, name)
            for t, what in window:
                if what.startswith("tick "):
                    ticks.append(float(what.split()[1]))
                key = _step(what)
                seen[key] = seen.get(key, 0) + 1
                steps.setdefault((role, f"{key} #{seen[key]}"), []).append((t - start) * 1e6)
    print(f"where an append's time goes: median us from the client's send ({len(samples)} appends; "
          f"a step seen in fewer than half of them is left out)")
    rows = [(statistics.median(v), role, key, len(v)) for (role, key), v in steps.items() if 2 * len(v) >= len(samples)]
    for median, role, key, count in sorted(rows):
        print(f"    {median:8.0f} us  {role:<11} {key:<30} (in {count})")
    total = statistics.median(end - start for start, end in samples) * 1e6
    print(f"    {total:8.0f} us  client      reply received")
    if ticks:
        ticks.sort()
        print(f"    ticks during appends: {len(ticks)}, median {statistics.median(ticks):.3f} ms, "
              f"max {ticks[-1]:.3f} ms")


def _role(windows, name):
    """`master`, or `replica 1st` / `replica 2nd` by when each queued its ReplicateAck."""
    def acked(rows):
        return next((t for t, what in rows if what == "out ReplicateAck"), float("inf"))

    if any(what == "in AppendRequest" for _, what in windows[name]):
        return "master"
    replicas = sorted((acked(rows), other) for other, rows in windows.items()
                      if not any(what == "in AppendRequest" for _, what in rows))
    return f"replica {('1st', '2nd', '3rd')[min(2, [other for _, other in replicas].index(name))]}"


async def one_peer(root, args):
    peers = start_mesh(os.path.join(root, "one"), 1)
    try:
        await mesh_ready(peers)
        rate, cpu = await throughput(peers, args.events, args.batch, args.in_flight, "master")
        line(f"1 peer, ack=master, batch {args.batch} x {args.in_flight} in flight", rate, "events/s",
             ">= 50,000", rate >= 50_000)
        print(cpu, flush=True)
    finally:
        for peer in peers:
            peer.kill()


async def three_peers(root, args):
    peers = start_mesh(os.path.join(root, "three"), 3, ["--replication-factor", "3"])
    try:
        await mesh_ready(peers)
        addresses = [p.address for p in peers]
        rate, cpu = await throughput(peers, args.events, args.batch, args.in_flight, "all")
        line(f"3 peers rf=3, ack=all, batch {args.batch} x {args.in_flight} in flight", rate, "events/s",
             ">= 25,000", rate >= 25_000)
        print(cpu, flush=True)
        print_disk_floor(root)
        with CpuMeter(peers) as meter:
            p50, p99 = await latency(addresses, args.latency_samples, "all")
        line("3 peers rf=3, ack=all, single append latency p50", p50, "ms", "< 2 ms", p50 < 2)
        line("3 peers rf=3, ack=all, single append latency p99", p99, "ms", "< 10 ms", p99 < 10)
        print(meter.line(args.latency_samples + 1).replace("us/event", "us/append"), flush=True)
    finally:
        for peer in peers:
            peer.kill()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--latency-samples", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=1, help="repeat and print each figure's median")
    parser.add_argument("--part", choices=["all", "one", "three", "latency", "trace"], default="all", help="which mesh to measure")
    parser.add_argument("--no-routing", action="store_true", help="no appends straight to masters (the peer forwards)")
    args = parser.parse_args()
    trio.run(main_async, args)


if __name__ == "__main__":
    main()
