"""Simulator speed: 500 peers for 60 s of simulated time; target at most 60 s of wall time.

Runs the real node (membership, anti-entropy, replication) under the `sim` preset with a
light writer, and prints wall time, simulated/wall ratio, messages and loop actions.
Also prints the trace digest (a speed-up must leave it unchanged) and the split between
the join phase (all peers join at 0 s and their `$topology` spreads; the first 10 s) and the
steady state after it.
Usage: python bench/sim_speed_bench.py [--peers 500] [--seconds 60] [--seed 1] [--progress S] [--join-s 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulations.runner import Simulation  # noqa: E402
from simulations.scenario import parse_scenario  # noqa: E402

SCENARIO = """
name = "sim-speed"
duration_s = {seconds}
[cluster]
nodes = {peers}
replication_factor = 3
shards = 64
[network]
latency_ms = [1, 10]
[[workload]]
stream = "orders"
rate_per_s = 20
start_s = 5
ack = "quorum"
reader = false
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peers", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--progress", type=float, default=0.0, help="print wall time every this many simulated s")
    parser.add_argument("--join-s", type=float, default=10.0,
                        help="split the figures here: the join of every peer, then the steady state")
    args = parser.parse_args()
    scenario = parse_scenario(SCENARIO.format(peers=args.peers, seconds=args.seconds))
    print(f"SEED={args.seed}")
    load_before = os.getloadavg()[0]
    started, cpu_started = time.perf_counter(), time.process_time()
    simulation = Simulation(scenario, args.seed)
    simulation.start(sample=False)
    step_s = args.progress or scenario.duration_s
    stops = sorted({min(step_s * k, scenario.duration_s) for k in range(1, int(scenario.duration_s / step_s) + 2)}
                   | ({args.join_s} if 0 < args.join_s < scenario.duration_s else set()))
    phases: list[tuple[str, float, float]] = []  # (label, wall s, cpu s): the join, then the steady state
    for at_s in stops:
        simulation.loop.run_until(at_s)
        wall_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
        if at_s == args.join_s:
            phases.append((f"join 0-{at_s:g} s", wall_s, cpu_s))
        if args.progress:
            print(f"  simulated {at_s:6.1f} s  wall {wall_s:7.1f} s  cpu {cpu_s:7.1f} s  "
                  f"messages {simulation.cluster.network.messages}", flush=True)
    wall_s = time.perf_counter() - started
    cpu_s = time.process_time() - cpu_started  # the machine is shared: CPU time says what wall hides
    if phases:
        phases.append((f"steady {args.join_s:g}-{args.seconds:g} s", wall_s - phases[0][1], cpu_s - phases[0][2]))
    cluster = simulation.cluster
    print(f"peers {args.peers}, simulated {args.seconds:g} s: wall {wall_s:.1f} s (target <= {args.seconds:g} s) "
          f"{'OK' if wall_s <= args.seconds else 'MISSED'}; cpu {cpu_s:.1f} s "
          f"{'OK' if cpu_s <= args.seconds else 'MISSED'}")
    print(f"  speed {args.seconds / wall_s:.2f}x real time, messages {cluster.network.messages} "
          f"({cluster.network.messages / wall_s:.0f}/s wall), bytes {cluster.network.bytes}, "
          f"loop actions {simulation.loop.actions_run}, acked {sum(len(w.acked) for w in simulation.writers)}")
    # The digest shows a speed-up changed nothing: one seed, one trace, before and after.
    print(f"  trace digest {simulation.journal.digest()}")
    print(f"  load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after (2 cores shared: wall time varies)")
    if phases:
        print("  per phase: " + ", ".join(f"{label} wall {wall:.1f} s cpu {cpu:.1f} s" for label, wall, cpu in phases))


if __name__ == "__main__":
    main()
