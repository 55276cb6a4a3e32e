"""Outgoing peer connections, one per address, kept alive with backoff and jitter.

`PeerLinks.send(address, message)` never blocks: it queues the message on that address's
link (a bounded `Outbox` that survives reconnects) and starts the link's task on first use.
The task dials, handshakes, drains the outbox through a `Connection`, and on any failure
waits `backoff` (doubling from `RECONNECT_BACKOFF_MIN_S` to `RECONNECT_BACKOFF_MAX_S`, with
+-50% jitter so a restarted mesh does not reconnect in lock step) before dialling again.
Messages are best effort: when a link's queue is full, new messages are dropped, as a
lossy network would; the protocol's retries and anti-entropy repair the rest.

Each address gets two links, two lanes: membership messages (kinds 20-39: probes, acks,
joins) travel on their own connection so that a probe never waits behind megabytes of
replication traffic and a busy peer is not suspected for its backlog.

A link that has never connected backs off at most `RECONNECT_BACKOFF_UNMET_MAX_S` (often a
seed still starting). `wake(address)` ends a link's wait at once (the peer calls it when
that address dials in: it is back), so a restarted peer is answered now, not after up to
3 s of the backoff its death built up. A link that has failed for `LINK_IDLE_S` with
nothing new to send ends; the next `send` starts it again. Messages that arrive on an outgoing connection are
handed to `on_message` with the remote's name from its Hello, like those on incoming ones.
With a `flusher`, a connected link's sends wait for the owner's `flusher.flush()` (see
`transport.Connection`); `on_drained` is called after each run of messages read.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import trio

from meshstream import ids
from meshstream.config import Config
from meshstream.errors import LocalProtocolError, RemoteProtocolError
from meshstream.runtime.transport import Connection, ConnectionClosed, Flusher, Outbox, handshake
from meshstream.wire.messages import Hello

log = logging.getLogger("meshstream.links")

RECONNECT_BACKOFF_MIN_S = 0.05  # loopback peers restart in well under a second
RECONNECT_BACKOFF_MAX_S = 2.0  # a dead peer costs one dial per ~2 s
# A link that has never connected is most often a seed that is still starting (peers
# started together: the seed may listen a second after its joiners). Doubling up to 2 s,
# a joiner redialled it up to ~3 s after it listened, and a joiner that hears nothing from
# its seeds for 10 probe periods configures the mesh itself (with 256 shards a storm of
# master claims when 15 joiners do it at once): such a link keeps redialling every ~0.25 s.
RECONNECT_BACKOFF_UNMET_MAX_S = 0.25
CONNECT_TIMEOUT_S = 2.0
LINK_IDLE_S = 30.0  # stop dialling an address nobody has sent to for this long
LINKS_MAX = 4096  # addresses dialled at once; beyond this, sends are dropped
CONTROL_KINDS = range(20, 40)  # membership messages: the control lane


def lane_of(message: Any) -> str:
    return "control" if getattr(type(message), "KIND", 0) in CONTROL_KINDS else "data"


class _Link:
    def __init__(self, lane: tuple[str, str], queue_frames_max: int) -> None:
        self.lane = lane
        self.address = lane[0]
        self.outbox = Outbox(queue_frames_max)  # survives reconnects
        self.last_send = trio.current_time()
        self.connection: Connection | None = None
        self.remote_peer = ""
        self.woken = trio.Event()  # set by `PeerLinks.wake`: redial now


class PeerLinks:
    """Outgoing connections by address. Create inside a nursery; `send` from any task."""

    def __init__(
        self,
        nursery: trio.Nursery,
        config: Config,
        hello: Callable[[], Hello],
        cluster_key: bytes | None,
        on_message: Callable[[str, Any], None],
        rng: random.Random | None = None,
        flusher: Flusher | None = None,
        on_drained: Callable[[], None] | None = None,
    ) -> None:
        self._nursery = nursery
        self._config = config
        self._hello = hello
        self._cluster_key = cluster_key
        self._on_message = on_message
        self._rng = rng or random.Random()
        self._flusher = flusher
        self._on_drained = on_drained
        self._links: dict[str, _Link] = {}

    def send(self, address: str, message: Any) -> bool:
        """Queue `message` for `address`; False when dropped (queue full, too many links)."""
        lane = (address, lane_of(message))
        link = self._links.get(lane)
        if link is None:
            if len(self._links) >= LINKS_MAX:
                return False
            link = self._links[lane] = _Link(lane, self._config.send_queue_frames_max)
            self._nursery.start_soon(self._run_link, link)
        link.last_send = trio.current_time()
        if not link.outbox.put(message):
            return False
        if link.outbox.connection is not None:
            link.outbox.connection.queued()
        return True

    def wake(self, address: str) -> None:
        """Redial `address` now on each of its links waiting to redial (it has just dialled
        in, so it is up again), with the backoff reset. Starts no link."""
        for lane in ("control", "data"):
            link = self._links.get((address, lane))
            if link is not None:
                link.woken.set()

    def connected_peers(self) -> list[str]:
        return sorted(link.remote_peer for link in self._links.values() if link.connection and link.remote_peer)

    async def drain(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) until every connected link has sent what is queued."""
        with trio.move_on_after(timeout_s):
            while any(link.connection is not None and link.connection.sending for link in self._links.values()):
                await trio.sleep(0.005)

    async def _run_link(self, link: _Link) -> None:
        backoff = RECONNECT_BACKOFF_MIN_S
        ever_connected = False
        try:
            while True:
                link.woken = trio.Event()  # a wake from here on (even mid-dial) ends the next wait
                connected = await self._connect_once(link)
                ever_connected = ever_connected or connected
                cap = RECONNECT_BACKOFF_MAX_S if ever_connected else RECONNECT_BACKOFF_UNMET_MAX_S
                backoff = RECONNECT_BACKOFF_MIN_S if connected else min(backoff * 2, cap)
                if trio.current_time() - link.last_send > LINK_IDLE_S:
                    return
                with trio.move_on_after(backoff * self._rng.uniform(0.5, 1.5)):
                    await link.woken.wait()
                if link.woken.is_set():
                    backoff = RECONNECT_BACKOFF_MIN_S
        finally:
            del self._links[link.lane]

    async def _connect_once(self, link: _Link) -> bool:
        """Dial, handshake and run one connection. True if the handshake succeeded."""
        try:
            host, port = ids.parse_address(link.address)
        except LocalProtocolError as exc:
            log.warning("not dialling %s: %s", link.address, exc)
            await trio.sleep(RECONNECT_BACKOFF_MAX_S)
            return False
        try:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                stream = await trio.open_tcp_stream(host, port)
        except (OSError, trio.TooSlowError) as exc:
            log.debug("dial %s failed: %s", link.address, exc)
            return False
        try:
            session = await handshake(stream, self._hello(), self._config, self._cluster_key)
        except (RemoteProtocolError, ConnectionClosed, OSError, trio.BrokenResourceError) as exc:
            log.warning("handshake with %s failed: %s", link.address, exc)
            await trio.aclose_forcefully(stream)
            return False
        return await self._serve(link, stream, session)

    async def _serve(self, link: _Link, stream: trio.abc.Stream, session: Any) -> bool:
        remote = session.remote.peer
        label = f"{link.lane[1]} link {remote or '?'}@{link.address}"
        connection = Connection(stream, session, self._config, label, outbox=link.outbox, flusher=self._flusher)
        link.connection, link.remote_peer = connection, remote
        log.debug("%s: connected", label)
        try:
            await connection.run(lambda message: self._on_message(remote, message), self._on_drained)
        except RemoteProtocolError as exc:
            log.warning("%s: closed: %s", label, exc)
        except ConnectionClosed as exc:
            log.debug("%s: closed: %s", label, exc)
        finally:
            link.connection = None
        return True
