"""The error families of meshstream, by whose fault an error is.

- `RemoteProtocolError`: bytes from a peer, a client or a file we did not write are wrong.
  A peer logs it, closes that connection (or skips that record) and keeps serving.
- `CorruptRecord`: bytes on our own disk no longer match their digest.
- `LocalProtocolError`: our own caller misused an API (bad name, bad argument).
- `ConfigError`: a configuration value or scenario file is invalid; the message names it.
- `KeyConflict`: an append reused a natural key with different content.
- `WriteFailed`: an append did not succeed; `definite` tells whether nothing was written
  (True) or whether it may still spread (False).

Our own bugs are `assert`s, never one of these.
"""

from __future__ import annotations


class MeshError(Exception):
    """Base of every error meshstream raises on purpose."""


class RemoteProtocolError(MeshError):
    """Bytes received from outside (socket, foreign file) are malformed or not allowed."""


class CorruptRecord(MeshError):
    """A stored record failed its digest or could not be decoded.

    `segment` and `offset` locate it; the store keeps serving every other record.
    """

    def __init__(self, message: str, *, segment: str = "", offset: int = -1) -> None:
        super().__init__(message)
        self.segment = segment
        self.offset = offset


class LocalProtocolError(MeshError):
    """Our caller used an API wrongly: an invalid stream name, key, argument or state."""


class ConfigError(LocalProtocolError):
    """A configuration or scenario value is invalid; the message names the key."""


class KeyConflict(MeshError):
    """An event with this natural key exists with different content."""

    def __init__(self, stream: str, key: bytes) -> None:
        super().__init__(f"key {key!r} already exists in stream {stream!r} with different content")
        self.stream = stream
        self.key = key


class WriteFailed(MeshError):
    """An append failed. `definite=True`: nothing was written. False: it may still spread."""

    def __init__(self, message: str, *, definite: bool) -> None:
        super().__init__(message)
        self.definite = definite
