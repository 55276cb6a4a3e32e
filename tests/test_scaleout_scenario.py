"""`meshstream simulate` reports scale-out itself: the compact many-streams workload, the
scale-out expect keys (validated, named in errors) and their checkers, and the settle time
of each step in the JSON report (simulations/scaleout.py, scenario.py, checkers.py)."""

from __future__ import annotations

import json

import pytest

from meshstream.errors import ConfigError
from simulations.runner import Simulation, main
from simulations.scenario import load_scenario, parse_scenario

SMALL = """
name = "scale-out-small"
seed = 3
duration_s = 45

[cluster]
nodes = 2
replication_factor = 3
shards = 32

[[workload]]
streams = 40
stream_prefix = "s"
rate_per_s = 2
start_s = 1
stagger_s = 1
stop_s = 40
reader = false

[[fault]]
at_s = 8
kind = "join"
count = 3

[[fault]]
at_s = 18
kind = "join"
count = 4

[[fault]]
at_s = 28
kind = "leave"
nodes = ["live"]
pick = 3

[expect]
no_acked_loss = true
no_duplicates = true
placement_converged = true
masters_balanced = true
replicas_dropped = true
step_settle_s_max = {settle}
"""


def test_many_streams_in_one_workload() -> None:
    scenario = parse_scenario(SMALL.format(settle=10))
    names = [w.stream for w in scenario.workloads]
    assert names == [f"s{i:02d}" for i in range(40)]
    assert scenario.workloads[0].start_s == 1 and scenario.workloads[20].start_s == 1.5
    assert all(w.rate_per_s == 2 and w.stop_s == 40 and not w.reader for w in scenario.workloads)


@pytest.mark.parametrize("old, new, named", [
    ('stream_prefix = "s"\n', "", "workload[0].stream_prefix: required"),
    ("streams = 40", "streams = 0", "workload[0].streams: must be within"),
    ("streams = 40", 'streams = 40\nstream = "x"', "workload[0].stream: give either"),
    ("masters_balanced = true", "masters_balanced = 1", "expect.masters_balanced: must be true or false"),
    ("step_settle_s_max = 10", "step_settle_s_max = -1", "expect.step_settle_s_max: must be within"),
    ("replicas_dropped = true", 'replicas_dropped = "yes"', "expect.replicas_dropped"),
    ("replicas_dropped = true", "replicas_dropped = true\nsettled_everything = true", "expect.settled_everything: unknown"),
])
def test_bad_scale_out_keys_are_named(old: str, new: str, named: str) -> None:
    text = SMALL.format(settle=10)
    assert old in text
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        parse_scenario(text.replace(old, new))


def test_simulate_reports_the_scale_out_checks_and_settle_times(tmp_path, capsys) -> None:
    path = tmp_path / "scale-out-small.toml"
    path.write_text(SMALL.format(settle=10))
    assert main([str(path), "--json"]) == 0, capsys.readouterr().out[-3000:]
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    for check in ("placement_converged", "masters_balanced", "replicas_dropped", "step_settle_s_max"):
        assert report["checks"][check] is True, f"seed=3: {check}: {report['problems']}"
    steps = report["scale_out_steps"]
    assert [s["step"] for s in steps] == ["2 peers", "join 3", "join 4", "leave 3"]
    assert all(0 < s["settle_s"] <= 10 for s in steps), f"seed=3: {steps}"
    assert [s["peers"] for s in steps] == [2, 5, 9, 6]
    assert all(s["capacity_closed_vs_linear"] > 0 and s["messages_per_peer_per_s"] for s in steps)


def test_an_impossible_settle_time_fails() -> None:
    result = Simulation(parse_scenario(SMALL.format(settle=0.01))).run()
    assert result.checks["step_settle_s_max"] is False and not result.ok, "seed=3"
    assert result.checks["replicas_dropped"] is True


def test_the_scale_out_scenario_file_is_compact_and_valid() -> None:
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "simulations" / "scenarios" / "scale-out.toml"
    assert len(path.read_text().splitlines()) < 80
    scenario = load_scenario(path)
    assert len(scenario.workloads) == 200
    expect = scenario.expect
    assert expect.placement_converged and expect.masters_balanced and expect.replicas_dropped
    assert expect.step_settle_s_max is not None
