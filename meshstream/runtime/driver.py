"""The driver: runs one sans-IO `Node` on trio and carries out its effects.

Inputs arrive synchronously from connection readers (`peer_message`, `client_request`);
each is fed to the node at `now = trio.current_time()` (so tests can use MockClock) and the
returned effects are executed at once:

- `Send(peer, m)`: queued on the outgoing link to `node.address_of(peer)` (or the address
  the peer announced in its Hello, for peers the topology does not list yet).
- `SendTo(address, m)`: queued on the link to that address.
- `Persist(token, events)`: queued for the group-commit task, which takes every pending
  Persist (up to `group_commit_events_max` events), prepares it on the trio thread, writes
  and fsyncs it in a worker thread (a slow disk never stalls probes), commits the indexes
  on the trio thread and then calls `node.persisted(token)` for each.
- `Reply(client, m)`: queued on that client's connection.
- `Deliver(stream, events)`: wakes the long-poll reads parked on `stream`.
- `Journal(kind, text)`: one log line.

A timer task sleeps until `node.next_deadline()` or until an input arrives, then calls
`node.tick(now)`, so ticks follow inputs (coalesced under load) and deadlines.

Long-poll reads (`ReadRequest.wait_s > 0`) are the driver's: the node always answers at
once; an empty answer is held back and the read re-run when a Deliver for the stream
arrives or the wait ends.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import deque
from typing import Any

import trio

from meshstream.config import Config
from meshstream.errors import RemoteProtocolError
from meshstream.protocol.effects import Deliver, Journal, Persist, Reply, Send, SendTo
from meshstream.runtime import trace
from meshstream.wire.messages import ReadReply, ReadRequest

log = logging.getLogger("meshstream.driver")

LONG_POLLS_MAX = 4096  # parked reads; beyond this a read is answered at once, empty
LONG_POLL_WAIT_S_MAX = 60.0  # a client asking for longer gets this
HANDOFF_WAIT_S_MAX = 15.0  # a leave waits this long for shard hand-offs (each gives up after 2 s)


class Driver:
    """Owns a Node and executes its effects. `run` inside a nursery, then feed it inputs."""

    def __init__(self, node: Any, store: Any, config: Config, links: Any) -> None:
        self.node = node
        self.store = store
        self.config = config
        self.links = links
        self.clients: dict[int, Any] = {}
        self.hello_addresses: dict[str, str] = {}
        self._next_client = 1
        self._followers: dict[str, trio.Event] = {}
        self._long_polls = 0
        self._pending_persists: deque[Persist] = deque()
        self._persist_ready = trio.Event()
        self._committing = False
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.stopping = False
        self._departed = trio.Event()  # set once a graceful leave has handed its shards off

    # -- lifecycle --

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.execute(self.node.start(trio.current_time()))
            nursery.start_soon(self._timer_loop)
            nursery.start_soon(self._commit_loop)
            task_status.started()

    async def leave(self, flush_timeout_s: float = 2.0) -> None:
        """Leave gracefully: hand mastered shards off, publish `left`, persist it, send
        what is queued. The timer task keeps ticking the node meanwhile."""
        self.stopping = True
        self.execute(self.node.leave(trio.current_time()))
        self._wake.set()
        with trio.move_on_after(HANDOFF_WAIT_S_MAX):
            await self._departed.wait()
        if not self.node.departed:
            log.warning("left before every shard was handed off (waited %.0f s)", HANDOFF_WAIT_S_MAX)
        await self.flush(flush_timeout_s)

    async def flush(self, timeout_s: float) -> None:
        with trio.move_on_after(timeout_s):
            while self._pending_persists or self._committing:
                await trio.sleep(0.005)
        await self.links.drain(timeout_s / 2)

    # -- inputs --

    def register_client(self, connection: Any) -> int:
        client = self._next_client
        self._next_client += 1
        self.clients[client] = connection
        return client

    def unregister_client(self, client: int) -> None:
        self.clients.pop(client, None)

    def peer_message(self, src: str, message: Any) -> None:
        if trace.ENABLED:
            trace.note(f"in {type(message).__name__} {src}")
        self.execute(self.node.receive(src, message, trio.current_time()))
        self._wake.set()

    def client_request(self, client: int, message: Any) -> None:
        if trace.ENABLED:
            trace.note(f"in {type(message).__name__}")
        if isinstance(message, ReadRequest) and message.wait_s > 0:
            self._read_or_park(client, message, trio.current_time() + min(message.wait_s, LONG_POLL_WAIT_S_MAX))
        else:
            self.execute(self.node.client_request(client, message, trio.current_time()))
        self._wake.set()

    # -- effects --

    def execute(self, effects: list[Any]) -> None:
        if self.stopping and self.node.departed:
            self._departed.set()
        if trace.ENABLED:
            _trace_effects(effects)
        for effect in effects:
            match effect:
                case Send(peer, message):
                    address = self.node.address_of(peer) or self.hello_addresses.get(peer)
                    if address:
                        self.links.send(address, message)
                    else:
                        log.debug("no address for peer %s; dropped %s", peer, type(message).__name__)
                case SendTo(address, message):
                    self.links.send(address, message)
                case Persist():
                    self._pending_persists.append(effect)
                    self._persist_ready.set()
                case Reply(client, message):
                    connection = self.clients.get(client)
                    if connection is not None:
                        connection.send_nowait(message)
                case Deliver(stream, _events):
                    waiters = self._followers.pop(stream, None)
                    if waiters is not None:
                        waiters.set()
                case Journal(kind, text):
                    log.info("%s: %s", kind, text)
                case _:
                    raise AssertionError(f"unknown effect {effect!r}")

    # -- long-poll reads --

    def _read_or_park(self, client: int, request: ReadRequest, deadline: float) -> None:
        effects = self.node.client_request(client, dataclasses.replace(request, wait_s=0.0), trio.current_time())
        held = [
            e
            for e in effects
            if isinstance(e, Reply)
            and e.client == client
            and isinstance(e.message, ReadReply)
            and e.message.request_id == request.request_id
            and not e.message.events
            and not e.message.code
        ]
        if held and trio.current_time() < deadline and self._long_polls < LONG_POLLS_MAX and self._nursery:
            effects = [e for e in effects if e is not held[0]]
            self._long_polls += 1
            self._nursery.start_soon(self._park, client, request, deadline)
        self.execute(effects)

    async def _park(self, client: int, request: ReadRequest, deadline: float) -> None:
        try:
            waiters = self._followers.setdefault(request.stream, trio.Event())
            with trio.move_on_at(deadline):
                await waiters.wait()
        finally:
            self._long_polls -= 1
        if client in self.clients:
            self._read_or_park(client, request, deadline if trio.current_time() < deadline else -math.inf)

    # -- timers and group commit --

    async def _timer_loop(self) -> None:
        while True:
            deadline = self.node.next_deadline()
            self._wake = trio.Event()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._wake.wait()
            # Yield once so inputs arriving together are answered by one tick.
            await trio.sleep(0)
            if trace.ENABLED:
                started = trace.cpu_s()
            self.execute(self.node.tick(trio.current_time()))
            if trace.ENABLED:
                trace.note(f"tick {(trace.cpu_s() - started) * 1000:.3f}")

    async def _commit_loop(self) -> None:
        while True:
            await self._persist_ready.wait()
            self._persist_ready = trio.Event()
            # Yield once: the input that queued this Persist usually queued pushes to the
            # replicas too, and their writers (woken with us) should reach the wire before
            # we lay the batch out (an ack=all write waits for the replicas' fsyncs).
            await trio.sleep(0)
            while self._pending_persists:
                batch = self._take_batch()
                self._committing = True
                try:
                    await self._commit(batch)
                finally:
                    self._committing = False

    def _take_batch(self) -> list[Persist]:
        batch: list[Persist] = []
        events = 0
        limit = self.config.group_commit_events_max
        while self._pending_persists and (not batch or events + len(self._pending_persists[0].events) <= limit):
            persist = self._pending_persists.popleft()
            events += len(persist.events)
            batch.append(persist)
        return batch

    async def _commit(self, batch: list[Persist]) -> None:
        events = [event for persist in batch for event in persist.events]
        if events:
            if trace.ENABLED:
                trace.note(f"fsync start {len(events)}")
            prepared = self.store.prepare_batch(events, on_conflict="resolve")
            await trio.to_thread.run_sync(self.store.write_prepared, prepared)
            if trace.ENABLED:
                trace.note(f"fsync end {len(events)}")
            self.store.commit_prepared(prepared)
        now = trio.current_time()
        for persist in batch:
            self.execute(self.node.persisted(persist.token, now))
        self._wake.set()


def _trace_effects(effects: list[Any]) -> None:
    for effect in effects:
        if isinstance(effect, (Send, SendTo, Reply)):
            trace.note(f"out {type(effect.message).__name__}")
        elif isinstance(effect, Persist):
            trace.note(f"out Persist {len(effect.events)}")


def check_client_message(message: Any) -> None:
    """Raise RemoteProtocolError unless `message` is a client request."""
    from meshstream.wire.messages import AppendRequest, StatusRequest, TopologyRequest

    if not isinstance(message, (AppendRequest, ReadRequest, StatusRequest, TopologyRequest)):
        raise RemoteProtocolError(f"a client may not send {type(message).__name__}")
