"""What the sans-IO node asks its driver to do.

The node's entry points return lists of these effects; the driver (the trio runtime or
the simulator) carries them out in order:

- `Send(peer, message)`: deliver a message to a peer by name (the driver finds the address
  from the topology view, `Node.address_of`). Best effort: it may be lost.
- `SendTo(address, message)`: deliver to an address whose peer name is not known yet
  (seeds when joining).
- `Persist(token, events)`: make the events durable (`EventStore.append_batch(events,
  on_conflict="resolve")`, one fsync), then call `Node.persisted(token, now)`. A crash
  before that loses them; the node never acknowledges a write before `persisted`. Several
  Persists may share one group commit (`take_group_commit`). `events` may be an
  `EnvelopeRun` (a tuple otherwise).
- `Reply(client, message)`: answer a client connection.
- `Deliver(stream, events)`: these events are now stored here; wake followers of `stream`.
- `Journal(kind, text)`: a decision worth recording (election, failure declared, ...);
  the simulator puts it on its timeline and the runtime logs it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

from meshstream.envelope import Event
from meshstream.envelope_run import EnvelopeRun


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
    events: Sequence[Event]  # a tuple, or an EnvelopeRun


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


def take_group_commit(pending: deque[Persist], events_max: int) -> tuple[list[Persist], Sequence[Event]]:
    """The next group commit from the front of `pending`: (the Persists taken, the events
    to hand to `store.prepare_batch`). Persists go in order, at least one and then while
    their events fit in `events_max`. When they are runs that continue one another (a
    master's pushes of one stream, a catch-up's batches) the store gets them as one
    `EnvelopeRun` and decides it whole without building its events; otherwise it gets
    every event (a run's built on the way)."""
    batch = [pending.popleft()]
    count = len(batch[0].events)
    while pending and count + len(pending[0].events) <= events_max:
        batch.append(pending.popleft())
        count += len(batch[-1].events)
    runs = [persist.events for persist in batch]
    if all(type(run) is EnvelopeRun for run in runs) and all(map(EnvelopeRun.continued_by, runs, runs[1:])):
        return batch, runs[0] if len(runs) == 1 else EnvelopeRun.joined(runs)
    return batch, [event for persist in batch for event in persist.events]
