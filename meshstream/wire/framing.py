"""Framing: messages to bytes on a stream connection and back, incrementally, sans-IO.

A frame on the wire:

    length (4 bytes, big-endian) | payload (length bytes) | tag (16 bytes, only with a MAC)

`payload` is the CBOR array `[protocol_version, [kind, fields...]]` (the message array of
`schema.encode_message`). `length` counts the payload only; the tag's presence is fixed per
connection by configuration, not signalled. `tag` is described in `wire.mac`.

`FrameDecoder` (as h11's connection object) owns no socket: feed it `receive_data(bytes)`,
then call `next_message()` until it returns `NEED_DATA`. It reads the length prefix first
and refuses a frame longer than `frame_bytes_max` before buffering any of its body. Any
malformed, oversized, wrong-version, unauthenticated or undecodable frame raises
RemoteProtocolError, and the decoder is dead from then on (every later call raises): a
byte stream that went wrong once cannot be resynchronised. Call `end_of_stream()` when the
peer closes: it raises if the peer stopped inside a frame (a truncated frame).

With a `FrameMac` (one per connection, shared by its encoder and decoder) the first frame
each way must be the sender's Hello; the encoder refuses any other message until the
peer's Hello has been decoded, because the session keys need both nonces. Every encoded
frame must then be sent, in order: each one advances the direction's frame counter.

`FrameEncoder.encode(msg)` returns one frame; `encode_many(msgs)` returns the frames of
many messages as one byte string for one send (batching many small frames into one send is
the 28x throughput difference measured in DESIGN section 8).

Buffering: received bytes go to one bytearray with a read offset; consumed bytes are
dropped only once they are more than half the buffer, so the cost per byte stays O(1).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any, Final

from meshstream.cbor import dumps, loads_strict
from meshstream.errors import LocalProtocolError, RemoteProtocolError
from meshstream.wire.mac import MAC_BYTES, FrameMac
from meshstream.wire.messages import PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN, Hello
from meshstream.wire.schema import decode_message, encode_message

LENGTH_BYTES = 4
_LENGTH = struct.Struct(">I")
LENGTH_MAX = 2**32 - 1


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()
"""Returned by `FrameDecoder.next_message` when no complete frame is buffered."""


def _payload(msg: Any, version: int) -> bytes:
    try:
        return dumps([version, encode_message(msg)])
    except KeyError:
        raise LocalProtocolError(f"{type(msg).__name__} is not a registered message") from None


class FrameEncoder:
    """Turns messages into frames. With a FrameMac, the first frame must be our Hello."""

    __slots__ = ("_mac", "_version", "frame_bytes_max")

    def __init__(self, mac: FrameMac | None = None, *, version: int = PROTOCOL_VERSION_MAX,
                 frame_bytes_max: int = LENGTH_MAX) -> None:
        if not PROTOCOL_VERSION_MIN <= version <= PROTOCOL_VERSION_MAX:
            raise LocalProtocolError(f"protocol version {version} is not supported")
        self._mac = mac
        self._version = version
        self.frame_bytes_max = frame_bytes_max  # refuse to build what the peer would refuse

    def encode(self, msg: Any) -> bytes:
        """One frame carrying `msg`. Raises LocalProtocolError for an unregistered or
        oversized message, or (with a MAC) a message out of handshake order. With a MAC,
        every frame encoded must be sent, in order: each advances the frame counter."""
        return self.encode_many((msg,))

    def encode_many(self, messages: Iterable[Any]) -> bytes:
        """The frames of `messages`, in order, concatenated for one send.

        Every payload is built before any is tagged, so a bad message raises before the
        MAC counter moves and the connection stays usable.
        """
        payloads = [(msg, self._checked_payload(msg)) for msg in messages]
        parts: list[bytes] = []
        for msg, payload in payloads:
            prefix = len(payload).to_bytes(LENGTH_BYTES, "big")
            parts.append(prefix)
            parts.append(payload)
            if self._mac is None:
                continue
            if isinstance(msg, Hello):
                parts.append(self._mac.seal_hello(msg.nonce, prefix, payload))
            else:
                parts.append(self._mac.seal(prefix, payload))
        return b"".join(parts)

    def _checked_payload(self, msg: Any) -> bytes:
        payload = _payload(msg, self._version)
        if len(payload) > self.frame_bytes_max:
            raise LocalProtocolError(f"{type(msg).__name__} frame of {len(payload)} bytes exceeds "
                                     f"frame_bytes_max {self.frame_bytes_max}")
        return payload


class FrameDecoder:
    """Incremental frame decoder for one connection (see the module docstring)."""

    __slots__ = ("frame_bytes_max", "_mac", "_buffer", "_offset", "_error")

    def __init__(self, frame_bytes_max: int, mac: FrameMac | None = None) -> None:
        if type(frame_bytes_max) is not int or not 1 <= frame_bytes_max <= LENGTH_MAX:
            raise LocalProtocolError(f"frame_bytes_max must be 1..{LENGTH_MAX}, got {frame_bytes_max!r}")
        self.frame_bytes_max = frame_bytes_max
        self._mac = mac
        self._buffer = bytearray()
        self._offset = 0
        self._error: RemoteProtocolError | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet consumed by a complete frame."""
        return len(self._buffer) - self._offset

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes from the connection. Raises RemoteProtocolError if the decoder is
        dead, or if the pending frame's length prefix is over the limit."""
        self._check_alive()
        self._buffer += data
        if self.buffered_bytes >= LENGTH_BYTES:
            self._frame_length()  # refuse an oversized frame before buffering more of it

    def next_message(self) -> Any:
        """The next complete message, or NEED_DATA. Raises RemoteProtocolError (and the
        decoder stays dead) for any bad frame."""
        self._check_alive()
        try:
            return self._next_message()
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise

    def end_of_stream(self) -> None:
        """The peer closed the connection. Raises RemoteProtocolError if it did so in the
        middle of a frame (a truncated frame), else does nothing."""
        self._check_alive()
        if self.buffered_bytes:
            self._fail(RemoteProtocolError(f"connection closed inside a frame ({self.buffered_bytes} bytes pending)"))
            raise self._error  # type: ignore[misc]

    # -- internals --
    def _check_alive(self) -> None:
        if self._error is not None:
            raise RemoteProtocolError(f"frame decoder is dead after an earlier error: {self._error}")

    def _fail(self, exc: RemoteProtocolError) -> None:
        self._error = exc
        self._buffer = bytearray()
        self._offset = 0

    def _frame_length(self) -> int:
        length = _LENGTH.unpack_from(self._buffer, self._offset)[0]
        if length == 0 or length > self.frame_bytes_max:
            self._fail(RemoteProtocolError(f"frame length {length} is outside 1..{self.frame_bytes_max}"))
            raise self._error  # type: ignore[misc]
        return length

    def _next_message(self) -> Any:
        buffer, start = self._buffer, self._offset
        if len(buffer) - start < LENGTH_BYTES:
            return NEED_DATA
        length = self._frame_length()
        body_start = start + LENGTH_BYTES
        body_end = body_start + length
        frame_end = body_end + (MAC_BYTES if self._mac is not None else 0)
        if len(buffer) < frame_end:
            return NEED_DATA
        payload = buffer[body_start:body_end]  # one copy out of the buffer
        if self._mac is None:
            self._consume(frame_end)
            return _decode_payload(payload)
        prefix, tag = bytes(buffer[start:body_start]), bytes(buffer[body_end:frame_end])
        self._consume(frame_end)
        return self._open(prefix, payload, tag)

    def _open(self, prefix: bytes, payload: bytearray, tag: bytes) -> Any:
        mac = self._mac
        assert mac is not None
        if not mac.expecting_hello:
            mac.open(tag, prefix, payload)  # authenticate before parsing anything
            return _decode_payload(payload)
        msg = _decode_payload(payload)  # the key of frame 0 comes from the Hello's nonce
        if not isinstance(msg, Hello):
            raise RemoteProtocolError(f"the first frame must be a Hello, got {type(msg).__name__}")
        mac.open_hello(msg.nonce, tag, prefix, payload)
        return msg

    def _consume(self, frame_end: int) -> None:
        """Drop bytes up to `frame_end`; compact only when the dead prefix dominates."""
        if frame_end == len(self._buffer):
            self._buffer.clear()
            self._offset = 0
        elif frame_end > len(self._buffer) // 2:
            del self._buffer[:frame_end]
            self._offset = 0
        else:
            self._offset = frame_end


def _decode_payload(payload: bytes | bytearray) -> Any:
    """Decode a frame payload `[version, message_array]`."""
    value = loads_strict(payload)
    if type(value) is not list or len(value) != 2:
        raise RemoteProtocolError("a frame payload must be [version, message]")
    version, body = value
    if type(version) is not int or not PROTOCOL_VERSION_MIN <= version <= PROTOCOL_VERSION_MAX:
        raise RemoteProtocolError(f"unsupported protocol version {version!r}")
    return decode_message(body)
