"""The per-probe, per-suspicion and per-relay records that `membership` keeps, its probe
order, the host contract (`MembershipHost`) and small helpers.

Plain slotted dataclasses and one small class, apart so that the SWIM logic in
`membership` stays one module.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from meshstream.envelope import Event
from meshstream.protocol.effects import Effect
from topology.events import MemberFailed, TopologyFact, fact_of
from topology.fold import TopologyState

BACKUP_DECLARE_FACTOR = 2.0  # non-suspecters declare a failure only after twice the timeout


class MembershipHost(Protocol):
    """What membership needs from the node (see the contracts)."""

    def topology_view(self) -> TopologyState: ...

    def topology_events(self) -> Sequence[Event]: ...

    def publish_fact(self, fact: TopologyFact, now: float) -> tuple[Event, list[Effect]]: ...

    def absorb_topology(self, events: Sequence[Event], now: float) -> tuple[list[Event], list[Effect]]: ...


@dataclass(slots=True)
class Probe:
    target: str
    seq: int
    incarnation: int  # the target's incarnation when probed: a refutation since voids it
    direct_deadline: float  # after this, ask others to ping the target (PingReq)
    indirect_sent: bool = False
    acked: bool = False
    graces: int = 0  # verdicts put off because we ourselves were not running (membership._starved)


@dataclass(frozen=True, slots=True)
class Suspicion:
    incarnation: int
    started: float
    timeout: float  # suspicion_timeout_s(N) with N when the suspicion was first heard of
    mine: bool  # our own probe failed: we declare at the plain timeout
    event: Event | None = None  # our MemberSuspect event, re-sent to the suspect each period
    grace_s: float = 0.0  # once: the declaring tick came late, a refutation may be unread

    @property
    def deadline(self) -> float:
        return self.started + self.timeout * (1.0 if self.mine else BACKUP_DECLARE_FACTOR) + self.grace_s


@dataclass(frozen=True, slots=True)
class Relay:
    requester: str
    reply_address: str
    seq: int  # the requester's probe seq, echoed in the relayed Ack
    target: str
    expires: float


class ProbeOrder:
    """SWIM's randomized round robin of probe targets (SWIM section 4.3).

    Each round visits every live peer once, in a fresh random order; a peer that is no
    longer live when its turn comes is skipped without spending a period. A peer learned
    mid-round goes to a uniformly random place in the rest of the round, so a newcomer is
    probed within one round, like everyone else.
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._order: list[str] = []
        self._index = 0
        self._in_round: set[str] = set()

    def next(self, is_live: Callable[[str], bool], live_peers: Callable[[], list[str]]) -> tuple[str | None, bool]:
        """(the next live target or None when nobody is live, whether a new round began)."""
        renewed = False
        for _ in range(2):
            while self._index < len(self._order):
                peer = self._order[self._index]
                self._index += 1
                if is_live(peer):
                    return peer, renewed
            order = live_peers()
            self._rng.shuffle(order)
            self._order, self._index, self._in_round = order, 0, set(order)
            renewed = True
        return None, renewed

    def add(self, peer: str) -> None:
        """Put a peer learned mid-round at a random place in the rest of the round."""
        if peer in self._in_round:
            return
        position = self._rng.randint(self._index, len(self._order))
        self._order.insert(position, peer)
        self._in_round.add(peer)


def starved(probe: Probe, due: float, now: float, grace_s: float) -> bool:
    """Lifeguard's point: a slow prober accuses the healthy. A tick `grace_s` or more past
    `due` means we were not running when the answer was due; it may be waiting unread, so
    (twice per probe at most) the caller puts its verdict off by `grace_s` for inputs to be
    read first. Never in the simulator, whose ticks come on time."""
    if probe.graces >= 2 or now - due < grace_s:
        return False
    probe.graces += 1
    return True


def sample_peers(rng: random.Random, peers: Sequence[str], count: int, exclude: tuple[str, ...]) -> list[str]:
    """Up to `count` of `peers` (sorted) but `exclude`, at random; all of them if that few."""
    others = [peer for peer in peers if peer not in exclude]
    return others if len(others) <= count else rng.sample(others, count)


def failed_events_about(events: Sequence[Event], peer: str, incarnation: int, count_max: int) -> tuple[Event, ...]:
    """Up to `count_max` of `events` declaring `peer` failed at `incarnation`."""
    found: list[Event] = []
    for event in events:
        fact = fact_of(event)
        if isinstance(fact, MemberFailed) and fact.peer == peer and fact.incarnation == incarnation:
            found.append(event)
            if len(found) >= count_max:
                break
    return tuple(found)
