"""Peer-to-peer rebalancing messages (kinds 80-89): catch-up checks, master handovers and
releasing retired replicas.

- `CatchUpQuery` (replica -> live master): "here are my version vectors for these shards
  of yours". The master answers with a `CatchUpReply` per shard: how many events the
  replica still lacks and whether it now counts toward acks (`ready`).
- `HandoverPrepare` (master -> successor): the master has stopped sequencing the shard and
  wants the successor to take it; the successor queries at once and pulls what it lacks.
- `HandoverDone` (master -> successor and replicas): the `MasterElected(epoch + 1)` event
  naming the successor, and the replicas the old master had confirmed caught up (the new
  master inherits them, so quorum writes do not wait for every replica to ask again).
- `ReleaseQuery` / `ReleaseReply` (a retired replica -> each member of the shard's new
  set): may the retired replica drop the shard? See `protocol/retire.py`.
- `RateHints` (any peer -> a random peer): per-shard write rates, soft state that lets
  masters balance load (`protocol/load_hints.py`); a wrong hint only balances worse.

Like every message these are frozen dataclasses checked field by field by the codec.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshstream.envelope import Event
from meshstream.wire.replication_messages import StreamVector
from meshstream.wire.schema import message, record

QUERY_SHARDS_MAX = 4096  # shards named in one query: a peer replicates far fewer


@record
@dataclass(frozen=True, slots=True)
class ShardEpoch:
    shard: int
    epoch: int  # the master epoch the asker saw; a stale one is answered "not ready"

    def __post_init__(self) -> None:
        if self.shard < 0 or self.epoch < 1:
            raise ValueError("a shard epoch needs shard >= 0 and epoch >= 1")


@record
@dataclass(frozen=True, slots=True)
class ShardProgress:
    shard: int
    epoch: int
    events_behind: int  # events the master holds that the asker lacks; -1: not the master
    ready: bool  # the asker now counts toward quorum/all acks of this shard


@message(80)
@dataclass(frozen=True, slots=True)
class CatchUpQuery:
    shards: tuple[ShardEpoch, ...]
    vectors: tuple[StreamVector, ...]  # the asker's vectors for every stream of those shards

    def __post_init__(self) -> None:
        if not 1 <= len(self.shards) <= QUERY_SHARDS_MAX:
            raise ValueError(f"a query names 1-{QUERY_SHARDS_MAX} shards")


@message(81)
@dataclass(frozen=True, slots=True)
class CatchUpReply:
    progress: tuple[ShardProgress, ...]


@message(82)
@dataclass(frozen=True, slots=True)
class HandoverPrepare:
    shard: int
    epoch: int  # the master's current epoch; the successor will master epoch + 1


@message(83)
@dataclass(frozen=True, slots=True)
class HandoverDone:
    shard: int
    election: Event  # the $topology event of MasterElected(shard, successor, epoch + 1)
    ready: tuple[str, ...]  # replicas confirmed caught up by the old master


@message(84)
@dataclass(frozen=True, slots=True)
class ReleaseQuery:
    """A peer that left these shards' replica sets asks a member of the new set whether
    it durably holds everything the asker holds (`vectors`: the asker's, per stream)."""

    shards: tuple[int, ...]
    vectors: tuple[StreamVector, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.shards) <= QUERY_SHARDS_MAX or any(shard < 0 for shard in self.shards):
            raise ValueError(f"a release query names 1-{QUERY_SHARDS_MAX} shards >= 0")


@message(85)
@dataclass(frozen=True, slots=True)
class ReleaseReply:
    covered: tuple[int, ...]  # the asked shards this member covers: caught up, holding all the asker has


@record
@dataclass(frozen=True, slots=True)
class ShardRate:
    shard: int
    epoch: int  # the master epoch the rate was measured in
    stamp: int  # the measuring master's clock, in ms: newer wins within one epoch
    rate_milli: int  # events/s sequenced, x1000

    def __post_init__(self) -> None:
        if self.shard < 0 or self.epoch < 1 or self.stamp < 0 or self.rate_milli < 0:
            raise ValueError("a shard rate needs shard >= 0, epoch >= 1, stamp >= 0, rate >= 0")


@message(86)
@dataclass(frozen=True, slots=True)
class RateHints:
    """Soft state for load-aware master balancing: the sender's table of per-shard write
    rates, as measured by each shard's master (gossiped to one random peer at a time)."""

    rates: tuple[ShardRate, ...]

    def __post_init__(self) -> None:
        if len(self.rates) > QUERY_SHARDS_MAX:
            raise ValueError(f"rate hints name at most {QUERY_SHARDS_MAX} shards")
