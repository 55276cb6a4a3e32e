"""Issue 4's replication scenarios over many seeds: runs, failures, acked, lost, and the
median failover and convergence times.

For each shipped replication scenario it runs seeds 1..S (two worker processes) and prints
runs, failures (target 0), acknowledged events, lost (target 0), the median time from a
master crash to the first write acknowledged by the new master, and the median time from
the last heal (or the last fault) to convergence. A failing seed is printed so it can be
replayed: `meshstream simulate FILE --seed N`.

Usage: python bench/replication_bench.py [--seeds 200] [--jobs 2] [SCENARIO ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simulations.runner import Simulation  # noqa: E402
from simulations.scenario import load_scenario  # noqa: E402

SCENARIOS = ("master-crash-all-acks", "master-crash-master-acks", "partition-2-3-writers-both-sides",
             "flapping-link", "crash-during-catchup", "master-crash-return", "partition-heal")


def run_one(job: tuple[str, int]) -> dict:
    name, seed = job
    scenario = load_scenario(ROOT / "simulations" / "scenarios" / f"{name}.toml")
    simulation = Simulation(scenario, seed)
    result = simulation.run()
    reference = result.details["last_heal_s"] or simulation.faults.last_fault_s
    converged = None
    if result.converged_at_s is not None and reference is not None:
        converged = result.converged_at_s - reference
    return {"seed": seed, "ok": result.ok, "acked": result.acked, "lost": result.lost,
            "failover": result.details["failover_s"], "converged": converged,
            "failed_checks": sorted(k for k, v in result.checks.items() if not v)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    args = parser.parse_args()
    with ProcessPoolExecutor(args.jobs) as pool:
        for name in args.scenarios:
            started = time.perf_counter()
            rows = list(pool.map(run_one, [(name, seed) for seed in range(1, args.seeds + 1)]))
            report(name, rows, time.perf_counter() - started)


def report(name: str, rows: list[dict], wall_s: float) -> None:
    failures = [row for row in rows if not row["ok"]]
    failover = [t for row in rows for t in row["failover"]]
    converged = [row["converged"] for row in rows if row["converged"] is not None]
    print(f"{name}: runs {len(rows)}  failures {len(failures)} (target 0)  "
          f"acked {sum(r['acked'] for r in rows)}  lost {sum(r['lost'] for r in rows)} (target 0)  "
          f"median failover {_median(failover)} s  median convergence after heal {_median(converged)} s  "
          f"[{wall_s:.0f} s wall]", flush=True)
    for row in failures[:5]:
        print(f"    failed seed {row['seed']}: {row['failed_checks']}")


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.3f}" if values else "n/a"


if __name__ == "__main__":
    main()
