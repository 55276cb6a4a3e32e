"""SWIM membership measured in the simulator against the SWIM paper's figures.

Each figure is sampled many times inside one simulation run (one settle phase per N and
loss level), because a first-detection period is geometric-like (sd ~1 period) and
showing "within 5%" needs on the order of a thousand samples.

1. Detection: after the mesh settles, a peer crashes at a random instant; the first
   detection period is k = ceil((first Ping sent to the dead peer - crash) / T), the
   protocol period, counted from the crash, in which some member first probed it (SWIM
   section 3.1). One period after that Ping (its prober has suspected it by then) the peer
   restarts over its store with a new incarnation and refutes; a random 1-3 periods later
   the next victim crashes. Only peers that every live view holds live are chosen, so each
   sample has N-1 probers, each holding N-1 probe targets, as the paper assumes. SWIM's
   expected value, for uniformly random targets, is E = 1 / (1 - (1 - 1/(N-1))^(N-1))
   (target: the mean within 5%). Also printed: what randomized round robin (our probe
   order) predicts, exactly, and the crash -> suspect time. At N >= 1000, --overlap K
   (default 10) victims are down at once, each crashed at its own random instant and timed
   on its own (samples come K times faster), in one run of --per-run samples, with
   anti-entropy every --big-gossip-s (default 5 s; it plays no part in the first Ping to
   a crashed peer). The expectation is then also computed per sample from the probers
   actually up (N-1-K or so: +1% at K=10), and both are printed. The CI uses the largest
   of the standard errors from single samples, from run means and from means of 50
   consecutive samples (samples within a run are correlated through the probe orders).
2. Dissemination (N=1000 by default): every 1-2 periods another peer leaves (MemberLeft) or,
   with --change failed, crashes and is declared failed; the periods from the change to
   the moment every live peer's view no longer holds it live (target: within
   ceil(1.5 ln N) = 11 periods in >= 99% of changes with no loss, within 14 at 10% loss).
3. False positives: 17 peers, 10% message loss, 3 indirect probes, 100 periods: no live
   peer declared failed in >= 95% of seeds.

Usage: python bench/swim_bench.py [--only detection|dissemination|false] [--samples 1000]
       [--nodes 32,100,1000] [--changes 100] [--seeds 100] [--seed 1]
"""

from __future__ import annotations

import argparse
import math
import os
import resource
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
duration_s = 100000
[cluster]
nodes = {nodes}
replication_factor = 3
shards = 16
[network]
latency_ms = [1, 10]
[config]
gossip_interval_s = {gossip_s}
"""
SETTLE_S_MAX = 120.0
PROBE_WAIT_PERIODS_MAX = 30  # a victim unprobed this long counts as missed
GAP_PERIODS = (1.0, 3.0)  # between a restart and the next crash (uniform)
CHANGE_GAP_PERIODS = (1.0, 2.0)  # between two membership changes in the dissemination run
CHECK_PERIODS = 0.1  # how often the dissemination run looks at the views
BATCH_SAMPLES = 50  # detection: consecutive samples per batch mean (the s.e. from batch means)


def build(nodes: int, seed: int, gossip_s: float = 1.0) -> Simulation:
    simulation = Simulation(parse_scenario(SCENARIO.format(nodes=nodes, gossip_s=gossip_s)), seed)
    simulation.start(sample=False)
    return simulation


def settle(simulation: Simulation, nodes: int) -> float:
    """Run until every live peer folds the same membership view (or give up)."""
    while simulation.loop.now < SETTLE_S_MAX:
        simulation.loop.run_until(simulation.loop.now + 2.0)
        if checkers.membership_converged(simulation.cluster, simulation.scenario.cluster.shards):
            break
    return simulation.loop.now


def swim_expected(probers: int, targets: int) -> float:
    """SWIM's mean first-detection period: each of `probers` members pings one of its
    `targets` members uniformly at random each period."""
    return 1.0 / (1.0 - (1.0 - 1.0 / targets) ** probers)


def round_robin_expected(probers: int, targets: int) -> float:
    """The same mean for randomized round robin, each member at a uniform place in its round.

    A member with r targets left in its round (r uniform in 1..M) has not probed the victim
    after m periods with probability 1 - m/M when m <= r; when m > r, the victim was behind
    it in this round (probability (M-r)/M) and is not in the first m-r of the next one.
    """
    size = targets
    total, m = 0.0, 0
    while True:
        alone = 0.0
        for r in range(1, size + 1):
            alone += 1.0 - m / size if m <= r else (size - r) / size * max(0.0, 1.0 - (m - r) / size)
        survive = (alone / size) ** probers
        if survive < 1e-12:
            return total
        total += survive
        m += 1


class DetectionSampler:
    """Crashes peers one after another at random instants and times their first probe."""

    def __init__(self, simulation: Simulation, samples: int, overlap: int) -> None:
        self.simulation, self.cluster, self.loop = simulation, simulation.cluster, simulation.loop
        self.rng = simulation.faults.rng
        self.period_s = simulation.scenario.config.probe_interval_s
        self.samples_max, self.overlap = samples, overlap
        self.down: dict[str, tuple[float, int, int]] = {}  # victim -> (crash time, probers, targets)
        self.recent: set[str] = set()  # restarted, not yet eligible again
        self.periods: list[int] = []
        self.expected: list[float] = []
        self.suspect_periods: list[float] = []
        self.missed = 0
        self.skipped = 0
        self.cluster.send_observers.append(self._watch)

    def run(self, wall_s_max: float) -> None:
        started = time.perf_counter()
        for lane in range(self.overlap):
            self.loop.after(self.rng.uniform(*GAP_PERIODS) * self.period_s, self._crash)
        while len(self.periods) + self.missed < self.samples_max and time.perf_counter() - started < wall_s_max:
            self.loop.run_until(self.loop.now + 5 * self.period_s)

    def _eligible(self) -> list[str]:
        cluster = self.cluster
        live = cluster.live_peers()
        candidates = [name for name in live[1:] if name not in self.recent and name not in self.down]
        self.rng.shuffle(candidates)
        for name in candidates[:20]:
            if all(cluster.peers[viewer].node.topology.is_live(name) for viewer in live if viewer != name):
                return [name]
        return []

    def _crash(self) -> None:
        if len(self.periods) + self.missed + len(self.down) >= self.samples_max:
            return
        chosen = self._eligible()
        if not chosen:
            self.skipped += 1
            self.loop.after(self.period_s, self._crash)
            return
        victim = chosen[0]
        live = self.cluster.live_peers()
        targets = statistics.median_low(
            self.cluster.peers[name].node.topology.live_count() - 1 for name in live if name != victim)
        self.down[victim] = (self.loop.now, len(live) - 1, targets)
        self.cluster.crash(self.cluster.peers[victim])
        crashed_at = self.loop.now
        self.loop.after(PROBE_WAIT_PERIODS_MAX * self.period_s, lambda: self._give_up(victim, crashed_at))

    def _watch(self, at: float, src: str, dst: str | None, message: object) -> None:
        entry = self.down.get(dst) if dst is not None else None
        if entry is None or src == dst or type(message).__name__ != "Ping":
            return
        crashed_at, probers, targets = self.down.pop(dst)
        self.periods.append(math.ceil((at - crashed_at) / self.period_s))
        self.expected.append(swim_expected(probers, targets))
        self.loop.after(self.period_s + 0.01, lambda: self._restart(dst, crashed_at))

    def _give_up(self, victim: str, crashed_at: float) -> None:
        entry = self.down.get(victim)
        if entry is not None and entry[0] == crashed_at:
            del self.down[victim]
            self.missed += 1
            self._restart(victim, entry[0])

    def _restart(self, victim: str, crashed_at: float) -> None:
        for entry in reversed(self.cluster.timeline):
            if entry.at_s < crashed_at:
                break
            if entry.kind == "suspect" and entry.at_s >= crashed_at and f"suspects {victim} " in entry.text:
                self.suspect_periods.append((entry.at_s - crashed_at) / self.period_s)
                break
        peer = self.cluster.peers[victim]
        self.cluster.start_peer(peer, self.cluster.seeds_for(victim))
        self.recent.add(victim)
        self.loop.after(3 * self.period_s, lambda: self.recent.discard(victim))
        self.loop.after(self.rng.uniform(*GAP_PERIODS) * self.period_s, self._crash)


def detection(nodes_list: list[int], samples: int, per_run: int, seed: int, overlap_big: int,
              wall_s_max: float, big_gossip_s: float) -> None:
    """Samples come from runs of at most `per_run` crashes each (seeds seed, seed+1, ...):
    every restart's join snapshot ships the whole `$topology` history, which grows by a
    few events per crash, so one endless run would slow down quadratically.

    At N >= 1000 a run costs ~6 CPU-minutes to settle and each period ~10x what it costs
    at N=100, so samples come from one long run with `overlap_big` victims down at once
    (each crash at its own random instant, each sample timed on its own), and anti-entropy
    runs every `big_gossip_s` instead of every period: it takes no part in first detection
    (the first Ping to the crashed peer) and was most of a period's cost, as every crash and
    rejoin made each round's `$topology` digests differ."""
    for nodes in nodes_list:
        clock = _Clock()
        big = nodes >= 1000
        overlap, gossip_s = (overlap_big, big_gossip_s) if big else (1, 1.0)
        periods: list[int] = []
        expected: list[float] = []
        suspect: list[float] = []
        missed = skipped = 0
        run_means: list[float] = []
        run_seed = seed
        while len(periods) + missed < samples and time.perf_counter() - clock.wall < wall_s_max:
            simulation = build(nodes, run_seed, gossip_s)
            settle(simulation, nodes)
            sampler = DetectionSampler(simulation, min(per_run, samples - len(periods) - missed), overlap)
            sampler.run(wall_s_max - (time.perf_counter() - clock.wall))
            periods += sampler.periods
            expected += sampler.expected
            suspect += sampler.suspect_periods
            missed, skipped = missed + sampler.missed, skipped + sampler.skipped
            if sampler.periods:
                run_means.append(statistics.mean(sampler.periods))
            run_seed += 1
        _print_detection(nodes, seed, run_seed - 1, periods, expected, suspect, (missed, skipped, overlap, gossip_s),
                         run_means, clock)


def _print_detection(nodes, first_seed, last_seed, periods, expected, suspect, settings, run_means, clock) -> None:
    missed, skipped, overlap, gossip_s = settings
    count = len(periods)
    mean = statistics.mean(periods) if periods else float("nan")
    error = statistics.stdev(periods) / math.sqrt(count) if count > 1 else float("nan")
    paper = swim_expected(nodes - 1, nodes - 1)
    per_sample = statistics.mean(expected) if expected else float("nan")
    robin = round_robin_expected(nodes - 1, nodes - 1)
    off, off_up = (mean - paper) / paper, (mean - per_sample) / per_sample
    # Samples within one run are not independent (every member keeps its round's order for
    # N-1 periods, across several crashes), so standard errors from run means and from
    # means of BATCH_SAMPLES consecutive samples are given too; the CI uses the largest.
    batch = _stderr_of_means(run_means)
    batches = [statistics.mean(periods[i:i + BATCH_SAMPLES]) for i in range(0, count - BATCH_SAMPLES + 1, BATCH_SAMPLES)]
    batch_means = _stderr_of_means(batches)
    wide = max(e for e in (error, batch, batch_means) if e == e) if count > 1 else float("nan")
    low, high = (mean - 1.96 * wide - paper) / paper, (mean + 1.96 * wide - paper) / paper
    print(f"SEEDS={first_seed}..{last_seed} detection N={nodes}: mean first-detection period {mean:.3f} "
          f"+- {error:.3f} (s.e.; {batch:.3f} from {len(run_means)} run means, {batch_means:.3f} from "
          f"{len(batches)} means of {BATCH_SAMPLES}) over {count} samples ({missed} unprobed, {skipped} crash slots "
          f"skipped); SWIM expects {paper:.3f} (target within 5%): {off:+.1%}, 95% CI {low:+.1%}..{high:+.1%} "
          f"{'OK' if abs(off) <= 0.05 else 'MISSED'}; SWIM formula with the probers actually up {per_sample:.3f} "
          f"({off_up:+.1%}); randomized round robin predicts {robin:.3f}; distribution {_histogram(periods)}; "
          f"per-run means {' '.join(f'{m:.2f}' for m in run_means)}; crash->suspect {_mean(suspect)} periods; "
          f"overlap {overlap}; anti-entropy every {gossip_s:g} s; {clock}", flush=True)


def _stderr_of_means(means: list[float]) -> float:
    return statistics.stdev(means) / math.sqrt(len(means)) if len(means) > 1 else float("nan")


class DisseminationSampler:
    """Makes a membership change every few periods at another peer and times its spread."""

    def __init__(self, simulation: Simulation, changes: int, kind: str, late_periods: int) -> None:
        self.simulation, self.cluster, self.loop = simulation, simulation.cluster, simulation.loop
        self.rng = simulation.faults.rng
        self.period_s = simulation.scenario.config.probe_interval_s
        self.changes_max, self.kind = changes, kind
        self.made = 0
        self.pending: dict[str, tuple[float, list[str]]] = {}  # victim -> (change time, observers left)
        self.crashed: dict[str, int] = {}  # --change failed: victim -> timeline index at the crash
        self.periods: list[float] = []
        self.unfinished = self.censored = 0
        self.late_periods = late_periods

    def run(self, wall_s_max: float) -> None:
        started = time.perf_counter()
        self.loop.after(self.period_s, self._change)
        self.loop.after(CHECK_PERIODS * self.period_s, self._check)
        while (len(self.periods) < self.changes_max or self.pending or self.crashed) \
                and time.perf_counter() - started < wall_s_max:
            self.loop.run_until(self.loop.now + 5 * self.period_s)
        # Changes still spreading when the run stops: older than `late_periods`, a miss;
        # younger, censored (not counted either way).
        late_s = self.late_periods * self.period_s
        self.unfinished = sum(1 for changed_at, _ in self.pending.values() if self.loop.now - changed_at > late_s)
        self.censored = len(self.pending) + len(self.crashed) - self.unfinished

    def _change(self) -> None:
        if self.made >= self.changes_max:
            return
        busy = set(self.pending) | set(self.crashed)
        candidates = [name for name in self.cluster.live_peers()[1:] if name not in busy]
        victim = self.rng.choice(candidates)
        self.made += 1
        peer = self.cluster.peers[victim]
        if self.kind == "leave":
            self.cluster.leave(peer)
            self._start_watch(victim)
        else:
            self.crashed[victim] = len(self.cluster.timeline)
            self.cluster.crash(peer)
        self.loop.after(self.rng.uniform(*CHANGE_GAP_PERIODS) * self.period_s, self._change)

    def _start_watch(self, victim: str) -> None:
        observers = [name for name in self.cluster.live_peers() if name != victim]
        self.pending[victim] = (self.loop.now, observers)

    def _check(self) -> None:
        self._note_declarations()
        cluster = self.cluster
        for victim in sorted(self.pending):
            changed_at, observers = self.pending[victim]
            waiting = [name for name in observers if cluster.peers[name].alive
                       and cluster.peers[name].node.topology.is_live(victim)]
            if waiting:
                self.pending[victim] = (changed_at, waiting)
            else:
                del self.pending[victim]
                self.periods.append((self.loop.now - changed_at) / self.period_s)
        self.loop.after(CHECK_PERIODS * self.period_s, self._check)

    def _note_declarations(self) -> None:
        timeline = self.cluster.timeline
        for victim in sorted(self.crashed):
            for entry in timeline[self.crashed[victim]:]:
                if entry.kind == "failed" and f"declares {victim} failed" in entry.text:
                    del self.crashed[victim]
                    observers = [name for name in self.cluster.live_peers() if name != victim]
                    self.pending[victim] = (entry.at_s, observers)
                    break
            else:
                self.crashed[victim] = len(timeline)


def dissemination(nodes: int, changes: int, seed: int, kind: str, losses: list[float], wall_s_max: float) -> None:
    bound = math.ceil(1.5 * math.log(nodes))
    for loss in losses:
        target = bound if loss == 0 else 14
        clock = _Clock()
        simulation = build(nodes, seed)
        settled_at = settle(simulation, nodes)
        if loss:
            simulation.cluster.network.set_link(None, loss=loss)
        sampler = DisseminationSampler(simulation, changes, kind, target)
        sampler.run(wall_s_max)
        done = sampler.periods
        inside = sum(1 for periods in done if periods <= target)
        total = len(done) + sampler.unfinished
        share = inside / total if total else float("nan")
        quantiles = statistics.quantiles(done, n=100) if len(done) > 1 else [float("nan")] * 99
        print(f"SEED={seed} dissemination N={nodes} ({kind}) loss={loss:.0%}: reached every live peer within "
              f"{target} periods for {inside}/{total} changes = {share:.1%} (target >= 99%) "
              f"{'OK' if share >= 0.99 else 'MISSED'}; periods mean {_mean(done)} median {quantiles[49]:.1f} "
              f"p99 {quantiles[98]:.1f} max {max(done, default=float('nan')):.1f} "
              f"({sampler.unfinished} unfinished past the target, {sampler.censored} still spreading when the run "
              f"stopped, not counted); settled at {settled_at:.0f} s; {clock}", flush=True)


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
    clock = _Clock()
    failures = [false_positive_run(seed) for seed in range(1, seeds + 1)]
    clean = sum(1 for count in failures if count == 0)
    share = clean / len(failures)
    print(f"SEEDS=1..{seeds} false positives N=17 loss=10% k=3 over 100 periods: no live peer declared failed in "
          f"{clean}/{len(failures)} seeds = {share:.0%} (target >= 95%) {'OK' if share >= 0.95 else 'MISSED'}; "
          f"{clock}", flush=True)


class _Clock:
    """Wall and CPU time since creation, and the machine's load, for each printed figure."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_utime

    def __str__(self) -> str:
        cpu = resource.getrusage(resource.RUSAGE_SELF).ru_utime - self.cpu
        return f"{time.perf_counter() - self.wall:.0f} s wall, {cpu:.0f} s CPU, load {os.getloadavg()[0]:.2f}"


def _histogram(periods: list[int]) -> str:
    counts = {k: periods.count(k) for k in sorted(set(periods))}
    return " ".join(f"{k}:{v}" for k, v in counts.items())


def _mean(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f}" if values else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=("detection", "dissemination", "false"), default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--samples", type=int, default=1000, help="detection samples per N")
    parser.add_argument("--per-run", type=int, default=250, help="detection samples per simulation run")
    parser.add_argument("--nodes", default="32,100,1000", help="detection mesh sizes")
    parser.add_argument("--overlap", type=int, default=10, help="victims down at once at N >= 1000")
    parser.add_argument("--big-gossip-s", type=float, default=5.0, help="anti-entropy interval, detection N >= 1000")
    parser.add_argument("--changes", type=int, default=100, help="dissemination changes per loss level")
    parser.add_argument("--dissemination-nodes", type=int, default=1000)
    parser.add_argument("--change", choices=("leave", "failed"), default="leave")
    parser.add_argument("--losses", default="0,0.1")
    parser.add_argument("--seeds", type=int, default=100, help="false-positive seeds")
    parser.add_argument("--wall-s-max", type=float, default=2700.0, help="per figure, after settling")
    args = parser.parse_args()
    if args.only in (None, "detection"):
        nodes = [int(n) for n in args.nodes.split(",")]
        detection(nodes, args.samples, args.per_run, args.seed, args.overlap, args.wall_s_max, args.big_gossip_s)
    if args.only in (None, "dissemination"):
        losses = [float(loss) for loss in args.losses.split(",")]
        dissemination(args.dissemination_nodes, args.changes, args.seed, args.change, losses, args.wall_s_max)
    if args.only in (None, "false"):
        false_positives(args.seeds)


if __name__ == "__main__":
    main()
