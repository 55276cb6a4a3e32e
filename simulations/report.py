"""Rendering a simulation `Result`: a readable timeline and summary, or one JSON object.

The timeline lists faults and the decisions peers journalled (elections, failures,
joins, conflicts, corruption), collapsing repeats of one decision by many peers into one
line with a count, then the convergence moments. The summary gives each check with
PASS/FAIL, the counts and the trace digest, and for a scale-out scenario a table of its
steps (settle time, capacity model, messages per peer per second).
"""

from __future__ import annotations

import json
from typing import Any

from simulations.scenario import Scenario

TIMELINE_LINES_MAX = 120  # beyond this the middle of the timeline is elided
QUIET_KINDS = ("alive", "suspect", "joined")  # routine membership chatter: counted, not listed


def render_json(result: Any) -> str:
    return json.dumps(result.to_json(), sort_keys=True)


def timeline_lines(result: Any) -> list[str]:
    lines: list[str] = []
    quiet: dict[str, int] = {}
    group: list[Any] = []
    for entry in result.timeline:
        if entry.kind in QUIET_KINDS:
            quiet[entry.kind] = quiet.get(entry.kind, 0) + 1
            continue
        if group and _group_key(group[0]) != _group_key(entry):
            lines.append(_group_line(group))
            group = []
        group.append(entry)
    if group:
        lines.append(_group_line(group))
    for name, label in (("membership_converged_at_s", "membership converged"),
                        ("single_master_at_s", "one master per shard")):
        at = result.details.get(name)
        if at is not None:
            lines.append(f"{at:9.3f}s  {'converged':<10} {label}")
    if result.converged_at_s is not None:
        lines.append(f"{result.converged_at_s:9.3f}s  {'converged':<10} replicas hold identical events")
    lines.sort(key=lambda line: float(line.split("s", 1)[0]))
    if quiet:
        lines.append("            (" + ", ".join(f"{n} {k} notes" for k, n in sorted(quiet.items())) + " not listed)")
    if len(lines) > TIMELINE_LINES_MAX:
        half = TIMELINE_LINES_MAX // 2
        lines = lines[:half] + [f"            ... {len(lines) - 2 * half} more ..."] + lines[-half:]
    return lines


def _group_key(entry: Any) -> tuple:
    """Decisions of one kind by one peer within 10 ms collapse into one line (16 elections)."""
    peer = entry.text.split(": ", 1)[0] if entry.kind != "fault" else entry.text
    return (round(entry.at_s, 2), entry.kind, peer)


def _group_line(group: list[Any]) -> str:
    first = group[0]
    more = f"  (+{len(group) - 1} more)" if len(group) > 1 else ""
    return f"{first.at_s:9.3f}s  {first.kind:<10} {first.text}{more}"


def render_text(result: Any, scenario: Scenario) -> str:
    out = [f"scenario {result.scenario}: {scenario.cluster.nodes} peers, {scenario.duration_s:g} s, "
           f"seed {result.seed}", "", "timeline:"]
    out.extend("  " + line for line in timeline_lines(result))
    out += ["", "checks:"]
    for name, passed in result.checks.items():
        out.append(f"  {'PASS' if passed else 'FAIL'}  {name}")
    if not result.checks:
        out.append("  (the scenario expects nothing)")
    details = result.details
    out += ["", "summary:",
            f"  acked {result.acked}  lost {result.lost} (exempt {details['lost_exempt']})  "
            f"duplicates {result.duplicates}  divergent replicas {result.divergent_replicas}",
            f"  writes sent {details['sent']}  definite failures {details['definite_failures']}  "
            f"indefinite {details['indefinite_failures']}  retries {details['retries']}",
            f"  elections {result.elections}  failover {details['failover_s']} s  "
            f"converged at {_seconds(result.converged_at_s)}",
            f"  messages {result.messages}  bytes {result.bytes}  dropped {details['dropped_messages']}  "
            f"persists lost {details['persists_lost']}",
            f"  trace digest {result.trace_digest}"]
    if details.get("scale_out_steps"):
        out += ["", "scale-out steps (capacity model x linear at the step's end, closed-loop / uniform):",
                f"  {'at s':>7}  {'step':<12} {'peers':>5} {'settle s':>9} {'closed':>7} {'uniform':>7}  msgs/peer/s"]
        for step in details["scale_out_steps"]:
            settle = "never" if step["settle_s"] is None else f"{step['settle_s']:.2f}"
            closed = step.get("plateau_capacity_closed_vs_linear", step.get("capacity_closed_vs_linear", "-"))
            uniform = step.get("plateau_capacity_uniform_vs_linear", step.get("capacity_uniform_vs_linear", "-"))
            out.append(f"  {step['at_s']:>7g}  {step['step']:<12} {step.get('peers', '-'):>5} {settle:>9} "
                       f"{closed:>7} {uniform:>7}  {step.get('messages_per_peer_per_s', '-')}")
    if details["problems"]:
        out += ["", "problems:"] + ["  " + problem for problem in details["problems"]]
    out += ["", "OK" if result.ok else "FAILED"]
    return "\n".join(out)


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.3f} s"
