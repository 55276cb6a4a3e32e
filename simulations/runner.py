"""Running one scenario: build the cluster, drive workloads and faults, check, report.

`Simulation(scenario, seed).run()` returns a `Result`. Everything random derives from one
`random.Random(seed)`: the cluster's stream (per-peer seeds, latency and loss), the fault
injector's (`pick`, corruption, joiners' seeds) and one per client, drawn in a fixed order.

The run: peers n1..nN start at 0.0 (n1 bootstraps the mesh, the others join through it);
writers and readers start; faults fire at their `at_s`; a sampler watches convergence;
at `duration_s` the run stops and the end-of-run checks are computed.

`main(argv)` is the `meshstream simulate` / `python -m simulations` entry point: it prints
`SEED=<n>` first, then the timeline and report (or one JSON object with `--json`), writes
the journal to `--trace FILE` if asked, and returns 0 iff every expectation holds, 1 if
one does not, 2 for an invalid scenario or command line.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshstream.errors import ConfigError
from simulations import checkers, scaleout
from simulations.cluster import SimCluster, default_node_factory, default_store_factory
from simulations.faults import FaultInjector
from simulations.loop import EventLoop, Journal
from simulations.network import Network
from simulations.scenario import Scenario, load_scenario
from simulations.workload import Reader, Writer

CLIENT_TIMEOUT_MARGIN_S = 1.0  # a client waits a little longer than the peer's own timeout
SAMPLE_INTERVAL_S = 0.25  # convergence sampling period for small meshes
SAMPLE_INTERVAL_LARGE_S = 1.0  # ... and for meshes over LARGE_MESH_PEERS (sampling costs O(N^2))
LARGE_MESH_PEERS = 50
DETAIL_LINES_MAX = 20


@dataclass
class Result:
    scenario: str
    seed: int
    ok: bool
    checks: dict[str, bool]
    acked: int
    lost: int
    duplicates: int
    divergent_replicas: int
    elections: int
    converged_at_s: float | None
    messages: int
    bytes: int
    trace_digest: str
    details: dict[str, Any] = field(default_factory=dict)
    timeline: list[Any] = field(default_factory=list)
    trace_lines: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        keys = ("scenario", "seed", "ok", "checks", "acked", "lost", "duplicates", "divergent_replicas",
                "elections", "converged_at_s", "messages", "bytes", "trace_digest")
        document = {key: getattr(self, key) for key in keys}
        document.update(self.details)
        return document


class Simulation:
    def __init__(self, scenario: Scenario, seed: int | None = None, *, node_factory=None, store_factory=None,
                 keep_trace: bool = False) -> None:
        self.scenario = scenario
        self.seed = scenario.seed if seed is None else seed
        rng = random.Random(self.seed)
        self.loop = EventLoop()
        self.journal = Journal(keep_lines=keep_trace)
        spec = scenario.network
        network = Network(spec.latency_ms, spec.loss, spec.bandwidth_mbps * 125_000.0)
        self.cluster = SimCluster(scenario.config, self.loop, self.journal, network,
                                  random.Random(rng.getrandbits(64)),
                                  node_factory or default_node_factory(), store_factory or default_store_factory())
        self.faults = FaultInjector(self.cluster, random.Random(rng.getrandbits(64)), scenario.cluster.nodes)
        self.sampler = checkers.Sampler(self.cluster, scenario.cluster.shards)
        timeout_s = scenario.config.append_timeout_s + CLIENT_TIMEOUT_MARGIN_S
        self.writers: list[Writer] = []
        self.readers: list[Reader] = []
        for index, workload in enumerate(scenario.workloads):
            writer = Writer(workload, 2 * index + 1, self.cluster, random.Random(rng.getrandbits(64)),
                            timeout_s, scenario.duration_s)
            self.writers.append(writer)
            self.cluster.clients[writer.client] = writer
            if workload.reader:
                reader = Reader(workload.stream, 2 * index + 2, self.cluster, random.Random(rng.getrandbits(64)),
                                workload.start_s)
                self.readers.append(reader)
                self.cluster.clients[reader.client] = reader

    def run(self) -> Result:
        self.start()
        self.loop.run_until(self.scenario.duration_s)
        return self.finish()

    def start(self, sample: bool = True) -> None:
        """Start the peers and clients and schedule the faults (benches then step the loop)."""
        scenario = self.scenario
        names = [f"n{i}" for i in range(1, scenario.cluster.nodes + 1)]
        for name in names:
            self.cluster.add_peer(name, [] if name == "n1" else ["n1"])
        for writer in self.writers:
            writer.start()
        for reader in self.readers:
            reader.start()
        for fault in scenario.faults:
            self.loop.at(fault.at_s, lambda fault=fault: self.faults.apply(fault))
        if sample:
            large = scenario.cluster.nodes > LARGE_MESH_PEERS
            self._schedule_samples(SAMPLE_INTERVAL_LARGE_S if large else SAMPLE_INTERVAL_S)
        self.scale_out = scaleout.ScaleOutTracker(self) if scaleout.wanted(scenario.expect) else None
        if self.scale_out is not None:
            self.scale_out.start()

    def finish(self) -> Result:
        """Take the last sample and compute the end-of-run checks."""
        self.sampler.sample()
        return self._result()

    def _schedule_samples(self, interval_s: float) -> None:
        def sample() -> None:
            self.sampler.sample()
            self.loop.after(interval_s, sample)

        self.loop.at(interval_s, sample)

    def _result(self) -> Result:
        scenario, cluster = self.scenario, self.cluster
        shards = scenario.cluster.shards
        acked = [event for writer in self.writers for event in writer.acked]
        loss = checkers.acked_loss(cluster, shards, acked)
        duplicates = checkers.store_duplicates(cluster) + [d for r in self.readers for d in r.duplicates]
        divergent = checkers.divergent_replicas(cluster, shards)
        failed_live = checkers.failed_live_peers(cluster)
        masters = checkers.master_problems(cluster, shards)
        since = self.sampler.since
        converged_at = since["data"] if not divergent else None
        checks = self._checks(len(acked), loss, duplicates, converged_at, masters, failed_live)
        details = self._details(acked, loss, duplicates, divergent, failed_live, masters)
        if getattr(self, "scale_out", None) is not None:  # simulations/scaleout.py
            checks.update(self.scale_out.checks())
            details.update(self.scale_out.details())
            details["problems"] = (details["problems"] + details["scale_out_problems"])[:DETAIL_LINES_MAX]
        return Result(
            scenario=scenario.name, seed=self.seed, ok=all(checks.values()), checks=checks, acked=len(acked),
            lost=len(loss.lost), duplicates=len(duplicates), divergent_replicas=len(divergent),
            elections=self._elections(), converged_at_s=converged_at, messages=cluster.network.messages,
            bytes=cluster.network.bytes, trace_digest=self.journal.digest(), details=details,
            timeline=cluster.timeline, trace_lines=self.journal.lines,
        )

    def _checks(self, acked, loss, duplicates, converged_at, masters, failed_live) -> dict[str, bool]:
        expect, since = self.scenario.expect, self.sampler.since
        checks: dict[str, bool] = {}
        if expect.converged_by_s is not None:
            checks["converged_by_s"] = converged_at is not None and converged_at <= expect.converged_by_s
        if expect.no_acked_loss:
            checks["no_acked_loss"] = not loss.lost
        if expect.no_duplicates:
            checks["no_duplicates"] = not duplicates
        if expect.single_master_by_s is not None:
            at = since["masters"]
            checks["single_master_by_s"] = not masters and at is not None and at <= expect.single_master_by_s
        if expect.membership_converged_by_s is not None:
            at = since["membership"]
            checks["membership_converged_by_s"] = at is not None and at <= expect.membership_converged_by_s
        if expect.no_failed_live_peers:
            checks["no_failed_live_peers"] = not failed_live
        if expect.acked_min is not None:
            checks["acked_min"] = acked >= expect.acked_min
        return checks

    def _elections(self) -> int:
        texts = {entry.text.split(": ", 1)[-1] for entry in self.cluster.timeline if entry.kind == "elected"}
        return len(texts)

    def _details(self, acked, loss, duplicates, divergent, failed_live, masters) -> dict[str, Any]:
        writers = self.writers
        return {
            "peers": len(self.cluster.peers),
            "live_peers": len(self.cluster.live_peers()),
            "sent": sum(w.sent for w in writers),
            "definite_failures": sum(w.definite_failures for w in writers),
            "indefinite_failures": sum(w.indefinite_failures for w in writers),
            "retries": sum(w.retries for w in writers),
            "abandoned": sum(w.abandoned for w in writers),
            "lost_exempt": loss.exempt,
            "events_read": sum(r.events_read for r in self.readers),
            "key_rereads": sum(r.key_rereads for r in self.readers),
            "dropped_messages": self.cluster.network.dropped,
            "persists_lost": self.cluster.stats.persists_lost,
            "journal_lines": self.journal.count,
            "failover_s": self.failover_times(acked),
            "membership_converged_at_s": self.sampler.since["membership"],
            "single_master_at_s": self.sampler.since["masters"],
            "last_heal_s": self.faults.last_heal_s,
            "problems": (loss.lost + duplicates + divergent + failed_live + masters)[:DETAIL_LINES_MAX],
        }

    def failover_times(self, acked) -> list[float]:
        """For each master crash: time to the first write acknowledged by another master."""
        times = []
        for crashed_at, peer, stream in self.faults.master_crashes:
            later = [a.at_s for a in acked if a.stream == stream and a.at_s > crashed_at
                     and not _sequenced_by(a.dot.peer, peer)]
            if later:
                times.append(round(min(later) - crashed_at, 6))
        return times


def _sequenced_by(dot_peer: str, peer: str) -> bool:
    """Dots name a peer's sequencer id: the peer name, possibly with a `.N` life suffix."""
    return dot_peer == peer or dot_peer.startswith(peer + ".")


def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="meshstream simulate", description="Run a simulation scenario.")
    parser.add_argument("scenario", help="a scenario TOML file (DESIGN section 6)")
    parser.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    parser.add_argument("--json", action="store_true", help="print one JSON report object")
    parser.add_argument("--trace", default=None, help="write the journal (every send, delivery, decision) here")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    from simulations import report

    try:
        args = parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    try:
        scenario = load_scenario(args.scenario)
        if args.seed is not None and args.seed < 0:
            raise ConfigError(f"--seed must be 0 or more, got {args.seed}")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seed = scenario.seed if args.seed is None else args.seed
    print(f"SEED={seed}", flush=True)
    result = Simulation(scenario, seed, keep_trace=args.trace is not None).run()
    if args.trace is not None:
        Path(args.trace).write_text("\n".join(result.trace_lines or []) + "\n", encoding="utf-8")
    print(report.render_json(result) if args.json else report.render_text(result, scenario))
    return 0 if result.ok else 1
