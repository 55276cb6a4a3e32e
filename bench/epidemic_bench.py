"""Epidemic spread by anti-entropy alone, measured on the simulator's loop and network.

Issue 4 asks for replication factor = N = 1000 with eager push off; `Config` caps
replication_factor at 16 and the node has no switch for eager push, so this bench runs
the anti-entropy *round* itself on the simulator: every peer, once per gossip interval (at
its own random phase), picks a random partner and they push-pull: each sends the events
the other lacks (what `store.events_missing` against the partner's vector yields),
over the simulated network (latency 1-10 ms, no loss). A peer's holdings are modelled as
a set of event ids (a MemoryStore costs 16 ms to create, too much for 1000 peers x seeds):
what is measured is the spread of push-pull rounds, not the store.

1. A new event written at one peer: rounds until every peer holds it (target: within
   11 rounds in >= 99% of seeds, mean <= 10.1).
2. A 50/50 partition where each half wrote its own events, then heals: rounds until every
   peer holds everything (target: within 5 rounds in >= 99% of seeds).

Usage: python bench/epidemic_bench.py [--peers 1000] [--seeds 100]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulations.loop import EventLoop  # noqa: E402
from simulations.network import Network  # noqa: E402

EVENT_BYTES = 300  # a typical envelope
INTERVAL_S = 1.0  # one round; phases are random within it
PARTNER_TRIES_MAX = 64  # half the peers are reachable in a 50/50 cut: 64 tries never all miss


class Epidemic:
    def __init__(self, peers: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.loop = EventLoop()
        self.network = Network((1.0, 10.0), 0.0)
        self.names = [f"n{i}" for i in range(1, peers + 1)]
        self.stores: dict[str, set[int]] = {name: set() for name in self.names}
        self.written = 0
        for name in self.names:
            self.network.add_peer(name)

    def write(self, peer: str, count: int) -> None:
        for _ in range(count):
            self.written += 1
            self.stores[peer].add(self.written)

    def start(self) -> None:
        for name in self.names:
            self.loop.at(self.rng.uniform(0.0, INTERVAL_S), lambda name=name: self._round(name))

    def _round(self, name: str) -> None:
        for _ in range(PARTNER_TRIES_MAX):  # a random reachable partner, by rejection
            partner = self.names[self.rng.randrange(len(self.names))]
            if partner != name and self.network.reachable(name, partner):
                self._exchange(name, partner)
                break
        self.loop.after(INTERVAL_S, lambda: self._round(name))

    def _exchange(self, a: str, b: str) -> None:
        for src, dst in ((a, b), (b, a)):
            missing = self.stores[src] - self.stores[dst]
            if missing and self.network.transit(src, dst, EVENT_BYTES * len(missing), self.rng) is not None:
                self.stores[dst] |= missing  # applied at once: latency is far below a round

    def rounds_until(self, total: int, limit_rounds: int = 40) -> float | None:
        start = self.loop.now
        while self.loop.now - start < limit_rounds * INTERVAL_S:
            self.loop.run_until(self.loop.now + INTERVAL_S / 20)
            if all(len(store) >= total for store in self.stores.values()):
                return (self.loop.now - start) / INTERVAL_S
        return None


def one_event(peers: int, seed: int) -> float | None:
    sim = Epidemic(peers, seed)
    sim.write(sim.rng.choice(sim.names), 1)
    sim.start()
    return sim.rounds_until(1)


def after_partition(peers: int, seed: int) -> float | None:
    """Every peer writes one event during a 50/50 partition; rounds from heal to all-everywhere."""
    sim = Epidemic(peers, seed)
    sim.network.partition([sim.names[: peers // 2], sim.names[peers // 2:]])
    for name in sim.names:
        sim.write(name, 1)
    sim.start()
    sim.rounds_until(peers - peers // 2, limit_rounds=20)  # each half converges on its own
    sim.network.heal()
    return sim.rounds_until(peers)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=100)
    args = parser.parse_args()
    started = time.perf_counter()
    rounds = [one_event(args.peers, seed) for seed in range(1, args.seeds + 1)]
    done = [r for r in rounds if r is not None]
    inside = sum(1 for r in done if r <= 11)
    print(f"one event, N={args.peers}: every peer within 11 rounds in {inside}/{len(rounds)} seeds (target >= 99%); "
          f"mean {statistics.mean(done):.2f} rounds (target <= 10.1), max {max(done):.2f} "
          f"[{time.perf_counter() - started:.0f} s wall]", flush=True)
    started = time.perf_counter()
    rounds = [after_partition(args.peers, seed) for seed in range(1, args.seeds + 1)]
    done = [r for r in rounds if r is not None]
    inside = sum(1 for r in done if r <= 5)
    print(f"50/50 partition healed, N={args.peers}: everything everywhere within 5 rounds in {inside}/{len(rounds)} "
          f"seeds (target >= 99%); mean {statistics.mean(done):.2f}, max {max(done):.2f} rounds "
          f"[{time.perf_counter() - started:.0f} s wall]", flush=True)


if __name__ == "__main__":
    main()
