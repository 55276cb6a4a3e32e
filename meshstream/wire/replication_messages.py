"""Peer-to-peer replication messages (kinds 40-79): the write path and anti-entropy.

Write path (DESIGN section 2):
- `ForwardAppend` / `ForwardReply`: a peer that is not a shard's master hands a client's
  append to the master it knows and relays the answer.
- `Replicate` / `ReplicateAck`: the master pushes newly sequenced events to the shard's
  other replicas; each acknowledges once the events are durable there.

Anti-entropy (DESIGN section 3), one push-pull round between A and B:
0. A -> B `SyncSummary`: one 16-byte digest of the shard digests of every shard either
   holds, and the `$topology` digest. When both agree (the usual round: peers in sync),
   this 40-byte message is the whole round, whatever the number of shards or events.
   Otherwise B answers with a `SyncOffer` of its own, and the round goes on from A's side.
1. A -> B `SyncOffer`: a 16-byte digest per shard both may hold, and one for `$topology`.
2. B -> A `SyncPull`: for differing shards B replicates, B's per-stream version vectors
   ("send me what I lack"), and `answer_shards`: shards where A should pull from B.
3. A -> B `SyncEvents` (what B lacks) and, when asked, A -> B `SyncPull` for A's side;
   B answers that with `SyncEvents`. `more=True` means a batch was cut at its bound: the
   receiver starts another round with the same partner once the batch is durable.
4. Catch-up (kinds 47-48): a cut batch is continued with `SyncContinue` (a SyncPull of the
   same shards, answered with batches of up to `CATCHUP_BATCH_EVENTS_MAX` events), and
   batches travel as `SyncEnvelopes` (raw envelopes, checked and decoded in bulk). Peers
   still accept `SyncEvents`.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshstream.clocks import Dot, VersionVector
from meshstream.envelope import Event
from meshstream.wire.messages import ACK_LEVELS, AppendItem, Appended
from meshstream.wire.schema import EventBatch, message, record

SHARD_DIGEST_BYTES = 16  # store.shard_digest's size; also the $topology digest
TOPOLOGY_HOLES_MAX = 4096  # dots named as lacking in one pull; beyond, the vector is lowered
FORWARD_HOPS_MAX = 4  # a forward bounced between peers with stale views stops here
# Events in one answer to a SyncContinue: a returning peer far behind pays one pull, one
# decode pass and one fsync (~4 ms here) per batch; 2048 x 300-byte events is ~0.6 MiB,
# under the 4 MiB batch bytes bound. Not more: the batch is taken in one go on the event
# loop (~30 ms), and probes wait behind it.
CATCHUP_BATCH_EVENTS_MAX = 2048


@record
@dataclass(frozen=True, slots=True)
class ShardDigest:
    shard: int
    digest: bytes

    def __post_init__(self) -> None:
        if self.shard < 0 or len(self.digest) != SHARD_DIGEST_BYTES:
            raise ValueError("a shard digest needs a shard >= 0 and 16 digest bytes")


@record
@dataclass(frozen=True, slots=True)
class StreamVector:
    stream: str
    vector: VersionVector


@message(40)
@dataclass(frozen=True, slots=True)
class ForwardAppend:
    forward_id: int  # chosen by the forwarding peer; echoed in ForwardReply
    stream: str
    items: tuple[AppendItem, ...]
    ack: str
    hops: int

    def __post_init__(self) -> None:
        if self.ack not in ACK_LEVELS:
            raise ValueError(f"ack must be one of {ACK_LEVELS}")
        if not 0 <= self.hops <= FORWARD_HOPS_MAX:
            raise ValueError(f"hops must be 0..{FORWARD_HOPS_MAX}")


@message(41)
@dataclass(frozen=True, slots=True)
class ForwardReply:
    forward_id: int
    appended: tuple[Appended, ...]
    code: str  # as AppendReply.code, plus "not_master": ask again after the view settles
    detail: str
    definite: bool


@message(42)
@dataclass(frozen=True, slots=True)
class Replicate:
    push_id: int  # chosen by the master; echoed in ReplicateAck
    events: EventBatch  # events decoded in one pass: an EnvelopeRun, or a tuple


@message(43)
@dataclass(frozen=True, slots=True)
class ReplicateAck:
    push_id: int


@message(44)
@dataclass(frozen=True, slots=True)
class SyncOffer:
    round_id: int
    digests: tuple[ShardDigest, ...]
    topology_digest: bytes

    def __post_init__(self) -> None:
        if len(self.topology_digest) != SHARD_DIGEST_BYTES:
            raise ValueError("topology_digest must be 16 bytes")


@message(49)
@dataclass(frozen=True, slots=True)
class SyncSummary:
    """The first message of a round: `summary` digests the shard digests of the shards
    either peer holds, in the sender's view (the same shards in the receiver's when the
    `$topology` digests agree: the view is a fold of that stream)."""

    round_id: int
    summary: bytes
    topology_digest: bytes

    def __post_init__(self) -> None:
        if len(self.summary) != SHARD_DIGEST_BYTES or len(self.topology_digest) != SHARD_DIGEST_BYTES:
            raise ValueError("summary and topology_digest must be 16 bytes")


@message(45)
@dataclass(frozen=True, slots=True)
class SyncPull:
    round_id: int
    shards: tuple[int, ...]  # send me what I lack in these shards...
    vectors: tuple[StreamVector, ...]  # ...given these vectors (absent streams: empty)
    topology: VersionVector | None  # and in $topology given this vector, when not None...
    topology_holes: tuple[Dot, ...]  # ...except these dots below it, which I lack
    answer_shards: tuple[int, ...]  # please pull these shards from me
    answer_topology: bool  # please pull $topology from me

    def __post_init__(self) -> None:
        if len(self.topology_holes) > TOPOLOGY_HOLES_MAX:
            raise ValueError(f"at most {TOPOLOGY_HOLES_MAX} topology holes")


@message(46)
@dataclass(frozen=True, slots=True)
class SyncEvents:
    round_id: int
    events: tuple[Event, ...]
    more: bool  # the batch was cut at its bound: sync again once these are durable


@message(47)
@dataclass(frozen=True, slots=True)
class SyncContinue(SyncPull):
    """A pull that continues a batch cut at its bound: the puller is far behind (catch-up).
    Answered like a SyncPull but with up to `CATCHUP_BATCH_EVENTS_MAX` events (the batch
    bytes bound still holds), so a returning peer pays one pull and one fsync per few
    thousand events, not per `anti_entropy_batch_events_max`. `answer_*` are unused."""


@message(48)
@dataclass(frozen=True, slots=True)
class SyncEnvelopes(SyncEvents):
    """`SyncEvents` with each event as its envelope bytes, as the store holds them: the
    sender forwards them without re-encoding, and the receiver checks and decodes the
    whole batch in one pass (`wire.envelope_batch.decode_envelopes`: every digest and
    field, as `decode_event` does). A SyncEnvelopes is a SyncEvents to the dispatcher;
    `events` holds bytes until decoded."""

    events: tuple[bytes, ...]  # type: ignore[assignment]
