"""The per-probe, per-suspicion and per-relay records that `membership` keeps.

Plain slotted dataclasses, apart so that the SWIM logic in `membership` stays one module.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshstream.envelope import Event

BACKUP_DECLARE_FACTOR = 2.0  # non-suspecters declare a failure only after twice the timeout


@dataclass(slots=True)
class Probe:
    target: str
    seq: int
    incarnation: int  # the target's incarnation when probed: a refutation since voids it
    direct_deadline: float  # after this, ask others to ping the target (PingReq)
    indirect_sent: bool = False
    acked: bool = False


@dataclass(frozen=True, slots=True)
class Suspicion:
    incarnation: int
    started: float
    timeout: float  # suspicion_timeout_s(N) with N when the suspicion was first heard of
    mine: bool  # our own probe failed: we declare at the plain timeout
    event: Event | None = None  # our MemberSuspect event, re-sent to the suspect each period

    @property
    def deadline(self) -> float:
        return self.started + self.timeout * (1.0 if self.mine else BACKUP_DECLARE_FACTOR)


@dataclass(frozen=True, slots=True)
class Relay:
    requester: str
    reply_address: str
    seq: int  # the requester's probe seq, echoed in the relayed Ack
    target: str
    expires: float
