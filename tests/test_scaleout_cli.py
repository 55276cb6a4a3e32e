"""`meshstream status` rendering of moving shards and `run` defaults (no peers needed)."""

from __future__ import annotations

from meshstream import cli


def _status(name: str, catching_up=(), handovers=()) -> dict:
    return {"name": name, "address": "127.0.0.1:1", "members": [], "streams": [],
            "rebalance": {"catching_up": list(catching_up), "handovers": list(handovers), "handovers_done": 0,
                          "draining": False, "departed": False}}


def test_progress_bar_fills_with_the_fraction_done() -> None:
    assert cli.progress_bar(0.0, 10) == "[----------]"
    assert cli.progress_bar(0.5, 10) == "[#####-----]"
    assert cli.progress_bar(1.7, 10) == "[##########]"


def test_moving_text_lists_catch_ups_and_handovers_of_every_peer() -> None:
    statuses = [
        _status("n4", catching_up=[{"shard": 7, "master": "n1", "epoch": 2, "events_left": 250,
                                    "events_total": 1000, "rate_per_s": 500.0}]),
        _status("n1", handovers=[{"shard": 3, "to": "n5", "epoch": 1}]),
    ]
    text = cli.moving_text(statuses)
    lines = text.splitlines()
    assert lines[0] == "moving shards: 2"
    catch_up = next(line for line in lines if "catch-up" in line)
    assert "n1" in catch_up and "n4" in catch_up and " 75%" in catch_up and "250" in catch_up
    assert "0.5s" in catch_up  # 250 events left at 500/s
    assert "[" + "#" * 18 + "-" * 6 + "]" in catch_up
    handover = next(line for line in lines if "handover" in line)
    assert handover.split()[:4] == ["3", "handover", "n1", "n5"]


def test_moving_text_says_settled_when_nothing_moves() -> None:
    assert cli.moving_text([_status("n1")]) == "moving shards: none (placement settled)"
    assert "moving shards: none" in cli.status_text(_status("n1"))


def test_watch_frame_has_a_headline_and_the_table() -> None:
    status = _status("n1")
    status["members"] = [{"peer": "n1", "status": "alive"}, {"peer": "n2", "status": "left"}]
    status["shards"] = 512
    frame = cli.watch_text(status, [status], 0.0)
    assert frame.splitlines()[0].startswith("meshstream status --watch  via n1  live peers 1/2  shards 512")
    assert "\x1b" not in frame  # the clear-screen prefix is added by the loop, not the renderer


def test_run_defaults_are_sized_for_up_to_500_peers() -> None:
    args = cli.build_parser().parse_args(["run", "--name", "n1", "--listen", "127.0.0.1:1", "--data", "/tmp/x"])
    assert args.shards is None and args.replication_factor is None
    assert cli.RUN_SHARDS_DEFAULT >= 256 and cli.RUN_REPLICATION_FACTOR_DEFAULT == 3
