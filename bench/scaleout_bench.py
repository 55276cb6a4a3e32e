"""Scale-out in the simulator: a mesh grows under a steady writer, then a third leaves.

    .venv/bin/python bench/scaleout_bench.py                 # 2 -> 50 peers (minutes)
    .venv/bin/python bench/scaleout_bench.py --steps 2,10,50,100,250,500 --write-scenario
    .venv/bin/python bench/scaleout_bench.py --json          # one JSON report

The scenario (written to simulations/scenarios/scale-out.toml with --write-scenario, for
`meshstream simulate`) starts `steps[0]` peers, writes to 200 streams at 1 event/s each
with quorum acks, adds peers up to each next step every `--step-s` seconds, then removes a
third of the peers gracefully and runs on to let the mesh settle.

The simulator reports scale-out itself (simulations/scaleout.py): beyond no acknowledged
loss, no duplicates, one master and data convergence, the scenario expects every shard's
master in its replica set with every replica confirmed caught up (`placement_converged`),
no peer mastering more than ceil(shards / peers) + 1 shards (`masters_balanced`), peers
outside a shard's set holding none of its events (`replicas_dropped`) and every step
settled within a step's time (`step_settle_s_max`); each step's settle time, the capacity
model (simulations/capacity.py) and messages per peer per second by family are in the
report, with the masters moved by handover in each step (`moves`). This program runs it
with progress lines (wall and CPU time) on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulations.runner import Simulation  # noqa: E402
from simulations.scenario import parse_scenario  # noqa: E402
from topology.election import master_cap  # noqa: E402

STREAMS = 200
PROGRESS_S = 5.0  # simulated seconds between progress checks
# Writes stop this long after the leave: the rest of the run is quiet so that the end-of-run
# checks see a settled mesh (as the write rates fall, load-aware balancing moves masters).
WRITES_AFTER_LEAVE_S = 10.0
SCENARIO_PATH = Path(__file__).resolve().parents[1] / "simulations" / "scenarios" / "scale-out.toml"


def scenario_text(steps: list[int], step_s: float, settle_s: float, shards: int, seed: int) -> str:
    """The scale-out scenario as TOML: joins at each step, a third leaves at the end."""
    leave_at = step_s * len(steps)
    duration = leave_at + settle_s
    last = steps[-1]
    lines = [
        'name = "scale-out"',
        f'description = "{steps[0]} peers grow to {last} in steps under a writer on {STREAMS} streams; '
        f'then a third leave."',
        f"seed = {seed}", f"duration_s = {duration:g}", "",
        "[cluster]", f"nodes = {steps[0]}", "replication_factor = 3", f"shards = {shards}", "",
        "[network]", "latency_ms = [1, 10]", "",
        "[[workload]]", f"streams = {STREAMS}", 'stream_prefix = "s"', "rate_per_s = 1", "start_s = 1",
        "stagger_s = 1", f"stop_s = {leave_at + WRITES_AFTER_LEAVE_S:g}", 'ack = "quorum"', "reader = false", "",
    ]
    for index, (before, after) in enumerate(zip(steps, steps[1:]), start=1):
        lines += ["[[fault]]", f"at_s = {step_s * index:g}", 'kind = "join"', f"count = {after - before}", ""]
    lines += ["[[fault]]", f"at_s = {leave_at:g}", 'kind = "leave"', 'nodes = ["live"]', f"pick = {last // 3}", ""]
    lines += ["[expect]", "no_acked_loss = true", "no_duplicates = true", f"single_master_by_s = {duration:g}",
              f"membership_converged_by_s = {duration:g}", f"converged_by_s = {duration:g}",
              "placement_converged = true", "masters_balanced = true", "replicas_dropped = true",
              f"step_settle_s_max = {step_s:g}"]
    return "\n".join(lines) + "\n"


def run(steps: list[int], step_s: float, settle_s: float, shards: int, seed: int) -> dict:
    """Run the scenario; the simulator's scale-out tracker (simulations/scaleout.py) times
    each step, evaluates the capacity model and counts messages per peer per second."""
    scenario = parse_scenario(scenario_text(steps, step_s, settle_s, shards, seed))
    sim = Simulation(scenario, seed)
    sim.start()
    wall, cpu = time.perf_counter(), time.process_time()
    reported = 0
    while sim.loop.now < scenario.duration_s:
        sim.loop.run_until(min(scenario.duration_s, sim.loop.now + PROGRESS_S))
        print(f"  t={sim.loop.now:7.1f}s wall={time.perf_counter() - wall:7.1f}s cpu={time.process_time() - cpu:7.1f}s "
              f"live={len(sim.cluster.live_peers())} acked={sum(len(w.acked) for w in sim.writers)}", file=sys.stderr,
              flush=True)
        tracker = sim.scale_out
        for step in tracker.steps[reported:]:
            if step.settle_s is None and sim.loop.now < step.at_s + step_s:
                break
            print(f"  t={sim.loop.now:7.1f}s wall={time.perf_counter() - wall:7.1f}s cpu={time.process_time() - cpu:7.1f}s "
                  f"{step.label}: settle {step.settle_s} s {json.dumps(step.figures)}", file=sys.stderr, flush=True)
            reported += 1
    document = sim.finish().to_json()
    document["wall_s"] = round(time.perf_counter() - wall, 1)
    document["cpu_s"] = round(time.process_time() - cpu, 1)
    return document


# ---------------------------------------------------------------------------- real processes

REAL_PEERS = 20
REAL_START = 3
REAL_GROUP = 4  # peers added at a time
REAL_STOP_GRACEFUL = 5
REAL_KILL = 2
REAL_STREAMS = 20


async def real_run(root: str, log=print) -> dict:
    """20 `meshstream run` processes on 127.0.0.1: start 3, write with ack=quorum, add the
    other 17 a few at a time, SIGTERM 5, SIGKILL 2; then every acknowledged event must be
    on every live replica of its shard, in one order."""
    import os

    import trio

    from meshstream.client import open_client
    from meshstream.demo import PeerProcess, live_members, topology_view, wait_until

    started = time.perf_counter()
    peers = [PeerProcess(f"n{i}", os.path.join(root, f"n{i}", "data"), extra_args=["--log-level", "WARNING"])
             for i in range(1, REAL_PEERS + 1)]
    for peer in peers[1:]:
        peer.join = [peers[0].address]
    acked: dict[str, list[bytes]] = {}
    counts = Counter()
    phases: list[dict] = []
    stop_writing = trio.Event()

    def phase(name: str) -> None:
        phases.append({"phase": name, "at_s": round(time.perf_counter() - started, 1), "acked": counts["acked"]})
        log(f"  {phases[-1]}")

    async def sees(names: list[str]) -> bool:
        view = await topology_view(peers[0].address)
        return set(names) <= set(live_members(view))

    async def writer() -> None:
        index = 0
        while not stop_writing.is_set():
            addresses = [p.address for p in peers if p.running]
            try:
                async with open_client(addresses, retry_timeout_s=10) as client:
                    while not stop_writing.is_set():
                        stream, key = f"s{index % REAL_STREAMS:02d}", b"k%07d" % index
                        await client.append(stream, b"event %d" % index, key=key, ack="quorum")
                        acked.setdefault(stream, []).append(key)
                        counts["acked"] += 1
                        index += 1
                        if index % 200 == 0:
                            break  # reconnect now and then with the current peer list
            except Exception as exc:  # noqa: BLE001 - a refused write is counted, not fatal
                counts["failed"] += 1
                counts[f"failed {type(exc).__name__}"] += 1
                index += 1

    try:
        for peer in peers[:REAL_START]:
            peer.start()
        await wait_until(lambda: sees([p.name for p in peers[:REAL_START]]), 30, "the first 3 peers")
        phase("3 peers up")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            await wait_until(lambda: _true(counts["acked"] >= 100), 30, "first acks")
            for first in range(REAL_START, REAL_PEERS, REAL_GROUP):
                group = peers[first:first + REAL_GROUP]
                for peer in group:
                    peer.start()
                await wait_until(lambda: sees([p.name for p in peers[:first + len(group)]]), 60,
                                 f"{first + len(group)} peers")
                phase(f"{first + len(group)} peers up")
            await wait_until(lambda: _balanced(peers[0].address), 60, "masters balanced")
            phase("20 peers, masters balanced")
            for peer in peers[REAL_PEERS - REAL_STOP_GRACEFUL:]:
                began = time.perf_counter()
                peer.stop(timeout_s=10)
                counts["graceful_exit_codes"] += 0 if peer.process.returncode == 0 else 1
                counts["graceful_stop_ms_max"] = max(counts["graceful_stop_ms_max"],
                                                     int((time.perf_counter() - began) * 1000))
            phase("5 stopped gracefully")
            for peer in peers[REAL_PEERS - REAL_STOP_GRACEFUL - REAL_KILL:REAL_PEERS - REAL_STOP_GRACEFUL]:
                peer.kill()
            phase("2 killed")
            before = counts["acked"]
            await wait_until(lambda: _true(counts["acked"] >= before + 200), 60, "writes after the kills")
            stop_writing.set()
        phase("writer stopped")
        survivors = [p for p in peers if p.running]
        problems = await wait_until(lambda: _verified(survivors, acked), 90, "every replica holding every ack")
        phase("verified")
        rss = {p.name: _rss_mb(p.process.pid) for p in survivors}
        return {"acked": counts["acked"], "failed": counts["failed"], "counts": dict(counts), "phases": phases,
                "problems": problems if problems is not True else [], "survivors": len(survivors),
                "rss_mb_max": max(rss.values()), "rss_mb_median": sorted(rss.values())[len(rss) // 2],
                "wall_s": round(time.perf_counter() - started, 1)}
    finally:
        for peer in peers:
            peer.kill()


async def _true(value: bool) -> bool:
    return value


async def _balanced(address: str) -> bool:
    from meshstream.demo import live_members, topology_view

    view = await topology_view(address)
    live = live_members(view)
    masters = Counter(m["peer"] for m in view["masters"].values() if m["peer"] in live)
    shards = view["shards"]
    return len(masters) > 0 and sum(masters.values()) == shards and max(masters.values()) <= master_cap(shards, len(live))


async def _verified(survivors, acked: dict[str, list[bytes]]):
    """True when every live replica of every stream's shard holds all its acked keys, in
    one order; otherwise a falsy value (wait_until polls again)."""
    from meshstream.demo import live_members, read_all, topology_view
    from meshstream.ids import shard_of
    from topology.placement import top_peers

    view = await topology_view(survivors[0].address)
    live = live_members(view)
    by_name = {p.name: p for p in survivors}
    for stream, keys in sorted(acked.items()):
        replicas = top_peers(shard_of(stream, view["shards"]), live, view["replication_factor"])
        orders = []
        for name in replicas:
            events = await read_all(by_name[name].address, stream)
            held = {e.key for e in events}
            if not set(keys) <= held:
                return False
            orders.append([e.digest for e in events])
        if any(order != orders[0] for order in orders):
            return False
    return True


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return -1.0


async def idle_rss(root: str) -> float:
    """VmRSS of one idle `meshstream run` peer with the default shape, after it settled."""
    import os

    import trio

    from meshstream.demo import PeerProcess, live_members, topology_view, wait_until

    peer = PeerProcess("idle", os.path.join(root, "idle", "data"), extra_args=["--log-level", "WARNING"])
    peer.start()
    try:
        await wait_until(lambda: _has_member(peer.address), 30, "the idle peer")
        await trio.sleep(3.0)  # a benchmark's measurement point, not synchronization
        return _rss_mb(peer.process.pid)
    finally:
        peer.stop()


async def _has_member(address: str) -> bool:
    from meshstream.demo import live_members, topology_view

    return bool(live_members(await topology_view(address)))


def real_main(json_output: bool) -> int:
    import tempfile

    import trio

    with tempfile.TemporaryDirectory(prefix="scaleout-real-") as root:
        rss_idle = trio.run(idle_rss, root)
        print(f"idle peer VmRSS {rss_idle} MB (target <= 60 MB)", flush=True)
        document = trio.run(real_run, root)
    document["idle_rss_mb"] = rss_idle
    ok = not document["problems"] and rss_idle <= 60 and document["counts"].get("graceful_exit_codes", 0) == 0
    document["ok"] = ok
    print(json.dumps(document, sort_keys=True) if json_output else
          f"20 real peers: acked {document['acked']} (refused {document['failed']}), survivors "
          f"{document['survivors']}, every ack on every replica in one order: {not document['problems']}, "
          f"RSS max {document['rss_mb_max']} MB median {document['rss_mb_median']} MB, "
          f"idle {rss_idle} MB, wall {document['wall_s']} s")
    return 0 if ok else 1


def print_report(document: dict) -> None:
    print(f"scenario {document['scenario']} seed {document['seed']}: ok={document['ok']} "
          f"acked={document['acked']} lost={document['lost']} duplicates={document['duplicates']} "
          f"wall {document['wall_s']} s cpu {document['cpu_s']} s")
    for name, passed in sorted(document["checks"].items()):
        print(f"  check {name:<28} {'pass' if passed else 'FAIL'}")
    print(f"  {'step':<16} {'peers':>5} {'settle s':>9} {'moves':>5}  capacity x linear: closed/uniform at settle, "
          f"at end  msgs/peer/s")
    for step in document["scale_out_steps"]:
        settle = "-" if step["settle_s"] is None else f"{step['settle_s']:.1f}"
        print(f"  {step['step']:<16} {step.get('peers', '-'):>5} {settle:>9} {step.get('handovers', '-'):>5}  "
              f"{step.get('capacity_closed_vs_linear', '-')}/{step.get('capacity_uniform_vs_linear', '-')}, "
              f"{step.get('plateau_capacity_closed_vs_linear', '-')}/{step.get('plateau_capacity_uniform_vs_linear', '-')}"
              f"  {step.get('messages_per_peer_per_s')}")
    for problem in document.get("problems", [])[:10]:
        print(f"  problem: {problem}")
    print(f"  masters moved by handover: {sum(s.get('handovers', 0) for s in document['scale_out_steps'])} in all")
    print("  target: sustained rate >= 0.7x linear up to 50 peers; every step settled")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", default="2,5,10,20,50")
    parser.add_argument("--step-s", type=float, default=15.0)
    parser.add_argument("--settle-s", type=float, default=30.0)
    parser.add_argument("--shards", type=int, default=256)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write-scenario", action="store_true", help="write simulations/scenarios/scale-out.toml")
    parser.add_argument("--real", action="store_true", help="20 real peer processes on 127.0.0.1 instead")
    args = parser.parse_args(argv)
    if args.real:
        return real_main(args.json)
    steps = [int(part) for part in args.steps.split(",")]
    if args.write_scenario:
        SCENARIO_PATH.write_text(scenario_text(steps, args.step_s, args.settle_s, args.shards, args.seed))
        print(f"wrote {SCENARIO_PATH}")
        return 0
    print(f"SEED={args.seed}", flush=True)
    document = run(steps, args.step_s, args.settle_s, args.shards, args.seed)
    if args.json:
        print(json.dumps(document, sort_keys=True))
    else:
        print_report(document)
    return 0 if document["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
