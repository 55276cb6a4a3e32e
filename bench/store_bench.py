"""Segment-store figures beside the targets of issue 2 (a program, not a test).

    .venv/bin/python bench/store_bench.py [--events 1000000] [--dir PATH] [--profile]

Appends 200-byte payloads with group commits of 1000, 100 and 1, reads one stream
sequentially (digests verified), scrubs, then reopens a store of `--events` events three
ways: after a crash (snapshot plus the largest tail a crash can leave unreplayed), from a
fresh snapshot, and from a full scan (no snapshot), reporting peak resident memory.
Recovery runs in a fresh child process so its memory figure is not inflated by the rest.
Rates are wall-clock; "cpu" beside them is events per CPU-second of this process, which
a shared, loaded machine disturbs less.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from meshstream.clocks import VersionVector  # noqa: E402
from meshstream.envelope import Event  # noqa: E402
from meshstream.store.segment import (  # noqa: E402
    SNAPSHOT_NAME,
    SegmentStore,
    records_between_snapshots,
)

PAYLOAD_BYTES = 200


def make_events(stream: str, count: int, first: int = 1) -> list[Event]:
    """`count` events of one master, each after the previous (the single-master case)."""
    payload = os.urandom(PAYLOAD_BYTES)
    vector, events = VersionVector({"n1": first - 1}) if first > 1 else VersionVector(), []
    for number in range(first, first + count):
        following, dot = vector.increment("n1")
        events.append(Event.sequence(stream, b"key-%012d" % number, payload, {}, dot, vector))
        vector = following
    return events


def bench_append(directory: str, batch: int, count: int) -> tuple[float, float]:
    """(events/s wall, events per CPU-second)."""
    events = make_events(f"append-{batch}", count)
    store = SegmentStore.open(directory)
    started, cpu = time.perf_counter(), time.process_time()
    for start in range(0, count, batch):
        store.append_batch(events[start:start + batch])
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    store.close()
    return count / elapsed, count / cpu


def bench_read(directory: str, stream: str) -> tuple[float, float, int]:
    store = SegmentStore.open(directory)
    cursor, total = VersionVector(), 0
    started, cpu = time.perf_counter(), time.process_time()
    while True:
        events = store.read(stream, cursor, 1000)
        if not events:
            break
        total += len(events)
        cursor = cursor.with_dot(events[-1].dot)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    store.close()
    return total / elapsed, total / cpu, total


def bench_scrub(directory: str) -> tuple[float, float]:
    """(records/s scrubbed in calls of 1000, seconds of the slowest call of 10)."""
    store = SegmentStore.open(directory)
    total, slowest = store._index.records(), 0.0
    started = time.perf_counter()
    for _ in range(0, total, 1000):
        store.scrub(1000)
    rate = total / (time.perf_counter() - started)
    for _ in range(100):
        started = time.perf_counter()
        store.scrub(10)
        slowest = max(slowest, time.perf_counter() - started)
    store.close()
    return rate, slowest


def crash_tail(count: int) -> int:
    """The most records a crash can leave unreplayed: just under the checkpoint interval."""
    return records_between_snapshots(count) - 1000


def build_big(directory: str, count: int) -> None:
    """`count` events; the last `crash_tail` of them appended after the last checkpoint
    and closed without one, as a crash would leave them."""
    tail = min(crash_tail(count), count // 2)
    store, chunk = SegmentStore.open(directory), 100_000
    for first in range(1, count + 1, chunk):
        events = make_events("big", min(chunk, count - first + 1), first)
        for start in range(0, len(events), 1000):
            if first + start == count - tail + 1:
                store.close()
                store = SegmentStore.open(directory)
            store.append_batch(events[start:start + 1000])
    store._recovered = False  # the crash: no checkpoint of the tail
    store.close()


def recover_child(directory: str) -> None:
    """Child mode: open, print seconds and max RSS (MB), close without checkpointing."""
    started = time.perf_counter()
    store = SegmentStore.open(directory)
    elapsed = time.perf_counter() - started
    rss_mb = peak_rss_mb()
    print(f"{elapsed:.3f} {rss_mb:.1f} {store.event_count('big')} {store.recovery['snapshot']}")
    store._recovered = False  # measure only: leave the snapshot as it was
    store.close()


def peak_rss_mb() -> float:
    """VmHWM of this process (ru_maxrss survives exec on Linux: it would report the parent)."""
    with open("/proc/self/status") as status:
        for row in status:
            if row.startswith("VmHWM:"):
                return int(row.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_recovery(directory: str) -> tuple[float, float, int, str]:
    output = subprocess.run([sys.executable, __file__, "--recover-child", directory],
                            check=True, capture_output=True, text=True).stdout.split()
    return float(output[0]), float(output[1]), int(output[2]), output[3]


def line(name: str, figure: str, target: str, ok: bool | None) -> None:
    verdict = "" if ok is None else ("ok" if ok else "MISSED")
    print(f"{name:<44} {figure:>22}   target {target:<22} {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--profile", action="store_true", help="profile the 1000-batch append and the read")
    parser.add_argument("--recover-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.recover_child:
        recover_child(args.recover_child)
        return
    root = tempfile.mkdtemp(prefix="store-bench-", dir=args.dir)
    try:
        run(root, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(root: str, args: argparse.Namespace) -> None:
    profiler = cProfile.Profile() if args.profile else None
    small = os.path.join(root, "small")
    if profiler:
        profiler.enable()
    rate, cpu = bench_append(small, 1000, 200_000)
    if profiler:
        profiler.disable()
    line("append, group commit 1000 (200 B)", f"{rate:,.0f}/s (cpu {cpu:,.0f})", ">= 200,000 events/s",
         rate >= 200_000)
    rate, cpu = bench_append(small, 100, 100_000)
    line("append, group commit 100", f"{rate:,.0f}/s (cpu {cpu:,.0f})", ">= 100,000 events/s", rate >= 100_000)
    rate, cpu = bench_append(small, 1, 2_000)
    line("append, group commit 1", f"{rate:,.0f}/s (cpu {cpu:,.0f})", "report", None)
    if profiler:
        profiler.enable()
    rate, cpu, total = bench_read(small, "append-1000")
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    line(f"sequential read ({total:,} events, verified)", f"{rate:,.0f}/s (cpu {cpu:,.0f})",
         ">= 300,000 events/s", rate >= 300_000)
    rate, slowest = bench_scrub(small)
    line("scrub, calls of 1000 records", f"{rate:,.0f} records/s", "report", None)
    line("scrub(10), slowest of 100 calls", f"{slowest * 1e3:.2f} ms", "report", None)

    big = os.path.join(root, "big")
    started = time.perf_counter()
    build_big(big, args.events)
    print(f"(built {args.events:,} events in {time.perf_counter() - started:.1f} s)")
    seconds, rss_mb, count, _ = measure_recovery(big)
    tail = min(crash_tail(args.events), args.events // 2)
    line(f"open {count:,} after a crash ({tail:,} replayed)", f"{seconds:.2f} s", "< 3 s", seconds < 3)
    line("peak resident memory during open", f"{rss_mb:.0f} MB", "<= 200 MB", rss_mb <= 200)
    SegmentStore.open(big).close()  # a checkpoint covering everything
    seconds, rss_mb, count, _ = measure_recovery(big)
    line(f"open {count:,} events (snapshot)", f"{seconds:.2f} s", "< 3 s", seconds < 3)
    line("peak resident memory during open", f"{rss_mb:.0f} MB", "<= 200 MB", rss_mb <= 200)
    os.remove(os.path.join(big, SNAPSHOT_NAME))
    seconds, rss_mb, count, _ = measure_recovery(big)
    line(f"open {count:,} events (no snapshot: full scan)", f"{seconds:.2f} s", "report (crash case)", None)
    line("peak resident memory during full scan", f"{rss_mb:.0f} MB", "<= 200 MB", rss_mb <= 200)


if __name__ == "__main__":
    main()
