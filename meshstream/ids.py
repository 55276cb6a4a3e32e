"""Names and their validation: stream names, natural keys, peer names, shards.

A stream name is 1..stream_name_chars_max printable characters; names starting with `$`
belong to the system (`$topology`). A natural key is 1..key_bytes_max bytes. A peer name is
1..64 characters of letters, digits, `.`, `-` and `_`. Shards come from BLAKE3 of the name,
so every peer on every platform maps a stream to the same shard.
"""

from __future__ import annotations

import re

import blake3

from meshstream.errors import LocalProtocolError

TOPOLOGY_STREAM = "$topology"
SYSTEM_PREFIX = "$"
STREAM_NAME_CHARS_MAX = 200  # long enough for hierarchical names, short enough to index
KEY_BYTES_MAX = 200  # room for a UUID, a URL-ish id or a composite business key
PEER_NAME_CHARS_MAX = 64

_PEER_NAME = re.compile(r"[A-Za-z0-9._-]+")


def validate_stream_name(stream: object, *, allow_system: bool = False) -> str:
    """Return `stream` if valid, else raise LocalProtocolError saying why."""
    if not isinstance(stream, str):
        raise LocalProtocolError(f"stream name must be text, not {type(stream).__name__}")
    if not 1 <= len(stream) <= STREAM_NAME_CHARS_MAX:
        raise LocalProtocolError(f"stream name must be 1-{STREAM_NAME_CHARS_MAX} characters, got {len(stream)}")
    if not stream.isprintable():
        raise LocalProtocolError(f"stream name {stream!r} has unprintable characters")
    if stream.startswith(SYSTEM_PREFIX) and not allow_system:
        raise LocalProtocolError(f"stream names starting with {SYSTEM_PREFIX!r} are reserved: {stream!r}")
    return stream


def validate_key(key: object) -> bytes:
    """Return `key` if it is 1..KEY_BYTES_MAX bytes, else raise LocalProtocolError."""
    if not isinstance(key, bytes):
        raise LocalProtocolError(f"key must be bytes, not {type(key).__name__}")
    if not 1 <= len(key) <= KEY_BYTES_MAX:
        raise LocalProtocolError(f"key must be 1-{KEY_BYTES_MAX} bytes, got {len(key)}")
    return key


def validate_peer_name(name: object) -> str:
    """Return `name` if it is a valid peer name, else raise LocalProtocolError."""
    if not isinstance(name, str) or not 1 <= len(name) <= PEER_NAME_CHARS_MAX or not _PEER_NAME.fullmatch(name):
        raise LocalProtocolError(
            f"peer name must be 1-{PEER_NAME_CHARS_MAX} characters of letters, digits, '.', '-', '_': {name!r}"
        )
    return name


def shard_of(stream: str, shards: int) -> int:
    """The shard a stream hashes to: blake3(stream) mod shards (first 8 bytes, big-endian)."""
    assert shards >= 1
    digest = blake3.blake3(stream.encode("utf-8")).digest(length=8)
    return int.from_bytes(digest, "big") % shards


def parse_address(text: str) -> tuple[str, int]:
    """Split HOST:PORT (IPv6 as [::1]:PORT); raise LocalProtocolError when malformed."""
    if not isinstance(text, str) or ":" not in text:
        raise LocalProtocolError(f"address must be HOST:PORT, got {text!r}")
    host, _, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise LocalProtocolError(f"address must be HOST:PORT with a port 0-65535, got {text!r}")
    return host, int(port_text)
