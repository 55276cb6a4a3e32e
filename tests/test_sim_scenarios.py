"""Every shipped scenario, run twice with its seed: the same trace digest, and it passes.

These drive the real node (meshstream.protocol.node.Node over MemoryStore). The whole set
takes minutes on 2 cores (join-500 alone over ten), so only FAST runs by default; the rest
are marked slow (`pytest -m slow tests/test_sim_scenarios.py`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simulations.runner import Simulation
from simulations.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "simulations" / "scenarios"
FAST = {"smoke", "master-crash-return"}


def _params():
    for path in sorted(SCENARIOS.glob("*.toml")):
        marks = [] if path.stem in FAST else [pytest.mark.slow]
        yield pytest.param(path, id=path.stem, marks=marks)


def test_every_required_scenario_is_shipped():
    names = {path.stem for path in SCENARIOS.glob("*.toml")}
    required = {"smoke", "master-crash-return", "partition-heal", "flapping-link", "join-500",
                "master-crash-all-acks", "master-crash-master-acks", "partition-2-3-writers-both-sides",
                "crash-during-catchup"}
    assert required <= names, sorted(required - names)


@pytest.mark.parametrize("path", list(_params()))
def test_scenario_is_deterministic_and_passes(path):
    pytest.importorskip("meshstream.protocol.node")
    pytest.importorskip("meshstream.store.memory")
    scenario = load_scenario(path)
    first = Simulation(scenario).run()
    second = Simulation(scenario).run()
    assert first.trace_digest == second.trace_digest, f"seed {first.seed}: digests differ"
    assert (first.acked, first.messages, first.bytes) == (second.acked, second.messages, second.bytes)
    assert first.ok, f"seed {first.seed}: {first.checks} {first.details['problems']}"
