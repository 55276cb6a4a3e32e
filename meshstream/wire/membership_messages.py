"""Membership messages (kinds 20-39): SWIM probes, joins, and gossip that rides on them.

Every probe message carries `gossip`: up to `Config.piggyback_updates_max` `$topology`
events from the sender's piggyback queue (SWIM's infection-style dissemination). The
receiver hands them to its host (`absorb_topology`) before acting on the message itself,
so an Ack is never sent to a peer the receiver has not heard of yet.

- `Ping(seq, target, reply_address)`: are you alive? `target` names the intended peer so a
  recycled address never acks for someone else; `reply_address` lets a receiver that does
  not know the sender yet answer anyway.
- `Ack(seq, target)`: `target` is alive. Sent by the target itself, or relayed by the
  peer that pinged it on someone's behalf (with the requester's `seq`).
- `PingReq(seq, target, reply_address)`: please ping `target` for me (indirect probe).
- `Join(member)`: a new peer's own `MemberJoined` event, sent to a seed address.
- `JoinReply(events, last)`: the seed's whole `$topology` stream, in bounded chunks.
- `Gossip()`: only the piggybacked events (a leaving peer's farewell, or the facts that
  tell a peer we hold as failed that it was declared so, so it can refute).
- `WhoAreYou()`: "I do not know you": the receiver answers with a `Gossip` carrying its own
  latest `MemberJoined` event (cheaper than a whole snapshot when gossip missed a join).

Kinds are append-only numbers: never reuse one for another meaning.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshstream.envelope import Event
from meshstream.ids import TOPOLOGY_STREAM
from meshstream.wire.schema import message

GOSSIP_EVENTS_HARD_MAX = 256  # per message; Config.piggyback_updates_max is the policy (8)
JOIN_REPLY_EVENTS_HARD_MAX = 10_000  # per chunk; Config.anti_entropy_batch_events_max is the policy
ADDRESS_CHARS_MAX = 300


def _check_gossip(events: tuple[Event, ...], limit: int) -> None:
    if len(events) > limit:
        raise ValueError(f"{len(events)} events in one message; at most {limit}")
    for event in events:
        if event.stream != TOPOLOGY_STREAM:
            raise ValueError(f"gossip may carry only {TOPOLOGY_STREAM} events, not {event.stream!r}")


def _check_seq(seq: int) -> None:
    if not 0 <= seq < 2**63:
        raise ValueError(f"seq must be 0..2^63-1, got {seq}")


def _check_address(address: str) -> None:
    if len(address) > ADDRESS_CHARS_MAX:
        raise ValueError(f"reply address longer than {ADDRESS_CHARS_MAX} characters")


@message(20)
@dataclass(frozen=True, slots=True)
class Ping:
    seq: int
    target: str
    reply_address: str
    gossip: tuple[Event, ...]

    def __post_init__(self) -> None:
        _check_seq(self.seq)
        _check_address(self.reply_address)
        _check_gossip(self.gossip, GOSSIP_EVENTS_HARD_MAX)


@message(21)
@dataclass(frozen=True, slots=True)
class Ack:
    seq: int
    target: str
    gossip: tuple[Event, ...]

    def __post_init__(self) -> None:
        _check_seq(self.seq)
        _check_gossip(self.gossip, GOSSIP_EVENTS_HARD_MAX)


@message(22)
@dataclass(frozen=True, slots=True)
class PingReq:
    seq: int
    target: str
    reply_address: str
    gossip: tuple[Event, ...]

    def __post_init__(self) -> None:
        _check_seq(self.seq)
        _check_address(self.reply_address)
        _check_gossip(self.gossip, GOSSIP_EVENTS_HARD_MAX)


@message(23)
@dataclass(frozen=True, slots=True)
class Join:
    member: Event  # the joiner's MemberJoined event; the handler checks it (fact_of)


@message(24)
@dataclass(frozen=True, slots=True)
class JoinReply:
    events: tuple[Event, ...]
    last: bool  # the final chunk of the seed's topology stream

    def __post_init__(self) -> None:
        _check_gossip(self.events, JOIN_REPLY_EVENTS_HARD_MAX)


@message(25)
@dataclass(frozen=True, slots=True)
class Gossip:
    gossip: tuple[Event, ...]

    def __post_init__(self) -> None:
        _check_gossip(self.gossip, GOSSIP_EVENTS_HARD_MAX)


@message(26)
@dataclass(frozen=True, slots=True)
class WhoAreYou:
    pass


MEMBERSHIP_MESSAGES = (Ping, Ack, PingReq, Join, JoinReply, Gossip, WhoAreYou)
