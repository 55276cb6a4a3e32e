"""Rate hints (meshstream/protocol/load_hints.py): a master publishes a shard's rate only
over a full window, and a window never spans a handover of the shard (the move itself
would skew the rate the balancer then acts on)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from meshstream.protocol.load_hints import RATE_WINDOW_S, LoadHints

INTERVAL_S = 0.2


@dataclass
class Counts:
    sequenced: int = 0

    def get(self, writer: str) -> int:
        return self.sequenced if writer == "me" else 0


@dataclass
class FakeTopology:
    shards: int = 2
    version: int = 0

    def master(self, shard: int) -> tuple[str, int]:
        return ("me", 3)

    def live_peers(self) -> list[str]:
        return ["me", "p2"]


@dataclass
class FakeNode:
    name: str = "me"
    writer: str = "me"
    topology: FakeTopology = field(default_factory=FakeTopology)
    counts: Counts = field(default_factory=Counts)
    rng: random.Random = field(default_factory=lambda: random.Random(5))

    @property
    def store(self) -> "FakeNode":
        return self

    def version_vector(self, stream: str) -> Counts:
        return self.counts

    def streams_in(self, shard: int) -> list[str]:
        return ["s"] if shard == 0 else []


def run(hints: LoadHints, node: FakeNode, start: float, seconds: float, rate_per_s: float,
        paused: tuple[int, ...] = ()) -> float:
    now = start
    for _ in range(round(seconds / INTERVAL_S)):
        now += INTERVAL_S
        node.counts.sequenced = round(now * rate_per_s)
        hints.tick(now, [0, 1], paused)
    return now


def test_a_rate_is_published_only_over_a_full_window() -> None:
    node = FakeNode()
    hints = LoadHints(node)  # type: ignore[arg-type]
    now = run(hints, node, 0.0, RATE_WINDOW_S - 1.0, 2.0)
    assert hints.rates() == {}, "published before a full window"
    run(hints, node, now, 1.5, 2.0)
    assert hints.rates() == {0: 2.0}


def test_a_handover_in_flight_restarts_the_window() -> None:
    node = FakeNode()
    hints = LoadHints(node)  # type: ignore[arg-type]
    now = run(hints, node, 0.0, RATE_WINDOW_S + 1.0, 2.0)
    assert hints.rates() == {0: 2.0}
    version = hints.version
    now = run(hints, node, now, 2.0, 0.0, paused=(0,))  # paused: nothing sequenced, nothing measured
    now = run(hints, node, now, RATE_WINDOW_S - 1.0, 1.0)
    assert hints.rates() == {0: 2.0} and hints.version == version, "a window spanning the pause was published"
    run(hints, node, now, 1.5, 1.0)
    assert hints.rates() == {0: 1.0}
