"""One peer process: listener, connection handling, links, driver and store, in one nursery.

`Peer(options).run()` opens the store, listens on one TCP port for peers and clients alike,
builds the `Node` with its advertised address and seeds, and serves until `stop()` or
SIGINT/SIGTERM, when it leaves the mesh gracefully (publishes `left`, flushes the store and
queued messages) and closes.

Every incoming connection passes the limits here: at most `connections_max` at once (more
are closed at once with a log line), a `Hello` within `handshake_timeout_s`, the cluster
key's MAC on every frame, and only the messages its role may send (clients: requests;
peers: peer messages). A connection that breaks a rule is closed with one warning naming
the remote address and the reason; the peer keeps serving everyone else.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from meshstream import ids
from meshstream.config import Config
from meshstream.errors import RemoteProtocolError
from meshstream.runtime.driver import Driver, check_client_message
from meshstream.runtime.links import PeerLinks
from meshstream.runtime.transport import MESH_NAME_DEFAULT, Connection, ConnectionClosed, Flusher, handshake, make_hello
from meshstream.wire.messages import Hello

log = logging.getLogger("meshstream.peer")

LEAVE_FLUSH_TIMEOUT_S = 2.0  # a graceful exit never hangs longer than this on a dead mesh
# Garbage collection, for a peer process (`run_peer`). With CPython's default threshold of
# 700 the events of writes in flight (a few thousand objects) outlived young collections,
# were promoted and scanned again in full collections of the whole heap: 2-2.5 us of CPU
# per event at 1 peer ack=master, and full collections of 25-30 ms (p99 latency, probes).
# Nearly everything a peer allocates is freed by reference counting; cycles (trio tasks,
# tracebacks) are rare, so letting 100,000 young objects gather first costs little memory.
GC_YOUNG_OBJECTS = 100_000
GC_OLDER_RATIOS = (50, 100)


@dataclass(frozen=True)
class PeerOptions:
    name: str
    listen: str  # HOST:PORT; port 0 picks a free one
    data_dir: str
    join: tuple[str, ...] = ()
    advertise: str | None = None  # the address others dial (NAT, containers); default listen
    cluster_key: bytes | None = None
    config: Config = field(default_factory=lambda: Config.preset("local"))
    mesh: str = MESH_NAME_DEFAULT


def default_store_factory(data_dir: str, config: Config) -> Any:
    from meshstream.store.segment import SegmentStore

    return SegmentStore.open(data_dir, config)


def default_node_factory(name: str, address: str, config: Config, store: Any, seeds: tuple[str, ...]) -> Any:
    from meshstream.protocol.node import Node

    rng = random.Random(int.from_bytes(os.urandom(8), "big"))
    return Node(name, address, config, rng, store, seeds=seeds)


class Peer:
    """A running peer. `await nursery.start(peer.run)` returns once it is listening."""

    def __init__(
        self,
        options: PeerOptions,
        store_factory: Callable[[str, Config], Any] = default_store_factory,
        node_factory: Callable[..., Any] = default_node_factory,
    ) -> None:
        ids.validate_peer_name(options.name)
        ids.parse_address(options.listen)
        self.options = options
        self.config = options.config
        self._store_factory = store_factory
        self._node_factory = node_factory
        self._stop = trio.Event()
        self._connections = 0
        self.address = ""
        self.driver: Driver | None = None

    def stop(self) -> None:
        """Ask the peer to leave the mesh and exit."""
        self._stop.set()

    async def run(self, *, handle_signals: bool = False, freeze_loaded: bool = False,
                  task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until stopped. `freeze_loaded`: once store and node exist, move everything
        alive to the collector's permanent generation (a process of its own only: the
        store's loaded indexes are then never scanned by a full collection again). No
        collection first: it cost 13 ms of start-up CPU with an empty store (more with a
        loaded one) to free the little garbage that start-up leaves."""
        host, port = ids.parse_address(self.options.listen)
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.address = self.options.advertise or _listen_address(host, listeners)
        store = self._store_factory(self.options.data_dir, self.config)
        try:
            async with trio.open_nursery() as nursery:
                flusher = Flusher()
                links = PeerLinks(nursery, self.config, self._hello, self.options.cluster_key, self._link_message,
                                  flusher=flusher, on_drained=self._inputs_done)
                node = self._node_factory(self.options.name, self.address, self.config, store, self.options.join)
                self.driver = Driver(node, store, self.config, links, flusher)
                if freeze_loaded:
                    gc.freeze()  # after the node's modules are loaded too
                await nursery.start(self.driver.run)
                nursery.start_soon(trio.serve_listeners, self._handle, listeners)
                if handle_signals:
                    nursery.start_soon(self._watch_signals)
                log.info("peer %s listening on %s (advertised %s)", self.options.name, _listen_address(host, listeners),
                         self.address)
                task_status.started(self.address)
                await self._stop.wait()
                log.info("peer %s leaving the mesh", self.options.name)
                with trio.CancelScope(shield=True):
                    await self.driver.leave(LEAVE_FLUSH_TIMEOUT_S)
                nursery.cancel_scope.cancel()
        finally:
            store.close()

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("received %s", signal.Signals(signum).name)
                self.stop()
                return

    def _hello(self) -> Hello:
        return make_hello(self.options.mesh, self.options.name, "peer", self.address)

    def _inputs_done(self) -> None:
        assert self.driver is not None
        self.driver.inputs_done()

    def _link_message(self, src: str, message: Any) -> None:
        assert self.driver is not None
        if not src:
            raise RemoteProtocolError("a dialled peer answered as a client")
        self._peer_message(src, message)

    def _peer_message(self, src: str, message: Any) -> None:
        assert self.driver is not None
        if isinstance(message, Hello) or getattr(type(message), "KIND", 0) < 20:
            raise RemoteProtocolError(f"a peer may not send {type(message).__name__} here")
        self.driver.peer_message(src, message)

    async def _handle(self, stream: trio.SocketStream) -> None:
        who = _remote_name(stream)
        if self._connections >= self.config.connections_max:
            log.warning("refused connection from %s: connections_max %d reached", who, self.config.connections_max)
            await trio.aclose_forcefully(stream)
            return
        self._connections += 1
        try:
            await self._serve(stream, who)
        finally:
            self._connections -= 1

    async def _serve(self, stream: trio.SocketStream, who: str) -> None:
        assert self.driver is not None
        try:
            session = await handshake(stream, self._hello(), self.config, self.options.cluster_key)
        except (RemoteProtocolError, ConnectionClosed, OSError, trio.BrokenResourceError) as exc:
            log.warning("refused connection from %s: %s", who, exc)
            await trio.aclose_forcefully(stream)
            return
        hello = session.remote
        label = f"{hello.role} {hello.peer or '-'} from {who}"
        connection = Connection(stream, session, self.config, label, flusher=self.driver.flusher)
        client = None
        if hello.role == "peer":
            if hello.address:
                self.driver.hello_addresses[hello.peer] = hello.address
                self.driver.links.wake(hello.address)  # it is up: our links to it redial now
            on_message: Callable[[Any], None] = lambda message: self._peer_message(hello.peer, message)
        else:
            client = self.driver.register_client(connection)
            on_message = lambda message: self._client_message(client, message)
        try:
            await connection.run(on_message, self.driver.inputs_done)
        except RemoteProtocolError as exc:
            log.warning("closed connection (%s): %s", label, exc)
        except ConnectionClosed as exc:
            log.debug("connection (%s) ended: %s", label, exc)
        finally:
            if client is not None:
                self.driver.unregister_client(client)

    def _client_message(self, client: int, message: Any) -> None:
        assert self.driver is not None
        check_client_message(message)
        if self.driver.stopping:
            return
        self.driver.client_request(client, message)


def _listen_address(host: str, listeners: list[trio.SocketListener]) -> str:
    port = listeners[0].socket.getsockname()[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _remote_name(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
    except (OSError, AttributeError):
        return "?"
    return f"{host}:{port}"


async def run_peer(options: PeerOptions, *, handle_signals: bool = True) -> None:
    """Run a peer in the foreground until SIGINT/SIGTERM (what `meshstream run` does)."""
    gc.set_threshold(GC_YOUNG_OBJECTS, *GC_OLDER_RATIOS)
    await Peer(options).run(handle_signals=handle_signals, freeze_loaded=True)
