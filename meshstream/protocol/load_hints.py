"""Per-shard write rates, gossiped as soft state, for load-aware master balancing.

Each master measures how many events it sequences per shard: the sum of its own writer's
counters in the store's vectors of the shard's streams, sampled once per gossip interval;
the rate is the growth over the last `RATE_WINDOW_S` (a window, not a per-interval
sample: at a few events/s an interval sees 0 or 1). A master publishes a shard's rate only
once it has measured a full window, and not while it hands the shard over (the window starts
again after), so a move never publishes a rate skewed by the move itself. It records `(epoch, stamp, rate)` in
its table, and every `GOSSIP_EVERY_INTERVALS` every peer sends its whole table to one
random live peer in a `RateHints`; a receiver keeps, per shard, the entry with the greater
(epoch, stamp) (stamps come from the shard's master alone, so they compare within an
epoch). The table reaches every peer in O(log N) rounds at one small message per peer per
round, whatever N.

`rates()` gives the table, quantized to `RATE_QUANTUM_PER_S` and changed only by more
than `RATE_HYSTERESIS` (or to or from idle), to `topology.election.balanced_masters`;
`version` changes only when such a rate does, so targets are recomputed only then. Hints never enter `$topology` and never decide
safety: a stale or forged rate can only make the balance worse, while placement, the
count cap and the catch-up rules of a handover hold whatever it says.
"""

from __future__ import annotations

from collections.abc import Container
from typing import TYPE_CHECKING

from meshstream.protocol.effects import Effect, Send
from meshstream.wire.rebalance_messages import QUERY_SHARDS_MAX, RateHints, ShardRate

if TYPE_CHECKING:
    from meshstream.protocol.node import Node

RATE_WINDOW_S = 10.0  # a rate is the growth over this long: steady enough at 1 event/s
GOSSIP_EVERY_INTERVALS = 2  # one RateHints per peer every 2 gossip intervals
RATE_QUANTUM_PER_S = 0.25  # rates handed to the balancer are multiples of this (noise moves nothing)
RATE_HYSTERESIS = 0.2  # ... and change only by more than 20% (or to or from idle)


class LoadHints:
    def __init__(self, node: "Node") -> None:
        self.node = node
        self._table: dict[int, ShardRate] = {}
        self._samples: dict[int, list[tuple[float, int]]] = {}  # mastered shard -> (time, sequenced) oldest first
        self._ticks = 0
        self._quantized: dict[int, float] = {}
        self.version = 0
        self._others: tuple[object, int, list[str]] = (None, -1, [])  # (view, version, live peers but me)

    def tick(self, now: float, mastered: list[int], paused: Container[int] = ()) -> list[Effect]:
        """Once per gossip interval: measure the shards mastered here but not `paused` (being
        handed over: a window with the pause in it would under-report), gossip now and then."""
        self._ticks += 1
        self._measure(now, [shard for shard in mastered if shard not in paused])
        if self._ticks % GOSSIP_EVERY_INTERVALS or not self._table:
            return []
        node = self.node
        topology = node.topology
        if self._others[0] is not topology or self._others[1] != topology.version:
            self._others = (topology, topology.version, [p for p in topology.live_peers() if p != node.name])
        others = self._others[2]
        if not others:
            return []
        entries = tuple(self._table[shard] for shard in sorted(self._table)[:QUERY_SHARDS_MAX])
        return [Send(node.rng.choice(others), RateHints(entries))]

    def _measure(self, now: float, mastered: list[int]) -> None:
        node = self.node
        writer = node.writer
        kept = set(mastered)
        for shard in [s for s in self._samples if s not in kept]:  # (a set: 256 shards each tick)
            del self._samples[shard]
        for shard in mastered:
            master = node.topology.master(shard)
            if master is None:
                continue
            sequenced = sum(node.store.version_vector(stream).get(writer) for stream in node.streams_in(shard))
            samples = self._samples.setdefault(shard, [])
            samples.append((now, sequenced))
            while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW_S:
                samples.pop(0)
            elapsed = now - samples[0][0]
            if elapsed < RATE_WINDOW_S:
                continue  # a fresh master: too short to say; the previous master's hint stands meanwhile
            rate = (sequenced - samples[0][1]) / elapsed
            self._merge(ShardRate(shard, master[1], int(now * 1000), int(round(rate * 1000))))

    def on_hints(self, src: str, hints: RateHints, now: float) -> list[Effect]:
        table = self._table
        for entry in hints.rates:
            # Most entries are the ones held here already (a table of every shard arrives
            # twice a gossip interval): those are passed over without a call of _merge.
            if _newer(entry, table.get(entry.shard)):
                self._merge(entry)
        return []

    def _merge(self, entry: ShardRate) -> None:
        shards = self.node.topology.shards
        if shards is None or entry.shard >= shards:
            return
        if not _newer(entry, self._table.get(entry.shard)):
            return
        self._table[entry.shard] = entry
        quantized = round(entry.rate_milli / 1000 / RATE_QUANTUM_PER_S) * RATE_QUANTUM_PER_S
        used = self._quantized.get(entry.shard, 0.0)
        if quantized != used and (not quantized or not used or abs(quantized - used) > RATE_HYSTERESIS * used):
            self._quantized[entry.shard] = quantized
            self.version += 1

    def rates(self) -> dict[int, float]:
        """Shard -> events/s (quantized) as far as this peer knows; absent: idle or unknown."""
        return {shard: rate for shard, rate in self._quantized.items() if rate > 0}


def _newer(entry: ShardRate, held: ShardRate | None) -> bool:
    """`entry` supersedes `held`: a greater (epoch, stamp), compared without building tuples."""
    return held is None or held.epoch < entry.epoch or (held.epoch == entry.epoch and held.stamp < entry.stamp)
