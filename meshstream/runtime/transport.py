"""Framed, authenticated, bounded connections over trio streams.

A `Connection` wraps one byte stream after the `Hello` handshake: a reader loop that decodes
frames (`wire.framing.FrameDecoder`, length checked before anything is buffered) and hands
each message to a synchronous callback, and a bounded `Outbox` of messages to send. Sends
are written straight to the socket from the trio thread when nothing is being written
already (`Connection.flush`): everything queued so far is encoded into one nonblocking send
(one syscall for a batch of frames is ~30x cheaper than one per frame on loopback), and
only what the kernel does not take at once is left to the connection's writer task. Waking
a writer task per message cost a scheduling round on every hop of an append (~0.1-0.2 ms
of an ack=all write's ~3 ms). A `Flusher` lets an owner that feeds many inputs in a row
(the driver) queue their messages and send them once, after the run.

`handshake` exchanges `Hello`s both ways under `handshake_timeout_s`. With a cluster key,
every frame, Hellos included, carries a keyed-BLAKE3 MAC, so a peer or client without the
key fails on its first frame and nothing it sent is applied.

Anything the remote side gets wrong raises RemoteProtocolError out of `run`; the owner logs
it and closes this connection only.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from meshstream.config import Config
from meshstream.errors import RemoteProtocolError
from meshstream.runtime import trace
from meshstream.wire import framing
from meshstream.wire import mac as wire_mac
from meshstream.wire.messages import PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN, Hello

log = logging.getLogger("meshstream.transport")

RECEIVE_BYTES_MAX = 256 * 1024  # one read; big enough for a batch of appends
WRITE_BATCH_FRAMES_MAX = 512  # frames coalesced into one send_all
READ_YIELD_MESSAGES = 64  # let timers and other connections run between long runs of input
MESH_NAME_DEFAULT = "meshstream"


class ConnectionClosed(Exception):
    """The remote side closed the connection (or it was closed locally)."""


def make_hello(mesh: str, peer: str, role: str, address: str) -> Hello:
    return Hello(mesh, peer, role, address, PROTOCOL_VERSION_MIN, PROTOCOL_VERSION_MAX, os.urandom(16))


def make_codec(config: Config, cluster_key: bytes | None, local_nonce: bytes) -> tuple[Any, Any]:
    """A fresh (encoder, decoder) pair for one connection whose Hello carries `local_nonce`.

    With a cluster key (32 bytes, `wire.mac.derive_cluster_key`), both share one FrameMac."""
    mac = None
    if cluster_key is not None:
        mac = wire_mac.FrameMac(cluster_key, local_nonce)
    encoder = framing.FrameEncoder(mac=mac, frame_bytes_max=config.frame_bytes_max)
    return encoder, framing.FrameDecoder(config.frame_bytes_max, mac=mac)


def encode_frames(encoder: Any, messages: list[Any]) -> bytes:
    return encoder.encode_many(messages)


def load_cluster_key(path: str) -> bytes:
    """The cluster key from a key file. Raises OSError or LocalProtocolError (too short)."""
    with open(path, "rb") as file:
        return wire_mac.derive_cluster_key(file.read())


@dataclass(slots=True)
class Session:
    """What a completed handshake yields: the remote Hello and the stream's codec state."""

    remote: Hello
    encoder: Any
    decoder: Any


async def handshake(
    stream: trio.abc.Stream, hello: Hello, config: Config, cluster_key: bytes | None
) -> Session:
    """Send our Hello, read theirs, and check it. Raises RemoteProtocolError (bad or foreign
    Hello, timeout, no shared protocol version) or ConnectionClosed."""
    encoder, decoder = make_codec(config, cluster_key, hello.nonce)
    with trio.move_on_after(config.handshake_timeout_s) as scope:
        await stream.send_all(encoder.encode(hello))
        remote = await _receive_one(stream, decoder)
    if scope.cancelled_caught:
        raise RemoteProtocolError(f"no Hello within {config.handshake_timeout_s} s")
    if not isinstance(remote, Hello):
        raise RemoteProtocolError(f"expected Hello first, got {type(remote).__name__}")
    if remote.mesh != hello.mesh:
        raise RemoteProtocolError(f"Hello for mesh {remote.mesh!r}, this is {hello.mesh!r}")
    if remote.version_max < PROTOCOL_VERSION_MIN or remote.version_min > PROTOCOL_VERSION_MAX:
        raise RemoteProtocolError(f"no shared protocol version ({remote.version_min}-{remote.version_max})")
    if remote.role == "peer" and not remote.peer:
        raise RemoteProtocolError("a peer Hello must name the peer")
    return Session(remote, encoder, decoder)


async def _receive_one(stream: trio.abc.Stream, decoder: Any) -> Any:
    while True:
        message = decoder.next_message()
        if message is not framing.NEED_DATA:
            return message
        decoder.receive_data(await _receive_some(stream, decoder))


async def _receive_some(stream: trio.abc.Stream, decoder: Any) -> bytes:
    try:
        data = await stream.receive_some(RECEIVE_BYTES_MAX)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        raise ConnectionClosed(str(exc) or type(exc).__name__) from None
    if not data:
        decoder.end_of_stream()  # RemoteProtocolError when it stopped inside a frame
        raise ConnectionClosed("closed by the remote side")
    return data


class Outbox:
    """A bounded FIFO of messages waiting to be encoded and sent. A connection owns one; an
    outgoing peer link owns one across its reconnects (`connection`: who drains it now)."""

    __slots__ = ("messages", "frames_max", "connection")

    def __init__(self, frames_max: int) -> None:
        self.messages: deque[Any] = deque()
        self.frames_max = frames_max
        self.connection: Connection | None = None

    def put(self, message: Any) -> bool:
        """Queue `message`; False (nothing queued) when `frames_max` are waiting already."""
        if len(self.messages) >= self.frames_max:
            return False
        self.messages.append(message)
        return True


class Flusher:
    """Connections with messages queued since the owner's last `flush()`."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: list[Connection] = []

    def flush(self) -> None:
        while self.pending:
            pending, self.pending = self.pending, []
            # Encode everything first, then send: a master's pushes to its replicas then
            # leave back to back (encoding between the sends held the second replica back).
            ready = [(connection, connection._take_queued()) for connection in pending]
            for connection, data in ready:
                if data:
                    connection._send_now(data)


def _socket_fd(stream: trio.abc.Stream) -> int:
    """The socket's file descriptor, or -1 when `stream` is not a socket (then every send
    goes through the writer task)."""
    if isinstance(stream, trio.SocketStream):
        return stream.socket.fileno()
    return -1


class Connection:
    """One handshaken connection: `send_nowait` queues, `run` reads and writes until closed.

    With a `flusher`, `send_nowait` only queues and registers the connection with it; the
    owner's `flusher.flush()` sends. Without one, `send_nowait` sends at once. Either way a
    send that the socket cannot take whole is finished by the writer task, and frames leave
    in the order they were queued (each is encoded just before its bytes are handed on).

    The send queue is bounded by `config.send_queue_frames_max`; a remote that does not read
    fast enough to keep it from filling is dropped (`send_nowait` returns False and closes).
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        session: Session,
        config: Config,
        label: str,
        outbox: Outbox | None = None,
        flusher: Flusher | None = None,
    ) -> None:
        self.stream = stream
        self.remote = session.remote
        self.label = label
        self._encoder = session.encoder
        self._decoder = session.decoder
        self.outbox = Outbox(config.send_queue_frames_max) if outbox is None else outbox
        self.outbox.connection = self
        self._flusher = flusher
        self._fd = _socket_fd(stream)
        self._unsent = b""  # bytes a direct send left over, for the writer task
        self._writing = False  # the writer task owns the stream until it has sent everything
        self._flush_pending = False  # registered with the flusher
        self._waited = True  # the last read waited for the socket (no yield needed before the next)
        self._wake_writer = trio.Event()
        self._closed = False
        self._error: Exception | None = None
        self._cancel = trio.CancelScope()
        self._trace_names = ""  # the kinds in the last batch encoded (MESHSTREAM_TRACE)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def sending(self) -> bool:
        """Messages are queued or being written."""
        return bool(self.outbox.messages) or self._writing

    def send_nowait(self, message: Any) -> bool:
        """Queue one message. False (and the connection closes) if it is closed or full."""
        if self._closed:
            return False
        if not self.outbox.put(message):
            log.warning("%s: send queue full, dropping the connection (slow reader)", self.label)
            self.close()
            return False
        self.queued()
        return True

    def queued(self) -> None:
        """Messages were put in the outbox: send them now, or at the flusher's next flush."""
        if self._flusher is None:
            self.flush()
        elif not self._flush_pending:
            self._flush_pending = True
            self._flusher.pending.append(self)

    def flush(self) -> None:
        """Send what is queued: straight to the socket when the writer task is idle."""
        data = self._take_queued()
        if data:
            self._send_now(data)

    def _take_queued(self) -> bytes:
        """What is queued, encoded for a direct send; b"" when there is nothing to send or
        the writer task has the stream (then it takes the queue itself)."""
        self._flush_pending = False
        if self._writing or self._closed or not self.outbox.messages:
            return b""
        if self._fd < 0:
            self._hand_to_writer(b"")
            return b""
        return self._encode_queued()

    def _send_now(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._fail(ConnectionClosed(f"send failed: {exc}"))
            return
        if trace.ENABLED and sent:
            trace.note(f"sent {self._trace_names}")
        if sent < len(data) or self.outbox.messages:
            self._hand_to_writer(data[sent:])

    def _hand_to_writer(self, unsent: bytes) -> None:
        self._unsent = unsent
        self._writing = True
        self._wake_writer.set()

    def _encode_queued(self) -> bytes:
        messages = self.outbox.messages
        batch = [messages.popleft() for _ in range(min(len(messages), WRITE_BATCH_FRAMES_MAX))]
        if trace.ENABLED:
            self._trace_names = ",".join(sorted({type(message).__name__ for message in batch}))
        return encode_frames(self._encoder, batch)

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        self.close()

    def close(self) -> None:
        self._closed = True
        self._cancel.cancel()

    async def run(self, on_message: Callable[[Any], None], on_drained: Callable[[], None] | None = None) -> None:
        """Read and write until the remote closes, a protocol error, or `close()`.
        `on_drained()` is called after each run of messages handed to `on_message`, before
        waiting for more bytes (where an owner with a flusher flushes).

        Raises RemoteProtocolError or ConnectionClosed; returns quietly after `close()`."""
        try:
            with self._cancel:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._guard, self._write_loop)
                    nursery.start_soon(self._guard, self._read_loop, on_message, on_drained)
        finally:
            self._closed = True
            if self.outbox.connection is self:
                self.outbox.connection = None
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.stream)
        if self._error is not None:
            raise self._error

    async def _guard(self, loop: Callable[..., Any], *args: Any) -> None:
        # Either loop ending ends the connection; the first error is the one reported.
        try:
            await loop(*args)
        except (RemoteProtocolError, ConnectionClosed) as exc:
            if self._error is None:
                self._error = exc
        finally:
            self._cancel.cancel()

    async def _read_loop(self, on_message: Callable[[Any], None], on_drained: Callable[[], None] | None) -> None:
        decoder = self._decoder
        while True:
            handled = 0
            try:
                while True:
                    message = decoder.next_message()
                    if message is framing.NEED_DATA:
                        break
                    on_message(message)
                    handled += 1
                    if handled % READ_YIELD_MESSAGES == 0:
                        if on_drained is not None:
                            on_drained()
                        await trio.sleep(0)
            except RemoteProtocolError:
                if handled and on_drained is not None:
                    on_drained()  # what the good messages before the bad one queued still goes
                raise
            if handled and on_drained is not None:
                on_drained()
            data = await self._receive()
            if trace.ENABLED:
                trace.note(f"read {len(data)}")
            decoder.receive_data(data)

    async def _receive(self) -> bytes:
        """The next bytes from the remote. On a socket, read straight from the descriptor:
        trio's `receive_some` yields once after every successful read (a scheduling round
        between each message's arrival and its handling); here a read that follows a wait is
        handled at once, and only back-to-back reads yield (to let other tasks run)."""
        if self._fd < 0:
            return await _receive_some(self.stream, self._decoder)
        if not self._waited:
            await trio.lowlevel.checkpoint()
        self._waited = False
        while True:
            try:
                data = os.read(self._fd, RECEIVE_BYTES_MAX)
                break
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._fd)
                self._waited = True
            except OSError as exc:
                raise ConnectionClosed(str(exc) or type(exc).__name__) from None
        if not data:
            self._decoder.end_of_stream()  # RemoteProtocolError when it stopped inside a frame
            raise ConnectionClosed("closed by the remote side")
        return data

    async def _write_loop(self) -> None:
        """Send what a direct send left over, then whatever was queued meanwhile, until the
        outbox is empty; then hand the stream back to direct sends."""
        while True:
            if not self._writing:
                if not self.outbox.messages:
                    await self._wake_writer.wait()
                    self._wake_writer = trio.Event()
                    continue
                self._writing = True  # queued before the connection ran (a link's backlog)
            data = self._unsent or self._encode_queued()
            self._unsent = b""
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise ConnectionClosed(f"send failed: {exc}") from None
            if trace.ENABLED:
                trace.note(f"sent {self._trace_names}")
            if not self.outbox.messages:
                self._writing = False

    async def drain(self, timeout_s: float) -> None:
        """Wait until the send queue is empty (for a graceful exit), at most `timeout_s`."""
        with trio.move_on_after(timeout_s):
            while not self._closed and self.sending:
                await trio.sleep(0.005)
