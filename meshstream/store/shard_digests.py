"""Shard digests for anti-entropy: 16 bytes per shard that are equal on two stores exactly
when the version vectors of the shard's streams are (`$` streams left out).

Each stream's digest is a BLAKE3 hash of its name and vector; a shard's is the XOR of its
streams', so a changed vector updates one shard's digest with two XORs instead of hashing
the shard again. The index lists the streams whose vectors changed since the last call
(`StoreIndex.changed_streams`); a table per shard count is built on first use.
"""

from __future__ import annotations

from collections.abc import Sequence

import blake3

from meshstream import cbor
from meshstream.errors import LocalProtocolError
from meshstream.ids import SYSTEM_PREFIX, shard_of
from meshstream.store.index import StoreIndex


class ShardDigests:
    def __init__(self) -> None:
        self._stream_hashes: dict[int, int] = {}  # stream id -> its digest, as an int
        self._shard_xors: dict[int, list[int]] = {}  # shard count -> each shard's XOR

    def digests(self, index: StoreIndex, shards: Sequence[int], total: int) -> list[bytes]:
        """The digest of each of `shards` out of `total`."""
        if not shards:
            return []
        if not 0 <= min(shards) <= max(shards) < total:
            raise LocalProtocolError(f"a shard out of range 0..{total - 1}")
        self._refresh(index)
        xors = self._shard_xors.get(total)
        if xors is None:
            xors = self._shard_xors[total] = [0] * total
            for sid, hashed in self._stream_hashes.items():
                xors[shard_of(index.streams[sid].name, total)] ^= hashed
        return [xors[shard].to_bytes(16, "little") for shard in shards]

    def _refresh(self, index: StoreIndex) -> None:
        for sid in sorted(index.changed_streams):
            stream = index.streams[sid]
            if stream.name.startswith(SYSTEM_PREFIX):
                continue
            flat = [item for pair in sorted(stream.vector.items()) for item in pair]
            new = int.from_bytes(blake3.blake3(cbor.dumps([stream.name, flat])).digest(length=16), "little")
            new = new if flat else 0
            change = self._stream_hashes.get(sid, 0) ^ new
            self._stream_hashes[sid] = new
            for shards, xors in self._shard_xors.items():
                xors[shard_of(stream.name, shards)] ^= change
        index.changed_streams.clear()
