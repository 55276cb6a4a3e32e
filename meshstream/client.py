"""The trio client library: append, read, subscribe, status and topology, with failover.

    async with open_client(["127.0.0.1:7001", "127.0.0.1:7002"]) as client:
        appended = await client.append("orders", b'{"id": 1}', ack="all")
        result = await client.read("orders")
        async for event in client.subscribe("orders"):
            ...

A client holds one main connection, to the first address that answers; requests are
pipelined on it (each carries a `request_id`, replies are matched by id). When the
connection dies or a request goes unanswered, the client moves to the next address and
retries, until `retry_timeout_s` has passed:

- Reads, status and topology are retried freely (they change nothing).
- Appends are retried with the *same natural keys*: a key is generated once per event
  (16 random bytes) unless the caller gives one, so a retry of a write that did land
  returns the original (`Appended.duplicate`) instead of writing it twice. Retryable
  replies (`no_master`, `unavailable`, `overloaded`, `timeout`, `quorum_unreachable`) are
  retried after a short backoff, which is how a writer rides through a master failover.

Appends go to the stream's master when the client knows it: a peer's successful reply
names the stream's live master and the address it advertises (a route hint, see
`wire.messages`), and the client dials that address in the background and keeps the
connection (at most `ROUTES_MAX` of them besides the main one, the least recently used idle
one closed first). Until it is open, or when the hint is stale (the master moved, died, or
its address cannot be dialled from here: not tried again for `ROUTE_RETRY_S`), appends take
the main connection and its peer forwards them to the master, as any peer does; the reply
then names the new master. A lost routed connection is retried like any other, with the
same natural keys, on the main connection.

Errors: `KeyConflict` (the key exists with other content), `WriteFailed` (`definite` tells
whether nothing was written), `RequestFailed` (a read, status or topology request refused),
`Unreachable` (no address answered), `LocalProtocolError` for invalid arguments.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from meshstream import ids
from meshstream.clocks import EMPTY, VersionVector
from meshstream.config import Config
from meshstream.envelope import Event, normalize_metadata
from meshstream.errors import KeyConflict, LocalProtocolError, MeshError, RemoteProtocolError, WriteFailed
from meshstream.runtime.transport import MESH_NAME_DEFAULT, Connection, ConnectionClosed, handshake, make_hello
from meshstream.wire.messages import (
    ACK_LEVELS,
    AppendItem,
    Appended,
    AppendReply,
    AppendRequest,
    ErrorReply,
    ReadReply,
    ReadRequest,
    StatusReply,
    StatusRequest,
    TopologyReply,
    TopologyRequest,
    parse_route_hint,
)
from meshstream.wire.schema import unchecked_builder

log = logging.getLogger("meshstream.client")

KEY_BYTES_GENERATED = 16  # random natural keys: collisions are astronomically unlikely
KEYS_PER_DRAW = 1024  # keys drawn from the OS at once (16 KiB)
CONNECT_TIMEOUT_S = 2.0
REQUEST_TIMEOUT_S = 10.0  # longer than a peer's append_timeout_s, so the peer answers first
RETRY_TIMEOUT_S = 15.0  # keep failing over this long before giving up
RETRY_BACKOFF_S = 0.05
READ_REDIRECTS_MAX = 3  # a read follows `not_replica` this often, then reports it
RETRYABLE_CODES = ("no_master", "unavailable", "overloaded", "timeout", "quorum_unreachable")
ROUTES_MAX = 8  # connections kept to streams' masters, besides the main connection
ROUTE_HINTS_MAX = 4096  # streams whose master is remembered (the oldest forgotten first)
ROUTE_RETRY_S = 5.0  # a master's address that could not be dialled is left alone this long


class Unreachable(MeshError):
    """No peer in the address list answered."""


class RequestFailed(MeshError):
    """A peer refused a read, status or topology request; `code` says why."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class _Lost(Exception):
    """The connection died or did not answer; retry elsewhere. `sent` if the request left."""

    def __init__(self, reason: str, sent: bool) -> None:
        super().__init__(reason)
        self.sent = sent


@dataclass(frozen=True, slots=True)
class ReadResult:
    events: tuple[Event, ...]
    cursor: VersionVector


class _Session:
    def __init__(self, connection: Connection, address: str) -> None:
        self.connection = connection
        self.address = address
        self.peer = connection.remote.peer  # the name the peer gave in its Hello
        self.pending: dict[int, list[Any]] = {}  # request_id -> [trio.Event, reply]
        self.dead = False

    def on_message(self, message: Any) -> None:
        slot = self.pending.pop(getattr(message, "request_id", -1), None)
        if slot is None:
            raise RemoteProtocolError(f"reply to no request: {type(message).__name__}")
        slot[1] = message
        slot[0].set()

    def kill(self) -> None:
        self.dead = True
        self.connection.close()
        for slot in self.pending.values():
            slot[0].set()
        self.pending.clear()


class Client:
    """A connection to a mesh with failover. Build with `open_client`."""

    def __init__(self, nursery: trio.Nursery, addresses: Sequence[str], *, mesh: str, cluster_key: bytes | None,
                 config: Config, retry_timeout_s: float, route_appends: bool = True) -> None:
        if not addresses:
            raise LocalProtocolError("give at least one peer address")
        for address in addresses:
            ids.parse_address(address)
        self.addresses = list(addresses)
        self._nursery = nursery
        self._mesh = mesh
        self._cluster_key = cluster_key
        self._config = config
        self._retry_timeout_s = retry_timeout_s
        self._route_appends = route_appends
        self._next_address = 0
        self._session: _Session | None = None
        self._connecting = trio.Lock()
        self._next_request = 1
        self._hints: dict[str, tuple[str, str, int, str]] = {}  # stream -> (master, address, epoch, detail)
        self._routes: dict[str, _Session] = {}  # master -> connection, least recently used first
        self._dialling: set[str] = set()  # masters' addresses being dialled
        self._undialable: dict[str, float] = {}  # address -> when it may be dialled again

    @property
    def peer_address(self) -> str | None:
        """The address currently connected to, if any."""
        return self._session.address if self._session and not self._session.dead else None

    def route_address(self, stream: str) -> str | None:
        """The address an append to `stream` would be sent to now: its master's, when a
        connection to it is open, else the main connection's (if any)."""
        routed = self._route(stream, dial=False)
        return routed.address if routed is not None else self.peer_address

    # -- public API --

    async def append(self, stream: str, data: bytes, *, key: bytes | None = None,
                     metadata: dict[str, str | int | bytes] | None = None, ack: str = "master") -> Appended:
        """Append one event; return where it landed. Raises KeyConflict or WriteFailed."""
        return (await self.append_batch(stream, [make_item(data, key, metadata)], ack=ack))[0]

    async def append_batch(self, stream: str, items: Sequence[AppendItem | bytes], *,
                           ack: str = "master") -> list[Appended]:
        """Append events in one request (one fsync on the master). Raises KeyConflict or
        WriteFailed; `WriteFailed.definite` is False when some attempt may have landed."""
        ids.validate_stream_name(stream)
        if ack not in ACK_LEVELS:
            raise LocalProtocolError(f"ack must be one of {ACK_LEVELS}, got {ack!r}")
        frozen = tuple(item if isinstance(item, AppendItem) else make_item(item) for item in items)
        if not frozen or len(frozen) > self._config.append_batch_events_max:
            raise LocalProtocolError(f"a batch holds 1-{self._config.append_batch_events_max} events")
        state = {"maybe_written": False, "last": "no attempt"}

        def make(request_id: int) -> AppendRequest:
            return AppendRequest(request_id, stream, frozen, ack)

        def accept(reply: Any) -> list[Appended] | None:
            return _accept_append(reply, stream, frozen, state)

        try:
            return await self._with_retries(make, accept, on_lost=lambda lost: _note_lost(lost, state), stream=stream)
        except trio.TooSlowError:
            raise WriteFailed(f"append to {stream!r} failed: {state['last']}",
                              definite=not state["maybe_written"]) from None

    async def read(self, stream: str, cursor: VersionVector = EMPTY, *, limit: int = 1000,
                   wait_s: float = 0.0) -> ReadResult:
        """Events of `stream` not in `cursor`, in canonical order, and the advanced cursor.
        With `wait_s > 0` and nothing new, the peer waits that long for new events."""
        ids.validate_stream_name(stream, allow_system=True)
        if limit < 1:
            raise LocalProtocolError("limit must be at least 1")

        def make(request_id: int) -> ReadRequest:
            return ReadRequest(request_id, stream, cursor, limit, float(wait_s))

        for _ in range(READ_REDIRECTS_MAX):
            reply = await self._simple(make, timeout_s=REQUEST_TIMEOUT_S + wait_s)
            if not isinstance(reply, ReadReply):
                raise RemoteProtocolError(f"expected ReadReply, got {type(reply).__name__}")
            if reply.code != "not_replica":
                break
            await self._move_to(reply.detail.split(","))
        if reply.code:
            raise RequestFailed(reply.code, reply.detail)
        return ReadResult(reply.events, reply.cursor)

    async def subscribe(self, stream: str, cursor: VersionVector = EMPTY, *, wait_s: float = 5.0,
                        batch_events_max: int = 1000) -> AsyncIterator[Event]:
        """Follow `stream` live from `cursor`, failing over (and resuming from the cursor)
        when the peer dies. Never ends by itself; cancel it."""
        while True:
            result = await self.read(stream, cursor, limit=batch_events_max, wait_s=wait_s)
            for event in result.events:
                yield event
            cursor = result.cursor

    async def status(self) -> dict[str, Any]:
        reply = await self._simple(StatusRequest, timeout_s=REQUEST_TIMEOUT_S)
        if not isinstance(reply, StatusReply):
            raise RemoteProtocolError(f"expected StatusReply, got {type(reply).__name__}")
        return json.loads(reply.status_json)

    async def topology(self) -> tuple[tuple[Event, ...], dict[str, Any]]:
        """The `$topology` events in canonical order and the view they fold to."""
        reply = await self._simple(TopologyRequest, timeout_s=REQUEST_TIMEOUT_S)
        if not isinstance(reply, TopologyReply):
            raise RemoteProtocolError(f"expected TopologyReply, got {type(reply).__name__}")
        return reply.events, json.loads(reply.view_json)

    async def aclose(self) -> None:
        if self._session is not None:
            self._session.kill()
        for session in self._routes.values():
            session.kill()
        self._routes.clear()

    # -- routing appends to masters --

    def _learn_route(self, stream: str, detail: str, answered: _Session) -> None:
        """Remember the master a successful reply (from `answered`) named. A hint from an
        older election (a peer whose view lags) does not replace a newer one, unless the
        newer one's master is the peer that answered (it knows it is not the master) or
        cannot be reached."""
        known = self._hints.get(stream)
        if known is not None and known[3] == detail:
            return  # the usual reply: the same master again, nothing to parse
        hint = parse_route_hint(detail)
        if hint is None:
            return
        if known is not None and hint[2] < known[2] and answered.peer != known[0] \
                and self._route(stream, dial=False) is not None:
            return
        if known is None and len(self._hints) >= ROUTE_HINTS_MAX:
            del self._hints[next(iter(self._hints))]
        self._hints[stream] = (*hint, detail)

    def _route(self, stream: str, dial: bool = True) -> _Session | None:
        """The open connection to `stream`'s master, or None: no hint, the main connection
        is to the master already, or the connection is not open (with `dial`, it is then
        dialled in the background, unless its address failed within ROUTE_RETRY_S)."""
        hint = self._hints.get(stream) if self._route_appends else None
        if hint is None:
            return None
        master, address = hint[0], hint[1]
        main = self._session
        if main is not None and not main.dead and main.peer == master:
            return None
        session = self._routes.get(master)
        if session is not None and not session.dead and session.address == address:
            if dial:
                self._routes[master] = self._routes.pop(master)  # most recently used last
            return session
        if dial and address not in self._dialling and self._undialable.get(address, 0.0) <= trio.current_time():
            self._dialling.add(address)
            self._nursery.start_soon(self._dial_route, master, address)
        return None

    async def _dial_route(self, master: str, address: str) -> None:
        try:
            session = await self._connect(address)
        finally:
            self._dialling.discard(address)
        if session is not None and session.peer != master:
            log.info("%s answers as %r, not %s: its appends stay on the main connection", address, session.peer, master)
            session.kill()
            session = None
        if session is None:
            now = trio.current_time()
            self._undialable = {a: t for a, t in self._undialable.items() if t > now}
            self._undialable[address] = now + ROUTE_RETRY_S
            return
        old = self._routes.pop(master, None)
        if old is not None and old is not self._session:
            self._drop(old, f"{master} now answers at {address}")
        self._routes[master] = session
        while len(self._routes) > ROUTES_MAX:
            idle = next((peer for peer, held in self._routes.items() if not held.pending), None)
            if idle is None:
                idle = master  # every other one is busy: do without the new one for a while
                self._undialable[address] = trio.current_time() + ROUTE_RETRY_S
            self._drop(self._routes.pop(idle), "more masters' connections than ROUTES_MAX")

    # -- retries and failover --

    async def _simple(self, make: Callable[[int], Any], timeout_s: float) -> Any:
        def accept(reply: Any) -> Any:
            if isinstance(reply, ErrorReply):
                if reply.code in RETRYABLE_CODES:
                    return None
                raise RequestFailed(reply.code, reply.detail)
            return reply

        try:
            return await self._with_retries(make, accept, timeout_s=timeout_s)
        except trio.TooSlowError:
            raise Unreachable(f"no answer from any of {', '.join(self.addresses)}") from None

    async def _with_retries(self, make: Callable[[int], Any], accept: Callable[[Any], Any], *,
                            timeout_s: float = REQUEST_TIMEOUT_S,
                            on_lost: Callable[[_Lost], None] = lambda lost: None, stream: str | None = None) -> Any:
        """Send until `accept(reply)` returns non-None; TooSlowError after retry_timeout_s."""
        with trio.fail_after(self._retry_timeout_s + timeout_s):
            deadline = trio.current_time() + self._retry_timeout_s
            while True:
                try:
                    result = accept(await self._request_once(make, timeout_s, stream))
                except _Lost as lost:
                    on_lost(lost)
                    result = None
                if result is not None:
                    return result
                if trio.current_time() > deadline:
                    raise trio.TooSlowError
                await trio.sleep(RETRY_BACKOFF_S)

    async def _request_once(self, make: Callable[[int], Any], timeout_s: float, stream: str | None = None) -> Any:
        """One attempt: an append of `stream` goes to its master when connected there."""
        session = (self._route(stream) if stream is not None else None) or await self._get_session()
        request_id = self._next_request
        self._next_request += 1
        slot: list[Any] = [trio.Event(), None]
        session.pending[request_id] = slot
        if not session.connection.send_nowait(make(request_id)):
            session.kill()
            raise _Lost(f"connection to {session.address} closed", sent=False)
        with trio.move_on_after(timeout_s):
            await slot[0].wait()
        if slot[1] is None:
            self._drop(session, f"no answer from {session.address} in {timeout_s} s")
            raise _Lost(f"connection to {session.address} lost", sent=True)
        reply = slot[1]
        if stream is not None and type(reply) is AppendReply and reply.detail and not reply.code:
            self._learn_route(stream, reply.detail, session)
        return reply

    async def _move_to(self, addresses: list[str]) -> None:
        """Reconnect to the first of `addresses` that answers (a peer said they hold what
        was asked); stay connected where we are when none does."""
        for address in addresses:
            try:
                ids.parse_address(address)
            except LocalProtocolError:
                raise RemoteProtocolError(f"a peer redirected to a malformed address {address!r}") from None
        async with self._connecting:
            for address in addresses:
                session = await self._connect(address)
                if session is not None:
                    if self._session is not None:
                        self._session.kill()
                    self._session = session
                    return

    def _drop(self, session: _Session, reason: str) -> None:
        if not session.dead:
            log.info("dropping connection to %s: %s", session.address, reason)
            session.kill()

    async def _get_session(self) -> _Session:
        session = self._session
        if session is not None and not session.dead:
            return session  # no lock: acquiring one costs a scheduling round per request
        async with self._connecting:
            if self._session is not None and not self._session.dead:
                return self._session
            for _ in range(len(self.addresses)):
                address = self.addresses[self._next_address % len(self.addresses)]
                self._next_address += 1
                session = await self._connect(address)
                if session is not None:
                    self._session = session
                    return session
            raise _Lost("no address answered", sent=False)

    async def _connect(self, address: str) -> _Session | None:
        host, port = ids.parse_address(address)
        try:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                stream = await trio.open_tcp_stream(host, port)
        except (OSError, trio.TooSlowError) as exc:
            log.debug("connect to %s failed: %s", address, exc)
            return None
        try:
            hello = make_hello(self._mesh, "", "client", "")
            session_state = await handshake(stream, hello, self._config, self._cluster_key)
        except (RemoteProtocolError, ConnectionClosed, OSError, trio.BrokenResourceError) as exc:
            log.warning("handshake with %s failed: %s", address, exc)
            await trio.aclose_forcefully(stream)
            return None
        session = _Session(Connection(stream, session_state, self._config, f"client to {address}"), address)
        self._nursery.start_soon(self._run_session, session)
        return session

    async def _run_session(self, session: _Session) -> None:
        try:
            await session.connection.run(session.on_message)
        except (RemoteProtocolError, ConnectionClosed) as exc:
            log.debug("connection to %s ended: %s", session.address, exc)
        finally:
            session.kill()


def make_item(data: bytes, key: bytes | None = None, metadata: dict[str, Any] | None = None) -> AppendItem:
    """One event to append; the natural key is generated here, once, when not given."""
    if not isinstance(data, bytes):
        raise LocalProtocolError(f"event data must be bytes, not {type(data).__name__}")
    key = _new_key() if key is None else ids.validate_key(key)
    return _append_item(key, data, dict(normalize_metadata(metadata)) if metadata else {})


_append_item = unchecked_builder(AppendItem)  # fields checked above; no dataclass __init__
_key_lock = threading.Lock()  # make_item may be called from any thread: keys must not repeat
_key_pool = [b"", 0]  # random bytes from the OS, and the offset of the next unused key


def _new_key() -> bytes:
    """KEY_BYTES_GENERATED random bytes, never handed out twice: cut from a pool drawn
    from the OS KEYS_PER_DRAW keys at a time (one os.urandom call per key cost ~1 us)."""
    with _key_lock:
        pool, offset = _key_pool
        if offset >= len(pool):
            pool, offset = os.urandom(KEY_BYTES_GENERATED * KEYS_PER_DRAW), 0
            _key_pool[0] = pool
        _key_pool[1] = offset + KEY_BYTES_GENERATED
        return pool[offset:offset + KEY_BYTES_GENERATED]


def _forget_keys() -> None:
    _key_pool[:] = [b"", 0]  # a forked child must not hand out its parent's keys again


os.register_at_fork(after_in_child=_forget_keys)


def _note_lost(lost: _Lost, state: dict[str, Any]) -> None:
    state["last"] = str(lost)
    if lost.sent:
        state["maybe_written"] = True


def _accept_append(reply: Any, stream: str, items: tuple[AppendItem, ...], state: dict[str, Any]) -> Any:
    if isinstance(reply, ErrorReply):
        reply = AppendReply(reply.request_id, (), reply.code, reply.detail, True)
    if not isinstance(reply, AppendReply):
        raise RemoteProtocolError(f"expected AppendReply, got {type(reply).__name__}")
    if not reply.code:
        if len(reply.appended) != len(items):
            raise RemoteProtocolError(f"{len(reply.appended)} results for {len(items)} events")
        return list(reply.appended)
    state["last"] = f"{reply.code}: {reply.detail}"
    if not reply.definite:
        state["maybe_written"] = True
    if reply.code == "key_conflict":
        raise KeyConflict(stream, _conflicting_key(reply.detail, items))
    if reply.code in RETRYABLE_CODES:
        return None
    raise WriteFailed(f"append to {stream!r} refused: {reply.code}: {reply.detail}",
                      definite=not state["maybe_written"])


def _conflicting_key(detail: str, items: tuple[AppendItem, ...]) -> bytes:
    for item in items:
        if repr(item.key) in detail or item.key.hex() in detail:
            return item.key
    return items[0].key


@asynccontextmanager
async def open_client(addresses: Sequence[str], *, mesh: str = MESH_NAME_DEFAULT, cluster_key: bytes | None = None,
                      config: Config | None = None, retry_timeout_s: float = RETRY_TIMEOUT_S,
                      route_appends: bool = True) -> AsyncIterator[Client]:
    """A client for the mesh reachable at any of `addresses` (HOST:PORT). With
    `route_appends=False` every request takes the main connection (appends are forwarded
    by its peer): for a network where the masters' advertised addresses are unreachable."""
    # The nursery only runs connection readers, which never raise; an error from the body is
    # re-raised bare after the nursery closes rather than wrapped in an ExceptionGroup.
    body_error: Exception | None = None
    async with trio.open_nursery() as nursery:
        client = Client(nursery, addresses, mesh=mesh, cluster_key=cluster_key,
                        config=config or Config.preset("lan"), retry_timeout_s=retry_timeout_s,
                        route_appends=route_appends)
        try:
            yield client
        except Exception as exc:
            body_error = exc
        finally:
            await client.aclose()
            nursery.cancel_scope.cancel()
    if body_error is not None:
        raise body_error
