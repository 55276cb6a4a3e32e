"""What the sans-IO node asks its driver to do.

The node's entry points return lists of these effects; the driver (the trio runtime or
the simulator) carries them out in order:

- `Send(peer, message)`: deliver a message to a peer by name (the driver finds the address
  from the topology view, `Node.address_of`). Best effort: it may be lost.
- `SendTo(address, message)`: deliver to an address whose peer name is not known yet
  (seeds when joining).
- `Persist(token, events)`: make the events durable (`EventStore.append_batch(events,
  on_conflict="resolve")`, one fsync), then call `Node.persisted(token, now)`. A crash
  before that loses them; the node never acknowledges a write before `persisted`.
- `Reply(client, message)`: answer a client connection.
- `Deliver(stream, events)`: these events are now stored here; wake followers of `stream`.
- `Journal(kind, text)`: a decision worth recording (election, failure declared, ...);
  the simulator puts it on its timeline and the runtime logs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from meshstream.envelope import Event


@dataclass(frozen=True, slots=True)
class Send:
    peer: str
    message: Any


@dataclass(frozen=True, slots=True)
class SendTo:
    address: str
    message: Any


@dataclass(frozen=True, slots=True)
class Persist:
    token: int
    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class Reply:
    client: int
    message: Any


@dataclass(frozen=True, slots=True)
class Deliver:
    stream: str
    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class Journal:
    kind: str  # "joined" "suspect" "failed" "alive" "left" "elected" "conflict" "corrupt" ...
    text: str


Effect = Union[Send, SendTo, Persist, Reply, Deliver, Journal]
