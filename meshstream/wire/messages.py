"""Session and client-API messages (kinds 1-19).

Every connection starts with `Hello` from both sides. Clients then send requests carrying a
`request_id` of their choosing and get exactly one reply with the same id. Peer-to-peer
messages live in `membership_messages` (20-39) and `replication_messages` (40-79).

Error codes in replies (`code`), and whether the failure is *definite* (nothing was
written) or *indefinite* (the write may still spread):

| code | definite | meaning |
|---|---|---|
| invalid | yes | the request broke a rule (name, size, ack level) |
| key_conflict | yes | the key exists with other content |
| overloaded | yes | too many appends in flight; retry later |
| no_master | yes | no reachable master for the shard; nothing was written |
| quorum_unreachable | yes/no | too few live replicas: definite when refused up front |
| timeout | no | not acknowledged in time; it may still spread |
| unavailable | yes | the peer is leaving or not yet joined |
| not_replica | (reads) | this peer holds no copy of the stream; `detail` lists its replicas' addresses |

Route hints: the `detail` of a *successful* `AppendReply` (which has no error to explain)
may carry `route_hint(master, address, epoch)`: the stream's live master in the answering
peer's view, the address it advertises (what other machines dial) and its election epoch.
A client sends the stream's next appends straight to that peer instead of paying for the
forward through another. It is only a hint, in a field every version of the message
already has: an older peer leaves it empty, an older client never reads it, and a client
ignores anything that does not parse (`parse_route_hint`). The schema has no optional
fields (a decoder requires every field and refuses extra ones) and frames are stamped with
the protocol version, so a new field or a version bump would cut older clients off.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshstream import ids
from meshstream.clocks import Dot, VersionVector
from meshstream.envelope import Event
from meshstream.errors import LocalProtocolError
from meshstream.wire.schema import message, record

PROTOCOL_VERSION_MIN = 1
PROTOCOL_VERSION_MAX = 1
ACK_LEVELS = ("master", "quorum", "all")
ROLES = ("peer", "client")
ROUTE_HINT_WORD = "route"  # a successful AppendReply's detail: "route PEER ADDRESS EPOCH"


@message(1)
@dataclass(frozen=True, slots=True)
class Hello:
    mesh: str  # a peer refuses a Hello for another mesh
    peer: str  # the sender's peer name ("" for a client)
    role: str  # "peer" or "client"
    address: str  # where the sender can be dialled ("" for a client)
    version_min: int
    version_max: int
    nonce: bytes  # 16 random bytes; both nonces seed the frame MAC's per-connection key

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        if len(self.nonce) != 16:
            raise ValueError("nonce must be 16 bytes")


@record
@dataclass(frozen=True, slots=True)
class AppendItem:
    key: bytes
    data: bytes
    metadata: dict[str, str | int | bytes]


@message(2)
@dataclass(frozen=True, slots=True)
class AppendRequest:
    request_id: int
    stream: str
    items: tuple[AppendItem, ...]
    ack: str  # "master" | "quorum" | "all"

    def __post_init__(self) -> None:
        if self.ack not in ACK_LEVELS:
            raise ValueError(f"ack must be one of {ACK_LEVELS}")


@record
@dataclass(frozen=True, slots=True)
class Appended:
    key: bytes
    dot: Dot
    digest: bytes
    duplicate: bool  # the key existed with the same content: this is the original


@message(3)
@dataclass(frozen=True, slots=True)
class AppendReply:
    request_id: int
    appended: tuple[Appended, ...]  # one per item, in request order, when ok
    code: str  # "" when ok, else an error code from the table above
    detail: str
    definite: bool  # for errors: True when nothing was written


@message(4)
@dataclass(frozen=True, slots=True)
class ReadRequest:
    request_id: int
    stream: str
    cursor: VersionVector  # the events already seen
    limit: int
    wait_s: float  # > 0: if nothing is new, wait up to this long for events (follow)


@message(5)
@dataclass(frozen=True, slots=True)
class ReadReply:
    request_id: int
    events: tuple[Event, ...]  # in canonical order, none of them in the request's cursor
    cursor: VersionVector  # the request's cursor with these events added
    code: str
    detail: str


@message(6)
@dataclass(frozen=True, slots=True)
class StatusRequest:
    request_id: int


@message(7)
@dataclass(frozen=True, slots=True)
class StatusReply:
    request_id: int
    status_json: str  # a JSON document for people and scripts (see `meshstream status`)


@message(8)
@dataclass(frozen=True, slots=True)
class TopologyRequest:
    request_id: int


@message(9)
@dataclass(frozen=True, slots=True)
class TopologyReply:
    request_id: int
    events: tuple[Event, ...]  # the $topology stream in canonical order
    view_json: str  # the view those events fold to


@message(10)
@dataclass(frozen=True, slots=True)
class ErrorReply:
    request_id: int
    code: str
    detail: str


def route_hint(master: str, address: str, epoch: int) -> str:
    """The `detail` of a successful AppendReply naming the stream's master ("" when the
    address would not survive the round trip: it must be one word)."""
    if not address or len(address.split()) != 1:
        return ""
    return f"{ROUTE_HINT_WORD} {master} {address} {epoch}"


def parse_route_hint(detail: str) -> tuple[str, str, int] | None:
    """(master, address, epoch) from a successful AppendReply's `detail`, or None when it
    holds no well-formed hint (an older peer's empty detail, or anything else)."""
    words = detail.split(" ")
    if len(words) != 4 or words[0] != ROUTE_HINT_WORD or not words[3].isdigit() or len(words[3]) > 18:
        return None
    try:
        ids.validate_peer_name(words[1])
        ids.parse_address(words[2])
    except LocalProtocolError:
        return None
    return words[1], words[2], int(words[3])
