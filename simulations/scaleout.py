"""Scale-out measurements for `meshstream simulate`: how long each join or leave step
takes to settle, the capacity model at each step, and the end-of-run scale-out checks.

A `ScaleOutTracker` is attached by the runner when a scenario expects any of
`placement_converged`, `masters_balanced`, `replicas_dropped` or `step_settle_s_max`
(simulations/scenario.py). Every join and leave fault starts a *step*. Every `poll_s` it
looks at the mesh: the current step has *settled* the first time no live peer is draining
(a leave), membership has converged and `checkers.placement_problems` and
`checkers.balance_problems` are empty; its
`settle_s` is that moment minus the step's start (None if the next step, or the end,
came first). At that moment it also evaluates the capacity model (simulations/
capacity.py: the sustained write rate, closed-loop and uniform, and its ratio to linear)
over the scenario's streams, again at every later poll of the step (`plateau_*`: the
last one before the next step, once load-aware balancing has had the step's time), and
from the settle until the next step it counts messages per peer per second by family
(membership, anti-entropy, rebalance, writes). Each step also counts the masters moved by
handover during it (`handovers`: a balance that settles stops moving them).

The end-of-run checks read the final state: `placement_converged`, `masters_balanced`,
`replicas_dropped` (checkers.py) and `step_settle_s_max` (every step settled within it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from meshstream.wire.rebalance_messages import HandoverDone
from simulations import capacity, checkers

if TYPE_CHECKING:
    from simulations.runner import Simulation

STEP_KINDS = ("join", "leave")
POLL_S = 0.5  # small meshes
POLL_LARGE_S = 1.0  # over LARGE_MESH_PEERS: each poll costs O(peers x shards)
LARGE_MESH_PEERS = 50
CAPACITY_PER_S = 1000.0  # events/s one peer can master: the model's unit (ratios do not depend on it)
PROBLEMS_MAX = 10


@dataclass
class Step:
    at_s: float
    kind: str
    label: str
    settle_s: float | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    messages: Counter = field(default_factory=Counter)
    handovers: set = field(default_factory=set)  # (shard, election digest) of masters moved by handover


def wanted(expect: Any) -> bool:
    return bool(expect.placement_converged or expect.masters_balanced or expect.replicas_dropped
                or expect.step_settle_s_max is not None)


class ScaleOutTracker:
    def __init__(self, sim: "Simulation") -> None:
        self.sim = sim
        scenario = sim.scenario
        self.shards = scenario.cluster.shards
        self.streams = sorted({w.stream for w in scenario.workloads})
        first = Step(0.0, "start", f"{scenario.cluster.nodes} peers")
        faults = sorted((f for f in scenario.faults if f.kind in STEP_KINDS), key=lambda f: f.at_s)
        self.steps = [first] + [Step(f.at_s, f.kind, _label(f)) for f in faults]
        self._active: tuple[Step, float] | None = None  # the settled step counting messages, until

    def start(self) -> None:
        """Schedule the polls and watch sends (call once the peers are started)."""
        self.sim.cluster.send_observers.append(self._observe)
        large = self.sim.scenario.cluster.nodes > LARGE_MESH_PEERS or any(
            f.kind == "join" and f.count > LARGE_MESH_PEERS for f in self.sim.scenario.faults)
        interval_s = POLL_LARGE_S if large else POLL_S
        loop = self.sim.loop

        def poll() -> None:
            self.poll()
            loop.after(interval_s, poll)

        loop.at(interval_s, poll)

    def _current(self, now: float) -> Step:
        return [step for step in self.steps if step.at_s <= now][-1]

    def _observe(self, now: float, src: str, address: str | None, message: object) -> None:
        if isinstance(message, HandoverDone):  # sent to several peers: one election
            self._current(now).handovers.add((message.shard, message.election.digest))
        if self._active is not None:
            step, until = self._active
            if now < until:
                step.messages[capacity.message_family(message)] += 1
            else:
                self._active = None

    def poll(self) -> None:
        cluster, now = self.sim.cluster, self.sim.loop.now
        step = self._current(now)
        if step.settle_s is not None:
            step.figures.update(self._capacity(now, "plateau_"))  # the last poll before the next step
            return
        if now <= step.at_s or not cluster.live_peers():
            return
        if any(cluster.peers[name].node.rebalance.draining for name in cluster.live_peers()):
            return  # a leave is still handing shards off
        if not checkers.membership_converged(cluster, self.shards):
            return
        if checkers.placement_problems(cluster, self.shards) or checkers.balance_problems(cluster, self.shards):
            return
        step.settle_s = round(now - step.at_s, 3)
        step.figures = self._figures(now)
        later = [s.at_s for s in self.steps if s.at_s > step.at_s]
        self._active = (step, later[0] if later else float("inf"))

    def _figures(self, now: float) -> dict[str, Any]:
        figures: dict[str, Any] = {"peers": len(self.sim.cluster.live_peers()), "settled_at_s": round(now, 3)}
        return figures | self._capacity(now, "")

    def _capacity(self, now: float, prefix: str) -> dict[str, Any]:
        """The capacity model's sustained rate over linear, closed-loop and uniform."""
        live = len(self.sim.cluster.live_peers())
        reference = checkers.reference_node(self.sim.cluster, self.shards)
        if reference is None or not self.streams or not live:
            return {}
        figures: dict[str, Any] = {f"{prefix}at_s": round(now, 3)} if prefix else {}
        for model in capacity.MODELS:
            rate = capacity.sustained_rate(reference.topology, self.streams, CAPACITY_PER_S, model)
            figures[f"{prefix}capacity_{model}_vs_linear"] = round(rate / (CAPACITY_PER_S * live), 3)
        return figures

    # ------------------------------------------------------------------ the end of the run
    def checks(self) -> dict[str, bool]:
        expect, cluster = self.sim.scenario.expect, self.sim.cluster
        found: dict[str, bool] = {}
        self._problems: list[str] = []
        for name, wanted_here, probe in (
                ("placement_converged", expect.placement_converged, checkers.placement_problems),
                ("masters_balanced", expect.masters_balanced, checkers.balance_problems),
                ("replicas_dropped", expect.replicas_dropped, checkers.dropped_problems)):
            if wanted_here:
                problems = probe(cluster, self.shards)
                found[name] = not problems
                self._problems += problems[:PROBLEMS_MAX]
        if expect.step_settle_s_max is not None:
            found["step_settle_s_max"] = all(s.settle_s is not None and s.settle_s <= expect.step_settle_s_max
                                             for s in self.steps)
        return found

    def details(self) -> dict[str, Any]:
        steps = []
        for index, step in enumerate(self.steps):
            end = self.steps[index + 1].at_s if index + 1 < len(self.steps) else self.sim.loop.now
            entry = {"at_s": step.at_s, "step": step.label, "settle_s": step.settle_s, **step.figures,
                     "handovers": len(step.handovers)}
            if step.settle_s is not None:
                span = end - step.at_s - step.settle_s
                peers = max(1, step.figures.get("peers", 1))
                entry["messages_per_peer_per_s"] = {family: round(count / span / peers, 2)
                                                    for family, count in sorted(step.messages.items())} if span > 0 else {}
            steps.append(entry)
        return {"scale_out_steps": steps, "scale_out_problems": getattr(self, "_problems", [])}


def _label(fault: Any) -> str:
    if fault.kind == "join":
        return f"join {fault.count}"
    return f"leave {fault.pick or len(fault.nodes or ())}"
