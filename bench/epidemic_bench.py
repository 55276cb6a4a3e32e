"""Epidemic spread by anti-entropy alone (issue 4): the real node, and the round model.

Default (`--mode real`): the real `Node` on the simulator, replication factor = N (every
peer replicates every shard), `node.eager_push = False` so only push-pull anti-entropy
moves data, no loss, latency 1-10 ms. A mesh of N peers starts, settles (every peer folds
the same membership and masters), then:

1. One event: an append with `master` acks at a shard's master; rounds (gossip intervals)
   from the append until every live peer's store holds it. Several trials run one after
   another on each settled mesh (a new key each time). Target: within 11 rounds in >= 99%
   of trials, mean <= 10.1.
2. Partition heal: two shards mastered by different peers; the peers split into halves A
   and B, each with one master. Each master takes an append, and its event is handed to
   every peer of its half (as if it had spread there during the cut, membership intact);
   then anti-entropy runs and we count rounds until every peer holds both. Target: within
   5 rounds in >= 99% of trials. The cut itself is not simulated: a real 50/50 cut makes
   each half declare the other failed first, which measures membership repair, not spread.

`--mode model` runs the earlier abstract push-pull round model (sets of ids), which is
cheap enough for 100 seeds at N = 1000.

Usage: python bench/epidemic_bench.py [--peers 1000] [--seeds 2] [--trials 20] [--mode real|model]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meshstream import ids  # noqa: E402
from meshstream.wire.messages import AppendItem, AppendRequest  # noqa: E402
from simulations import checkers  # noqa: E402
from simulations.loop import EventLoop  # noqa: E402
from simulations.network import Network  # noqa: E402
from simulations.runner import Simulation  # noqa: E402
from simulations.scenario import parse_scenario  # noqa: E402

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


REAL_SCENARIO = """
name = "epidemic-real"
duration_s = 100000
[cluster]
nodes = {peers}
replication_factor = {peers}
shards = 2
[network]
latency_ms = [1, 10]
"""
SETTLE_LIMIT_S = 120.0
CLIENT_ID = 1 << 30  # replies to this client id go nowhere: the bench reads stores


class RealMesh:
    """A settled mesh of real nodes with eager push off."""

    def __init__(self, peers: int, seed: int) -> None:
        self.simulation = Simulation(parse_scenario(REAL_SCENARIO.format(peers=peers)), seed)
        self.simulation.start(sample=False)
        self.cluster = self.simulation.cluster
        self.interval_s = self.simulation.scenario.config.gossip_interval_s
        self.settled_s = self._settle()
        for name in self.cluster.live_peers():
            self.cluster.peers[name].node.eager_push = False
        self.streams = {ids.shard_of(f"s{i}", 2): f"s{i}" for i in range(64)}
        self.writes = 0

    def _settle(self) -> float | None:
        loop = self.simulation.loop
        while loop.now < SETTLE_LIMIT_S:
            loop.run_until(loop.now + 2.0)
            if checkers.membership_converged(self.cluster, 2) and not checkers.master_problems(self.cluster, 2):
                return loop.now
        return None

    def master(self, shard: int) -> str | None:
        reference = self.cluster.peers[self.cluster.live_peers()[0]].node
        return reference.topology.live_master(shard)

    def append(self, shard: int) -> tuple[str, bytes]:
        self.writes += 1
        stream, key = self.streams[shard], f"k{self.writes}".encode()
        request = AppendRequest(self.writes, stream, (AppendItem(key, b"x" * 200, {}),), "master")
        assert self.cluster.request(self.master(shard), CLIENT_ID, request)
        return stream, key

    def holders(self, stream: str, key: bytes) -> list[str]:
        return [n for n in self.cluster.live_peers() if self.cluster.peers[n].store.get(stream, key) is not None]

    def rounds_until_everywhere(self, wanted: list[tuple[str, bytes]], limit_rounds: int = 40) -> float | None:
        loop, start = self.simulation.loop, self.simulation.loop.now
        waiting = self.cluster.live_peers()
        while loop.now - start < limit_rounds * self.interval_s:
            loop.run_until(loop.now + self.interval_s / 20)
            stores = self.cluster.peers
            waiting = [n for n in waiting if any(stores[n].store.get(s, k) is None for s, k in wanted)]
            if not waiting:
                return (loop.now - start) / self.interval_s
        return None

    def heal_trial(self) -> float | None:
        """Each half holds its master's event; rounds until every peer holds both."""
        masters = [self.master(0), self.master(1)]
        if None in masters or masters[0] == masters[1]:
            return None
        rng = self.simulation.faults.rng
        others = [n for n in self.cluster.live_peers() if n not in masters]
        rng.shuffle(others)
        halves = [[masters[0]] + others[: len(others) // 2], [masters[1]] + others[len(others) // 2:]]
        wanted = []
        for shard, half in enumerate(halves):
            stream, key = self.append(shard)
            self.simulation.loop.run_until(self.simulation.loop.now + 0.05)  # durable at the master
            event = self.cluster.peers[masters[shard]].store.get(stream, key)
            assert event is not None, "the master did not persist the append"
            self.cluster.give_events([n for n in half if n != masters[shard]], masters[shard], [event])
            wanted.append((stream, key))
        self.simulation.loop.run_until(self.simulation.loop.now + 0.02)  # the handed events are durable
        assert all(len(self.holders(s, k)) >= len(h) for (s, k), h in zip(wanted, halves)), "halves not seeded"
        return self.rounds_until_everywhere(wanted)


def real(peers: int, seeds: int, trials: int) -> None:
    spread: list[float | None] = []
    healed: list[float | None] = []
    started = time.perf_counter()
    for seed in range(1, seeds + 1):
        built = time.perf_counter()
        mesh = RealMesh(peers, seed)
        print(f"  seed {seed}: {peers} peers settled at {mesh.settled_s} s simulated "
              f"[{time.perf_counter() - built:.0f} s wall]", flush=True)
        if mesh.settled_s is None:
            continue
        for _ in range(trials):
            spread.append(mesh.rounds_until_everywhere([mesh.append(0)]))
        for _ in range(trials):
            healed.append(mesh.heal_trial())
    _report(f"one event, real node, N={peers}, rf=N, eager push off", spread, 11, "mean target <= 10.1")
    _report(f"50/50 halves merged, real node, N={peers}", healed, 5, "")
    print(f"  {seeds} meshes x {trials} trials each [{time.perf_counter() - started:.0f} s wall]")


def _report(what: str, rounds: list[float | None], bound: int, extra: str) -> None:
    done = [r for r in rounds if r is not None]
    inside = sum(1 for r in done if r <= bound)
    mean = f"{statistics.mean(done):.2f}" if done else "n/a"
    worst = f"{max(done):.2f}" if done else "n/a"
    share = inside / len(rounds) if rounds else 0.0
    print(f"{what}: every peer within {bound} rounds in {inside}/{len(rounds)} trials = {share:.0%} "
          f"(target >= 99%) {'OK' if share >= 0.99 else 'MISSED'}; mean {mean} rounds {extra}, max {worst}",
          flush=True)


def model(peers: int, seeds: int) -> None:
    started = time.perf_counter()
    rounds = [one_event(peers, seed) for seed in range(1, seeds + 1)]
    done = [r for r in rounds if r is not None]
    inside = sum(1 for r in done if r <= 11)
    print(f"model: one event, N={peers}: every peer within 11 rounds in {inside}/{len(rounds)} seeds (target >= 99%); "
          f"mean {statistics.mean(done):.2f} rounds (target <= 10.1), max {max(done):.2f} "
          f"[{time.perf_counter() - started:.0f} s wall]", flush=True)
    started = time.perf_counter()
    rounds = [after_partition(peers, seed) for seed in range(1, seeds + 1)]
    done = [r for r in rounds if r is not None]
    inside = sum(1 for r in done if r <= 5)
    print(f"model: 50/50 partition healed, N={peers}: everything everywhere within 5 rounds in {inside}/{len(rounds)} "
          f"seeds (target >= 99%); mean {statistics.mean(done):.2f}, max {max(done):.2f} rounds "
          f"[{time.perf_counter() - started:.0f} s wall]", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=None, help="meshes (real; default 1) or seeds (model; 100)")
    parser.add_argument("--trials", type=int, default=20, help="trials of each kind per settled mesh (real)")
    parser.add_argument("--mode", choices=("real", "model"), default="real")
    args = parser.parse_args()
    if args.mode == "real":
        real(args.peers, args.seeds or 1, args.trials)
    else:
        model(args.peers, args.seeds or 100)


if __name__ == "__main__":
    main()
