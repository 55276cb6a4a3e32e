"""Events and their envelope: canonical CBOR bytes sealed with a BLAKE3 digest.

An `Event` is one immutable fact in a stream: its natural key, data, metadata, the dot of
the peer that sequenced it and its causal context. On the wire and on disk it travels as an
*envelope*: the CBOR array `[body, digest]` where `body` is the canonical CBOR encoding of

    [ENVELOPE_VERSION, stream, key, data, metadata, dot, context]

and `digest` is BLAKE3-256 of `body`. Checking an envelope hashes `body` as received, with
no re-encoding. `decode_event` raises RemoteProtocolError for any envelope that is
malformed or whose digest does not match; the store turns that into CorruptRecord.

Metadata is a small map of text to text, integer or bytes, kept as a tuple of pairs in
canonical key order so that events are hashable and encode to one byte string.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Union

import blake3

from meshstream import ids
from meshstream.cbor import canonical_items, canonical_text_key, dumps, loads_strict
from meshstream.clocks import Dot, VersionVector
from meshstream.errors import LocalProtocolError, RemoteProtocolError

ENVELOPE_VERSION = 1
DIGEST_BYTES = 32
DATA_BYTES_HARD_MAX = 64 * 1024 * 1024  # decoder sanity ceiling; Config.event_bytes_max is the policy
METADATA_ENTRIES_HARD_MAX = 256
METADATA_VALUE_BYTES_HARD_MAX = 64 * 1024
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

MetadataValue = Union[str, int, bytes]
Metadata = tuple[tuple[str, MetadataValue], ...]


@dataclass(frozen=True, slots=True)
class Event:
    stream: str
    key: bytes
    data: bytes
    metadata: Metadata
    dot: Dot
    context: VersionVector
    digest: bytes
    envelope: bytes = field(repr=False, compare=False)

    @classmethod
    def sequence(
        cls,
        stream: str,
        key: bytes,
        data: bytes,
        metadata: Mapping[str, MetadataValue] | Metadata,
        dot: Dot,
        context: VersionVector,
    ) -> "Event":
        """Build and seal an event. Raises LocalProtocolError for invalid fields."""
        ids.validate_stream_name(stream, allow_system=True)
        ids.validate_key(key)
        if not isinstance(data, bytes) or len(data) > DATA_BYTES_HARD_MAX:
            raise LocalProtocolError("event data must be bytes within the size limit")
        pairs = normalize_metadata(metadata)
        body = dumps(
            [ENVELOPE_VERSION, stream, key, data, canonical_items(dict(pairs)), dot.to_cbor(), context.to_cbor()]
        )
        digest = blake3.blake3(body).digest()
        return cls(stream, key, data, pairs, dot, context, digest, dumps([body, digest]))

    @classmethod
    def seal(cls, stream: str, key: bytes, data: bytes, metadata: Metadata, dot: Dot,
             context: VersionVector) -> "Event":
        """`sequence` without the checks, for fields the caller has validated and metadata
        already normalized (a master's batch after `validate_append`): the same bytes."""
        body = dumps([ENVELOPE_VERSION, stream, key, data, dict(metadata), dot.to_cbor(), context.to_cbor()])
        digest = blake3.blake3(body).digest()
        return cls(stream, key, data, metadata, dot, context, digest, dumps([body, digest]))

    def metadata_dict(self) -> dict[str, MetadataValue]:
        return dict(self.metadata)

    def same_content(self, other: "Event") -> bool:
        """True when both carry the same stream, key, data and metadata (dots may differ)."""
        return (self.stream, self.key, self.data, self.metadata) == (
            other.stream,
            other.key,
            other.data,
            other.metadata,
        )

    @property
    def natural_key(self) -> tuple[str, bytes]:
        return (self.stream, self.key)

    def size(self) -> int:
        return len(self.envelope)


def normalize_metadata(metadata: Mapping[str, MetadataValue] | Metadata) -> Metadata:
    """Validate metadata and return it as pairs in canonical key order.

    Raises LocalProtocolError for a non-text key, a value that is not text, int64 or bytes,
    or a map beyond the hard limits.
    """
    items = metadata.items() if isinstance(metadata, Mapping) else metadata
    result: dict[str, MetadataValue] = {}
    for pair in items:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise LocalProtocolError("metadata must be a map of text to text, integer or bytes")
        name, value = pair
        if not isinstance(name, str) or not 1 <= len(name) <= 128 or name in result:
            raise LocalProtocolError(f"metadata keys must be unique text of 1-128 characters: {name!r}")
        if isinstance(value, bool) or not isinstance(value, (str, int, bytes)):
            raise LocalProtocolError(f"metadata {name!r}: values must be text, integers or bytes")
        if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
            raise LocalProtocolError(f"metadata {name!r}: integers must fit in 64 bits")
        if isinstance(value, (str, bytes)) and len(value) > METADATA_VALUE_BYTES_HARD_MAX:
            raise LocalProtocolError(f"metadata {name!r}: value too long")
        result[name] = value
    if len(result) > METADATA_ENTRIES_HARD_MAX:
        raise LocalProtocolError(f"metadata has {len(result)} entries; at most {METADATA_ENTRIES_HARD_MAX}")
    return tuple((name, result[name]) for name in sorted(result, key=canonical_text_key))


def decode_event(envelope: bytes) -> Event:
    """Check and decode one envelope. Raises RemoteProtocolError if malformed or tampered."""
    outer = loads_strict(envelope)
    if not isinstance(outer, list) or len(outer) != 2:
        raise RemoteProtocolError("an envelope must be [body, digest]")
    body, digest = outer
    if not isinstance(body, bytes) or not isinstance(digest, bytes) or len(digest) != DIGEST_BYTES:
        raise RemoteProtocolError("an envelope must hold a byte-string body and a 32-byte digest")
    if blake3.blake3(body).digest() != digest:
        raise RemoteProtocolError("envelope digest does not match its body")
    return _decode_body(body, digest, bytes(envelope))


def _decode_body(body: bytes, digest: bytes, envelope: bytes) -> Event:
    fields = loads_strict(body)
    if not isinstance(fields, list) or len(fields) != 7:
        raise RemoteProtocolError("an envelope body must have 7 fields")
    version, stream, key, data, metadata, dot, context = fields
    if version != ENVELOPE_VERSION or type(version) is not int:
        raise RemoteProtocolError(f"unsupported envelope version {version!r}")
    if not isinstance(data, bytes) or len(data) > DATA_BYTES_HARD_MAX:
        raise RemoteProtocolError("event data must be a byte string within the size limit")
    if not isinstance(metadata, dict):
        raise RemoteProtocolError("event metadata must be a map")
    try:
        ids.validate_stream_name(stream, allow_system=True)
        ids.validate_key(key)
        pairs = normalize_metadata(tuple(metadata.items()))
    except LocalProtocolError as exc:
        raise RemoteProtocolError(f"invalid event: {exc}") from None
    if list(metadata) != [name for name, _ in pairs]:
        raise RemoteProtocolError("event metadata keys are not in canonical order")
    return Event(stream, key, data, pairs, Dot.from_cbor(dot), VersionVector.from_cbor(context), digest, envelope)
