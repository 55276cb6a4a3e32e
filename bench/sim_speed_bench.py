"""Simulator speed: 500 peers for 60 s of simulated time; target at most 60 s of wall time.

Runs the real node (membership, anti-entropy, replication) under the `sim` preset with a
light writer, and prints wall time, simulated/wall ratio, messages and loop actions.
Usage: python bench/sim_speed_bench.py [--peers 500] [--seconds 60] [--seed 1]
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()
    scenario = parse_scenario(SCENARIO.format(peers=args.peers, seconds=args.seconds))
    print(f"SEED={args.seed}")
    started, cpu_started = time.perf_counter(), time.process_time()
    simulation = Simulation(scenario, args.seed)
    simulation.start(sample=False)
    step_s = args.progress or scenario.duration_s
    at_s = 0.0
    while at_s < scenario.duration_s:
        at_s = min(at_s + step_s, scenario.duration_s)
        simulation.loop.run_until(at_s)
        if args.progress:
            print(f"  simulated {at_s:6.1f} s  wall {time.perf_counter() - started:7.1f} s  "
                  f"cpu {time.process_time() - cpu_started:7.1f} s  "
                  f"messages {simulation.cluster.network.messages}", flush=True)
    wall_s = time.perf_counter() - started
    cpu_s = time.process_time() - cpu_started  # the machine is shared: CPU time says what wall hides
    cluster = simulation.cluster
    print(f"peers {args.peers}, simulated {args.seconds:g} s: wall {wall_s:.1f} s (target <= {args.seconds:g} s) "
          f"{'OK' if wall_s <= args.seconds else 'MISSED'}; cpu {cpu_s:.1f} s "
          f"{'OK' if cpu_s <= args.seconds else 'MISSED'}")
    print(f"  speed {args.seconds / wall_s:.2f}x real time, messages {cluster.network.messages} "
          f"({cluster.network.messages / wall_s:.0f}/s wall), bytes {cluster.network.bytes}, "
          f"loop actions {simulation.loop.actions_run}, acked {sum(len(w.acked) for w in simulation.writers)}")


if __name__ == "__main__":
    main()
