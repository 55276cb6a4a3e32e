"""SWIM membership measured in the simulator against the SWIM paper's figures.

1. Detection: after the mesh settles, one peer crashes at a random instant. The first
   detection period is k = ceil((first Ping sent to the dead peer - crash) / T): the round,
   counted from the crash, in which some member first probed it. SWIM's expected value is
   1 / (1 - (1 - 1/(N-1))^(N-1)) periods (target: the mean within 5%). Also printed: the
   mean time from crash to the first `suspect` and `failed` decisions, in periods.
2. Dissemination (N=1000 by default): a peer leaves; the periods until every live peer's
   view shows it left (target: within ceil(1.5 ln N) = 11 periods in >= 99% of seeds with
   no loss, within 14 at 10% loss).
3. False positives: 17 peers, 10% message loss, 3 indirect probes, 100 periods: no live
   peer declared failed in >= 95% of seeds.

Usage: python bench/swim_bench.py [--seeds 20] [--big-seeds 2] [--only detection|dissemination|false]
Seeds are few at N=1000 on 2 cores; the figure says how many ran.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulations import checkers  # noqa: E402
from simulations.runner import Simulation  # noqa: E402
from simulations.scenario import parse_scenario  # noqa: E402

SCENARIO = """
name = "swim-bench"
duration_s = 1000
[cluster]
nodes = {nodes}
replication_factor = 3
shards = 16
[network]
latency_ms = [1, 10]
[config]
gossip_interval_s = 1.0
"""
SETTLE_S = {32: 20.0, 100: 30.0, 1000: 60.0}


def build(nodes: int, seed: int) -> Simulation:
    simulation = Simulation(parse_scenario(SCENARIO.format(nodes=nodes)), seed)
    simulation.start(sample=False)
    return simulation


def settle(simulation: Simulation, nodes: int) -> float:
    """Run until every live peer folds the same membership view (or give up)."""
    limit_s = SETTLE_S.get(nodes, 60.0)
    while simulation.loop.now < limit_s:
        simulation.loop.run_until(simulation.loop.now + 2.0)
        if checkers.membership_converged(simulation.cluster, simulation.scenario.cluster.shards):
            break
    return simulation.loop.now


def detection_run(nodes: int, seed: int) -> dict:
    simulation = build(nodes, seed)
    period_s = simulation.scenario.config.probe_interval_s
    rng = simulation.faults.rng
    now = settle(simulation, nodes) + rng.uniform(0.0, period_s)
    simulation.loop.run_until(now)
    victim = rng.choice(simulation.cluster.live_peers()[1:])
    first_ping: list[float] = []

    def watch(at: float, src: str, dst: str | None, message: object) -> None:
        if not first_ping and dst == victim and type(message).__name__ == "Ping" and src != victim:
            first_ping.append(at)

    simulation.cluster.send_observers.append(watch)
    simulation.cluster.crash(simulation.cluster.peers[victim])
    start_index = len(simulation.cluster.timeline)
    simulation.loop.run_until(now + 30 * period_s)
    decisions = {}
    for entry in simulation.cluster.timeline[start_index:]:
        if entry.kind in ("suspect", "failed") and victim in entry.text.split(": ", 1)[-1].split():
            decisions.setdefault(entry.kind, entry.at_s)
    result = {"periods": math.ceil((first_ping[0] - now) / period_s) if first_ping else None}
    for kind, at in decisions.items():
        result[kind] = (at - now) / period_s
    return result


def detection(seeds: int, big_seeds: int) -> None:
    for nodes in (32, 100, 1000):
        runs = seeds if nodes < 1000 else big_seeds
        started = time.perf_counter()
        results = [detection_run(nodes, seed) for seed in range(1, runs + 1)]
        periods = [r["periods"] for r in results if r["periods"] is not None]
        expected = 1.0 / (1.0 - (1.0 - 1.0 / (nodes - 1)) ** (nodes - 1))
        mean = statistics.mean(periods) if periods else float("nan")
        within = abs(mean - expected) <= 0.05 * expected
        suspect = [r["suspect"] for r in results if "suspect" in r]
        failed = [r["failed"] for r in results if "failed" in r]
        print(f"detection N={nodes}: mean first-detection period {mean:.3f} over {len(periods)}/{runs} seeds; "
              f"SWIM expects {expected:.3f} (target within 5%) {'OK' if within else 'MISSED'}; "
              f"crash->suspect {_mean(suspect)} periods, crash->failed {_mean(failed)} periods "
              f"[{time.perf_counter() - started:.0f} s wall]", flush=True)


def dissemination_run(nodes: int, seed: int, loss: float) -> float | None:
    simulation = build(nodes, seed)
    period_s = simulation.scenario.config.probe_interval_s
    now = settle(simulation, nodes)
    cluster = simulation.cluster
    if loss:
        cluster.network.set_link(None, loss=loss)
    victim = simulation.faults.rng.choice(cluster.live_peers()[1:])
    cluster.leave(cluster.peers[victim])
    waiting = [name for name in cluster.live_peers() if name != victim]
    while waiting and simulation.loop.now < now + 40 * period_s:
        simulation.loop.run_until(simulation.loop.now + period_s / 10)
        waiting = [name for name in waiting if cluster.peers[name].alive and not _left(cluster, name, victim)]
    return None if waiting else (simulation.loop.now - now) / period_s


def _left(cluster, observer: str, victim: str) -> bool:
    member = cluster.peers[observer].node.topology.member(victim)
    return member is not None and member.status == "left"


def dissemination(big_seeds: int, nodes: int) -> None:
    bound = math.ceil(1.5 * math.log(nodes))
    for loss, target in ((0.0, bound), (0.1, 14)):
        started = time.perf_counter()
        results = [dissemination_run(nodes, seed, loss) for seed in range(1, big_seeds + 1)]
        done = [r for r in results if r is not None]
        inside = sum(1 for r in done if r <= target)
        print(f"dissemination N={nodes} loss={loss:.0%}: reached all within {target} periods in {inside}/"
              f"{len(results)} seeds (target >= 99%); periods {[round(r, 1) for r in done]} "
              f"[{time.perf_counter() - started:.0f} s wall]", flush=True)


def false_positive_run(seed: int, periods: int = 100) -> int:
    simulation = build(17, seed)
    period_s = simulation.scenario.config.probe_interval_s
    now = settle(simulation, 17)
    cluster = simulation.cluster
    cluster.network.set_link(None, loss=0.1)
    start_index = len(cluster.timeline)
    simulation.loop.run_until(now + periods * period_s)
    return sum(1 for entry in cluster.timeline[start_index:] if entry.kind == "failed")


def false_positives(seeds: int) -> None:
    started = time.perf_counter()
    failures = [false_positive_run(seed) for seed in range(1, seeds + 1)]
    clean = sum(1 for count in failures if count == 0)
    share = clean / len(failures)
    print(f"false positives N=17 loss=10% k=3 over 100 periods: no live peer declared failed in {clean}/"
          f"{len(failures)} seeds = {share:.0%} (target >= 95%) {'OK' if share >= 0.95 else 'MISSED'} "
          f"[{time.perf_counter() - started:.0f} s wall]", flush=True)


def _mean(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f}" if values else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--big-seeds", type=int, default=2)
    parser.add_argument("--dissemination-nodes", type=int, default=1000)
    parser.add_argument("--only", choices=("detection", "dissemination", "false"), default=None)
    args = parser.parse_args()
    if args.only in (None, "detection"):
        detection(args.seeds, args.big_seeds)
    if args.only in (None, "dissemination"):
        dissemination(args.big_seeds, args.dissemination_nodes)
    if args.only in (None, "false"):
        false_positives(args.seeds)


if __name__ == "__main__":
    main()
