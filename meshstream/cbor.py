"""Strict CBOR decoding of untrusted bytes and canonical-order map building.

`loads_strict` decodes exactly one CBOR item that must fill the whole buffer, and turns any
decoder failure into RemoteProtocolError. Semantic tags decode to types (datetime, Decimal,
...) that every caller's structural validation then rejects, so an unknown tag never
reaches protocol logic. Encoding never uses `canonical=True` (about 4x slower): callers
build maps with keys already in canonical order (`canonical_items`) and encode normally.
"""

from __future__ import annotations

import io
from typing import Any

import cbor2

from meshstream.errors import RemoteProtocolError

_REJECT = object()


def _reject_tag(decoder: object, tag: cbor2.CBORTag) -> object:
    raise RemoteProtocolError(f"CBOR tag {tag.tag} is not allowed")


def loads_strict(data: bytes) -> Any:
    """Decode one CBOR item spanning all of `data`; raise RemoteProtocolError otherwise."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise RemoteProtocolError(f"expected bytes, got {type(data).__name__}")
    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(stream, tag_hook=_reject_tag).decode()
    except RemoteProtocolError:
        raise
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError, MemoryError,
            IndexError, KeyError, UnicodeDecodeError, EOFError) as exc:
        raise RemoteProtocolError(f"malformed CBOR: {exc}") from None
    except Exception as exc:  # the C decoder has raised unexpected types on hostile input
        raise RemoteProtocolError(f"malformed CBOR: {type(exc).__name__}: {exc}") from None
    if stream.tell() != len(data):
        raise RemoteProtocolError(f"{len(data) - stream.tell()} trailing bytes after CBOR item")
    return value


def dumps(value: Any) -> bytes:
    """Encode `value`; maps must already be in canonical key order (see canonical_items)."""
    return cbor2.dumps(value)


def canonical_text_key(key: str) -> tuple[int, bytes]:
    """Sort key that puts text map keys in RFC 7049 canonical (length-first) order."""
    encoded = key.encode("utf-8")
    return (len(encoded), encoded)


def canonical_items(mapping: dict[str, Any]) -> dict[str, Any]:
    """A dict with the same items, inserted in canonical key order, so plain
    `cbor2.dumps` gives the same bytes as `canonical=True`."""
    return {key: mapping[key] for key in sorted(mapping, key=canonical_text_key)}
