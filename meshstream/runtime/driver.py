"""The driver: runs one sans-IO `Node` on trio and carries out its effects.

Inputs arrive synchronously from connection readers (`peer_message`, `client_request`);
each is fed to the node at `now = trio.current_time()` (so tests can use MockClock) and the
returned effects are executed at once:

- `Send(peer, m)`: queued on the outgoing link to `node.address_of(peer)` (or the address
  the peer announced in its Hello, for peers the topology does not list yet).
- `SendTo(address, m)`: queued on the link to that address.
- `Persist(token, events)`: queued for group commit (below).
- `Reply(client, m)`: queued on that client's connection. A successful `AppendReply` gets
  a route hint in its `detail` (`wire.messages.route_hint`): the stream's live master and
  its advertised address, so the client sends the stream's next appends straight there.
- `Deliver(stream, events)`: wakes the long-poll reads parked on `stream`.
- `Journal(kind, text)`: one log line.

Effects the node hands to `Node.send_early` while an input is still being handled (a
catch-up's next pull, before the batch it follows is checked) are carried out and sent at
once (`_execute_at_once`), so the partner works on the next batch meanwhile.

After a run of inputs (a reader calls `inputs_done()` once it has handed over every message
it read) the driver sends what they queued, each connection's messages in one nonblocking
send from this task (`transport.Flusher`), and then, if no batch is being written, starts
a group commit: every pending Persist (up to `group_commit_events_max` events) is prepared
on the trio thread and handed to the commit thread (`runtime.commit`), which writes and
fsyncs it (a slow disk never stalls probes); as soon as the fsync returns, the indexes are
committed on the trio thread, `node.persisted(token)` is called for each Persist, what that
queued (acknowledgements) is sent, and the next batch starts. No task switch lies between
an input and its sends, or between an fsync's return and the acknowledgement it allows:
each cost a scheduling round on every hop of a replicated append.

A timer task sleeps until `node.next_deadline()`, or until `TICK_AFTER_INPUT_S` after the
first input since the last tick, then calls `node.tick(now)`: ticks follow deadlines, and
follow inputs coalesced (a tick after every input cost ~20 us of CPU each, 8 per append).

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
from meshstream.protocol.effects import Deliver, Journal, Persist, Reply, Send, SendTo, take_group_commit
from meshstream.runtime import trace
from meshstream.runtime.commit import CommitThread
from meshstream.runtime.transport import Flusher
from meshstream.wire.messages import AppendReply, AppendRequest, ReadReply, ReadRequest, route_hint

log = logging.getLogger("meshstream.driver")

LONG_POLLS_MAX = 4096  # parked reads; beyond this a read is answered at once, empty
LONG_POLL_WAIT_S_MAX = 60.0  # a client asking for longer gets this
HANDOFF_WAIT_S_MAX = 15.0  # a leave waits this long for shard hand-offs (each gives up after 2 s)
# Inputs are followed by a tick this long after the first of them: what a tick does after
# an input (an election once catch-up ends, say) can wait 10 ms; deadlines are kept exactly.
# Single ack=all appends (~2.5 ms each): 2 ms gave ~3.9 ticks an append over the three
# peers, 20 ms ~1.4 (each ~25 us of CPU plus a task wake-up).
TICK_AFTER_INPUT_S = 0.01
APPENDS_HINTED_MAX = 65_536  # appends awaiting their reply's route hint; beyond, replies go without


class Driver:
    """Owns a Node and executes its effects. `run` inside a nursery, then feed it inputs."""

    def __init__(self, node: Any, store: Any, config: Config, links: Any, flusher: Flusher | None = None) -> None:
        self.node = node
        self.store = store
        self.config = config
        self.links = links
        self.flusher = Flusher() if flusher is None else flusher  # connections the driver sends on use it
        self.clients: dict[int, Any] = {}
        self.hello_addresses: dict[str, str] = {}
        self._next_client = 1
        self._append_streams: dict[tuple[int, int], str] = {}  # (client, request_id) -> stream
        self._followers: dict[str, trio.Event] = {}
        self._long_polls = 0
        self._pending_persists: deque[Persist] = deque()
        self._committing: list[Persist] | None = None  # the batch the commit thread is writing
        self._commit_thread = CommitThread(store.write_prepared, self._written)
        self._timer_scope: trio.CancelScope | None = None
        self._first_input_at: float | None = None  # since the last tick
        self._nursery: trio.Nursery | None = None
        self.stopping = False
        self._departed = trio.Event()  # set once a graceful leave has handed its shards off
        node.early_sink = self._execute_at_once  # a catch-up's next pull leaves before its batch is checked

    # -- lifecycle --

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self._commit_thread.run)
            self.execute(self.node.start(trio.current_time()))
            self.inputs_done()
            nursery.start_soon(self._timer_loop)
            task_status.started()

    async def leave(self, flush_timeout_s: float = 2.0) -> None:
        """Leave gracefully: hand mastered shards off, publish `left`, persist it, send
        what is queued. The timer task keeps ticking the node meanwhile."""
        self.stopping = True
        self._input(trio.current_time())
        self.execute(self.node.leave(trio.current_time()))
        self.inputs_done()
        with trio.move_on_after(HANDOFF_WAIT_S_MAX):
            await self._departed.wait()
        if not self.node.departed:
            log.warning("left before every shard was handed off (waited %.0f s)", HANDOFF_WAIT_S_MAX)
        await self.flush(flush_timeout_s)

    async def flush(self, timeout_s: float) -> None:
        with trio.move_on_after(timeout_s):
            while self._pending_persists or self._committing is not None:
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
        """Feed a peer's message to the node; call `inputs_done()` after a run of inputs."""
        if trace.ENABLED:
            trace.note(f"in {type(message).__name__} {src}")
        now = trio.current_time()
        self._input(now)
        self.execute(self.node.receive(src, message, now))

    def client_request(self, client: int, message: Any) -> None:
        """Feed a client's request to the node; call `inputs_done()` after a run of inputs."""
        if trace.ENABLED:
            trace.note(f"in {type(message).__name__}")
        now = trio.current_time()
        self._input(now)
        if type(message) is AppendRequest and len(self._append_streams) < APPENDS_HINTED_MAX:
            self._append_streams[(client, message.request_id)] = message.stream
        if isinstance(message, ReadRequest) and message.wait_s > 0:
            self._read_or_park(client, message, now + min(message.wait_s, LONG_POLL_WAIT_S_MAX))
        else:
            self.execute(self.node.client_request(client, message, now))

    def inputs_done(self) -> None:
        """Send what the inputs so far queued, start a group commit if none is running, and
        bring the next tick forward if they need one sooner."""
        self._send_and_commit()
        scope = self._timer_scope
        if scope is not None:
            due = self._tick_due()
            if due < scope.deadline:
                scope.deadline = due

    def _input(self, now: float) -> None:
        if self._first_input_at is None:
            self._first_input_at = now

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
                case Reply(client, message):
                    if type(message) is AppendReply:
                        message = self._with_route(client, message)
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

    def _execute_at_once(self, effects: list[Any]) -> None:
        """`Node.send_early`: carry out `effects` and send them now, mid-input."""
        self.execute(effects)
        self.flusher.flush()

    def _with_route(self, client: int, reply: AppendReply) -> AppendReply:
        """`reply` with the stream's route hint in its detail, when it succeeded."""
        stream = self._append_streams.pop((client, reply.request_id), None)
        if stream is None or reply.code or reply.detail:
            return reply
        master = self.node.master_of(stream)
        if master is None:
            return reply
        elected = self.node.topology.master(self.node.shard_of(stream))
        epoch = elected[1] if elected is not None and elected[0] == master else 0
        hint = route_hint(master, self.node.address_of(master) or "", epoch)
        return AppendReply(reply.request_id, reply.appended, "", hint, reply.definite) if hint else reply

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
            self.inputs_done()

    # -- timers and group commit --

    def _tick_due(self) -> float:
        deadline = self.node.next_deadline()
        due = math.inf if deadline is None else deadline
        if self._first_input_at is not None:
            due = min(due, self._first_input_at + TICK_AFTER_INPUT_S)
        return due

    async def _timer_loop(self) -> None:
        while True:
            # inputs_done() lowers this scope's deadline when a tick is needed sooner.
            self._timer_scope = trio.CancelScope(deadline=self._tick_due())
            with self._timer_scope:
                await trio.sleep_forever()
            self._timer_scope = None
            self._first_input_at = None
            if trace.ENABLED:
                started = trace.cpu_s()
            self.execute(self.node.tick(trio.current_time()))
            if trace.ENABLED:
                trace.note(f"tick {(trace.cpu_s() - started) * 1000:.3f}")
            self._send_and_commit()

    def _send_and_commit(self) -> None:
        # Sends first: a master's pushes to its replicas leave before it lays its own batch
        # out (an ack=all write waits for the replicas' fsyncs).
        self.flusher.flush()
        if self._committing is None and self._pending_persists:
            self._start_commit()
            self.flusher.flush()

    def _start_commit(self) -> None:
        while self._committing is None and self._pending_persists:
            batch, events = take_group_commit(self._pending_persists, self.config.group_commit_events_max)
            if not events:
                self._persisted(batch)
                continue
            if trace.ENABLED:
                trace.note(f"fsync start {len(events)}")
            prepared = self.store.prepare_batch(events, on_conflict="resolve")
            self._committing = batch
            self._commit_thread.submit(prepared)

    def _written(self, prepared: Any) -> None:
        """The commit thread wrote and fsynced `prepared` (called on the trio thread)."""
        batch, self._committing = self._committing, None
        assert batch is not None
        if trace.ENABLED:
            trace.note(f"fsync end {sum(len(persist.events) for persist in batch)}")
        self.store.commit_prepared(prepared)
        if trace.ENABLED:
            trace.note("indexed")
        if self._commit_thread.closing:
            return  # shutting down: the node is gone; the batch is durable and indexed
        self._input(trio.current_time())
        self._persisted(batch)
        self.inputs_done()

    def _persisted(self, batch: list[Persist]) -> None:
        now = trio.current_time()
        for persist in batch:
            self.execute(self.node.persisted(persist.token, now))


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
