"""`SegmentStore`: the default EventStore, an append-only log of segment files.

A data directory holds `NNNNNNNN.seg` segment files (records as in `records.py`), a
`LOCK` file (flock: one process per directory) and `index.snapshot`, a checkpoint of the
in-memory indexes. A batch is laid out in the caller's thread, written and fsynced with
one `write` + `fsync` (group commit) by `write_prepared` (which may run in a worker
thread and touches only the writer's file descriptor), and then applied to the indexes
by `commit_prepared`. A batch never straddles segments: when it would pass
`segment_bytes_max` it starts a new one.

Recovery (`open`): load the snapshot if it is sound and every segment it covers is still
at least as long as it recorded, then replay only the records after it; otherwise replay
everything. Replay truncates a torn tail and registers damaged records as corrupt. A
snapshot is written on `close` and after a commit once 1/8 of the store (at least 100k
records) is new since the last one, so a crash leaves little to replay (that one is
written by a background thread from a copy of the indexes: `checkpoint`). The snapshot is
raw array sections read straight into place, so loading costs no more memory than the
indexes themselves (about 55-70 bytes an event, the key table's load varying).

`drop_streams` appends drop records (`records.py`) with one fsync; their streams' records
stay in the segments (there is no compaction yet) but are never read again once a
snapshot covers them, and a replay forgets them at the drop record.

Reads go through per-segment read descriptors owned by the caller's thread, and runs of
adjacent records are fetched with one `pread`.
"""

from __future__ import annotations

import fcntl
import itertools
from itertools import repeat
import logging
import mmap
import operator
import os
import threading
from array import array
from collections.abc import Sequence
from typing import Any

import blake3
import cbor2

from meshstream.config import Config
from meshstream.envelope import Event
from meshstream.envelope_run import EnvelopeRun
from meshstream.errors import CorruptRecord, LocalProtocolError
from meshstream.store import records
from meshstream.store.base import OP_EVENT, IndexedStore, Prepared
from meshstream.store.index import CORRUPT, DEAD, HELD_STATES, LIVE, LOSER, StoreIndex, key_hash

SEGMENT_SUFFIX = ".seg"
SNAPSHOT_NAME = "index.snapshot"
SNAPSHOT_MAGIC = b"MSX2"
SNAPSHOT_VERSION = 3  # 3: the key index is a hash table
DIGEST_BYTES = 32
SNAPSHOT_EVERY_RECORDS_MIN = 250_000  # a checkpoint after this many new records, or
SNAPSHOT_EVERY_FRACTION = 4  # a quarter of the store, whichever is more: rewriting the snapshot
# costs about 4 x 70 bytes per record appended once the store is past 1M records, and a replay
# after a crash stays under ~250k records or a quarter of a full scan (replay: ~7 us a record;
# at a half, opening 1M events after a crash took 3.6 s, over its 3 s goal). At 100k and an
# eighth, a 1M-event catch-up wrote ten snapshots of its growing index: ~10% of its CPU.
SCRUB_READ_BYTES_MAX = 1 << 20
REPLAY_RUN_RECORDS = 1000  # records decoded and registered together on open
_envelope_of = operator.attrgetter("envelope")
assert records.HEADER.format.endswith(f"{records.RECORD_DIGEST_BYTES}s")  # packing a digest keeps its first 16 bytes
_digest_of = operator.attrgetter("digest")
log = logging.getLogger("meshstream.store")


def segment_name(segment: int) -> str:
    return f"{segment:08d}{SEGMENT_SUFFIX}"


def list_segments(directory: str) -> list[int]:
    """Segment numbers present in `directory`, ascending."""
    found = []
    for name in os.listdir(directory):
        stem = name[: -len(SEGMENT_SUFFIX)]
        if name.endswith(SEGMENT_SUFFIX) and stem.isdigit() and len(stem) == 8:
            found.append(int(stem))
    return sorted(found)


def records_between_snapshots(records: int) -> int:
    """New records after which a store of `records` records writes its index snapshot."""
    return max(SNAPSHOT_EVERY_RECORDS_MIN, records // SNAPSHOT_EVERY_FRACTION)


class SegmentStore(IndexedStore):
    """The segment-log EventStore. Build with `SegmentStore.open(directory, config)`."""

    def __init__(self, directory: str, config: Config) -> None:
        super().__init__()
        self._directory = directory
        self._config = config
        self._rid_segment = array("I")
        self._rid_offset = array("Q")
        self._rid_length = array("I")
        self._read_fds: dict[int, int] = {}  # caller's thread only
        self._tail_segment = 1  # where the next batch goes, and how long it is (committed)
        self._tail_size = 0
        self._writer_segment = 0  # the writer's descriptor: touched by write_prepared only
        self._writer_fd = -1
        self._lock_fd = -1
        self._records_at_snapshot = 0
        self._checkpoint_thread: threading.Thread | None = None  # a snapshot being written
        self.recovery: dict[str, Any] = {}
        self._recovered = False

    @classmethod
    def open(cls, directory: str, config: Config | None = None) -> "SegmentStore":
        """Open (creating if needed) the store in `directory` and recover it.

        Raises LocalProtocolError if another process holds the directory.
        """
        os.makedirs(directory, exist_ok=True)
        store = cls(directory, config or Config())
        store._lock()
        try:
            store._recover()
        except BaseException:
            store.close()
            raise
        return store

    def _lock(self) -> None:
        self._lock_fd = os.open(os.path.join(self._directory, "LOCK"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise LocalProtocolError(f"data directory {self._directory} is in use by another process") from None

    def _path(self, segment: int) -> str:
        return os.path.join(self._directory, segment_name(segment))

    # -- recovery --
    def _recover(self) -> None:
        segments = list_segments(self._directory)
        covered = self._load_snapshot(segments)
        self._records_at_snapshot = self._index.records()  # a replayed tail is checkpointed later
        self.recovery = {"snapshot": bool(covered), "replayed": 0, "truncated_bytes": 0}
        for segment in segments:
            start = covered.get(segment, 0)
            self._replay_segment(segment, start, last=segment == segments[-1])
        if segments:
            self._tail_segment = segments[-1]
            self._tail_size = os.path.getsize(self._path(segments[-1]))
        self._recovered = True

    def _replay_segment(self, segment: int, start: int, last: bool) -> None:
        """Replay a segment from `start`: runs of sound event records in bulk
        (`records.scan_run`, `_replay_run`), anything else one record at a time through
        `records.scan_segment` (dot records, damage, a torn tail)."""
        path = self._path(segment)
        size = os.path.getsize(path)
        if size <= start:
            return
        with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            offset = start
            while offset < size:
                events, ats, lengths = records.scan_run(data, offset, size, REPLAY_RUN_RECORDS)
                if events:
                    self._replay_run(segment, events, ats, lengths)
                    offset = ats[-1] + lengths[-1]
                    continue
                found = next(records.scan_segment(data, offset))
                if found.error == records.TORN and last:
                    self.recovery["truncated_bytes"] = size - found.offset
                    break
                self._replay_record(segment, found)
                offset = found.offset + found.length
        if self.recovery.get("truncated_bytes") and last:
            os.truncate(path, size - self.recovery["truncated_bytes"])

    def _replay_run(self, segment: int, events: list[Event], ats: list[int], lengths: list[int]) -> None:
        """Apply sound event records in order: the prefix of new keys and dots in one
        `add_events`, anything else through `_replay_event`."""
        self.recovery["replayed"] += len(events)
        index, first, start = self._index, self._index.records(), 0
        while start < len(events):
            end, hashes = self._new_prefix(events, start)
            if end > start:
                index.add_events(events[start:end], hashes)
            if end < len(events):
                self._replay_event(events[end])
                end += 1
            start = end
        assert index.records() == first + len(events) == len(self._rid_segment) + len(events)
        self._rid_segment.extend(array("I", [segment]) * len(events))
        self._rid_offset.extend(ats)
        self._rid_length.extend(lengths)

    def _new_prefix(self, events: list[Event], start: int) -> tuple[int, list[int]]:
        """(end, hashes): events[start:end] hold keys and dots new to the index and to
        each other (the same test as prepare_batch's fast path), with their key hashes."""
        index, hashes, seen = self._index, [], set()
        key_known, tops = index.keys.contains, {}
        for event in events[start:]:
            hashed = key_hash(event.stream, event.key)
            dot = event.dot
            top = tops.get((event.stream, dot.peer))
            if top is None:
                found = index.stream(event.stream)
                log = None if found is None else found.logs.get(dot.peer)
                top = log.counters[-1] if log is not None and log.counters else 0
            if dot.counter <= top or hashed in seen or key_known(hashed):
                break
            tops[event.stream, dot.peer] = dot.counter
            seen.add(hashed)
            hashes.append(hashed)
        return start + len(hashes), hashes

    def _replay_record(self, segment: int, found: records.Scanned) -> None:
        self.recovery["replayed"] += 1
        event, dot_record, dropped = None, None, None
        try:
            if found.kind == records.KIND_EVENT:  # the scan checked its digest: decode only
                start, end = records.body_span(found.body)
                event = records.decode_trusted(found.body, start, end)
            elif found.kind == records.KIND_DOT:
                dot_record = records.decode_dot_body(found.body)
            elif found.kind == records.KIND_DROP:
                dropped = records.decode_drop_body(found.body)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, cbor2.CBORDecodeError):
            found = records.Scanned(found.offset, found.length, 0, b"", "undecodable body")
        if event is not None:
            rid = self._replay_event(event)
        elif dropped is not None:
            if dropped in self._index.stream_ids:
                self._forget(dropped)
            rid = self._index.register_marker()
        elif dot_record is not None:
            rid = self._replay_dot(*dot_record)
        else:
            rid = self._index.register_unknown()
            self._corrupt[rid] = records.corrupt_error(segment_name(segment), found.offset, found.error)
        self._add_location(rid, segment, found.offset, found.length)

    def _replay_event(self, event: Event) -> int:
        """Apply an event record found on disk, by the rules that wrote it."""
        index, hashed = self._index, key_hash(event.stream, event.key)
        found = index.stream(event.stream)
        if found is None or not index.keys.contains(hashed):
            log = None if found is None else found.logs.get(event.dot.peer)
            if log is None or log.index_of(event.dot.counter) < 0:
                return index.add_events([event], [hashed])  # the usual case: a new key and dot
        holder, holder_event = self._lookup(event.stream, event.key, hashed)
        if holder is None and self._dot_held(event.stream, event.dot):
            return index.register_dead(event.stream, event.dot)
        if holder is not None and holder_event is not None and event.digest > holder_event.digest:
            return index.add_loser_dot(event.stream, event.dot)
        previous = self._dot_holder(event.stream, event.dot)
        rid = index.add_event(event, hashed)
        if holder is not None:  # corrupt, an older copy (a repair) or a conflict's loser
            same = holder_event is None or holder_event.digest == event.digest
            self._retire(holder, DEAD if same else LOSER)
        if previous >= 0 and previous != holder and index.rid_state[previous] == CORRUPT:
            self._retire(previous, DEAD)
        return rid

    def _replay_dot(self, stream: str, dot) -> int:
        if self._dot_held(stream, dot):
            return self._index.register_dead(stream, dot)
        previous = self._dot_holder(stream, dot)
        rid = self._index.add_loser_dot(stream, dot)
        if previous >= 0 and self._index.rid_state[previous] == CORRUPT:
            self._retire(previous, DEAD)
        return rid

    def _dot_held(self, stream: str, dot) -> bool:
        rid = self._dot_holder(stream, dot)
        return rid >= 0 and self._index.rid_state[rid] in HELD_STATES

    def _add_location(self, rid: int, segment: int, offset: int, length: int) -> None:
        assert rid == len(self._rid_segment)
        self._rid_segment.append(segment)
        self._rid_offset.append(offset)
        self._rid_length.append(length)

    # -- snapshot --
    # Layout: magic | u32 header length | CBOR header (small fields, and the typecode and
    # length of each section) | the sections, raw array bytes | BLAKE3 of all but the magic.
    # Arrays are read straight into place (array.fromfile): no blob, no decoded copy.

    def _load_snapshot(self, segments: list[int]) -> dict[int, int]:
        """Install the snapshot's indexes; return {segment: bytes covered}, or {} to rescan."""
        path = os.path.join(self._directory, SNAPSHOT_NAME)
        try:
            file = open(path, "rb")
        except FileNotFoundError:
            return {}
        with file:
            try:
                return self._read_snapshot(file, segments)
            except (ValueError, KeyError, TypeError, IndexError, EOFError, StopIteration, OSError,
                    cbor2.CBORDecodeError):
                return {}

    def _read_snapshot(self, file, segments: list[int]) -> dict[int, int]:
        start = file.read(8)
        if start[:4] != SNAPSHOT_MAGIC:
            return {}
        header = file.read(int.from_bytes(start[4:8], "little"))
        hasher = blake3.blake3(start[4:8])
        hasher.update(header)
        value = cbor2.loads(header)
        covered = {segment: size for segment, size in value["segments"]}
        if value["version"] != SNAPSHOT_VERSION or not self._snapshot_fits(covered, segments):
            return {}
        layout = iter(value["sections"])

        def take(typecode: str, count: int | None = None):
            code, length = next(layout)
            if code != typecode or (count is not None and length != count):
                raise ValueError("snapshot section out of place")
            if code == "y":
                part = bytearray(length)
                if file.readinto(part) != length:
                    raise EOFError
            else:
                part = array(code)
                part.fromfile(file, length)
            hasher.update(memoryview(part).cast("B"))
            return part

        index = StoreIndex.from_snapshot(value["index"], take)
        locations = [take("I"), take("Q"), take("I")]
        if next(layout, None) is not None or file.read(DIGEST_BYTES + 1) != hasher.digest():
            return {}
        if not all(len(part) == index.records() for part in locations):
            return {}
        self._index = index
        self._rid_segment, self._rid_offset, self._rid_length = locations
        self._corrupt = {rid: records.corrupt_error(segment, offset, reason)
                         for rid, segment, offset, reason in value["corrupt"]}
        return covered

    def _snapshot_fits(self, covered: dict[int, int], segments: list[int]) -> bool:
        if list(covered) != segments[: len(covered)]:
            return False
        return all(os.path.getsize(self._path(segment)) >= size for segment, size in covered.items())

    def checkpoint(self, wait: bool = True) -> None:
        """Write the index snapshot atomically (covers every committed record). With
        `wait=False` (the store's own checkpoints as it grows, on the event loop's thread)
        only the copying of the indexes happens here, and a background thread writes, hashes
        and fsyncs: at 1M events the snapshot is ~80 MB and writing it in place stalled
        the loop for 70-190 ms (probes and appends waited), the copy takes a tenth of that.
        A write that fails is logged and changes nothing: the previous snapshot stays, and
        the records after it are replayed at the next open. One still being written makes a
        `wait=False` checkpoint wait for a later commit (a slow disk never stalls the loop)."""
        if not wait and self._checkpoint_thread is not None and self._checkpoint_thread.is_alive():
            return
        self._join_checkpoint()
        segments = [[segment, os.path.getsize(self._path(segment))] for segment in list_segments(self._directory)]
        segments = [entry for entry in segments if entry[0] <= self._tail_segment]
        if segments:
            segments[-1][1] = self._tail_size
        corrupt = [[rid, error.segment, error.offset, str(error)] for rid, error in sorted(self._corrupt.items())]
        described, sections = self._index.snapshot()
        sections += [self._rid_segment, self._rid_offset, self._rid_length]
        header = cbor2.dumps({
            "version": SNAPSHOT_VERSION,
            "segments": segments,
            "index": described,
            "corrupt": corrupt,
            "sections": [["y" if isinstance(part, bytearray) else part.typecode, len(part)] for part in sections],
        })
        self._records_at_snapshot = self._index.records()
        if wait:
            self._write_snapshot(header, sections)
            return
        copies = [bytes(part) for part in sections]  # the live arrays go on changing meanwhile
        self._checkpoint_thread = threading.Thread(target=self._write_snapshot_logged, args=(header, copies),
                                                   name="meshstream-checkpoint", daemon=True)
        self._checkpoint_thread.start()

    def _join_checkpoint(self) -> None:
        thread, self._checkpoint_thread = self._checkpoint_thread, None
        if thread is not None:
            thread.join()

    def _write_snapshot_logged(self, header: bytes, sections: list) -> None:
        try:
            self._write_snapshot(header, sections)
        except OSError as exc:
            log.warning("index snapshot not written (%s); the previous one stays, records after it are replayed", exc)

    def _write_snapshot(self, header: bytes, sections: list) -> None:
        size = len(header).to_bytes(4, "little")
        hasher = blake3.blake3(size)
        hasher.update(header)
        path = os.path.join(self._directory, SNAPSHOT_NAME)
        temporary = path + ".tmp"
        with open(temporary, "wb") as file:
            file.write(SNAPSHOT_MAGIC + size + header)
            for part in sections:
                file.write(part)
                hasher.update(memoryview(part).cast("B"))
            file.write(hasher.digest())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        self._fsync_directory()

    def _fsync_directory(self) -> None:
        fd = os.open(self._directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- writing --
    def _locate(self, prepared: Prepared) -> None:
        """Gather the batch into one buffer; event records need no hashing (records.py)."""
        events, special = prepared.events, prepared.special
        pack, magic = records.HEADER.pack, records.EVENT_MAGIC
        header_bytes = records.HEADER_BYTES
        if type(events) is EnvelopeRun:  # the bytes as received (their digests checked on the wire)
            envelopes, digests = list(events.envelopes), events.digests
        else:
            envelopes, digests = list(map(_envelope_of, events)), map(_digest_of, events)
        headers = list(map(pack, repeat(magic), map(len, envelopes), digests))  # "16s": a digest's first 16 bytes
        for position, how in special.items():
            if how.kind != OP_EVENT:
                event = events[position]
                record = records.encode_dot_record(event.stream, event.dot)
                headers[position], envelopes[position] = record[:header_bytes], record[header_bytes:]
        parts: list[bytes] = [b""] * (2 * len(events))
        parts[0::2], parts[1::2] = headers, envelopes
        buffer = b"".join(parts)
        prepared.lengths = [header_bytes + size for size in map(len, envelopes)]  # specials' sizes differ
        segment, offset = self._tail_segment, self._tail_size
        if offset > 0 and offset + len(buffer) > self._config.segment_bytes_max:
            segment, offset = segment + 1, 0
        prepared.segment, prepared.offset = segment, offset
        prepared.payload = buffer

    def write_prepared(self, prepared: Any) -> None:
        """Write and fsync a prepared batch (any thread: touches only the writer's fd)."""
        assert isinstance(prepared, Prepared) and not prepared.written
        if prepared.payload:
            if prepared.segment != self._writer_segment:
                self._open_writer(prepared.segment)
            fd = self._writer_fd
            try:
                view, position = memoryview(prepared.payload), prepared.offset
                while view:
                    written = os.pwrite(fd, view, position)
                    view, position = view[written:], position + written
                os.fdatasync(fd)
            except OSError:
                os.ftruncate(fd, prepared.offset)  # leave no partial batch behind
                raise
        prepared.written = True

    def _open_writer(self, segment: int) -> None:
        fd = os.open(self._path(segment), os.O_WRONLY | os.O_CREAT, 0o644)
        if self._writer_fd >= 0:
            os.close(self._writer_fd)
        self._writer_fd, self._writer_segment = fd, segment
        self._fsync_directory()  # the new file's name must survive a crash too

    def _write_drops(self, streams: list[str]) -> list[Any]:
        """Append one drop record per stream at the tail with one write and fsync (the
        caller checked that no prepared batch is on its way). A failed write leaves no
        partial record behind: the streams are then not dropped."""
        encoded = [records.encode_drop_record(stream) for stream in streams]
        buffer = b"".join(encoded)
        segment, offset = self._tail_segment, self._tail_size
        if offset > 0 and offset + len(buffer) > self._config.segment_bytes_max:
            segment, offset = segment + 1, 0
        if segment != self._writer_segment:
            self._open_writer(segment)
        try:
            written = 0
            while written < len(buffer):
                written += os.pwrite(self._writer_fd, buffer[written:], offset + written)
            os.fdatasync(self._writer_fd)
        except OSError:
            os.ftruncate(self._writer_fd, offset)
            raise
        self._tail_segment, self._tail_size = segment, offset + len(buffer)
        offsets = itertools.accumulate((len(record) for record in encoded[:-1]), initial=offset)
        return [(segment, at, len(record)) for at, record in zip(offsets, encoded)]

    def _place_marker(self, rid: int, location: Any) -> None:
        self._add_location(rid, *location)

    def _committed(self, prepared: Prepared) -> None:
        count, lengths = len(prepared.events), prepared.lengths
        if count:
            assert prepared.first_rid == len(self._rid_segment)
            offsets = itertools.accumulate(lengths[:-1], initial=prepared.offset)
            self._rid_segment.extend(array("I", [prepared.segment]) * count)
            self._rid_offset.extend(offsets)
            self._rid_length.extend(lengths)
            self._tail_segment = prepared.segment
            self._tail_size = prepared.offset + len(prepared.payload)
        records_now = self._index.records()
        if records_now - self._records_at_snapshot >= records_between_snapshots(records_now):
            self.checkpoint(wait=False)

    # -- reading --
    def _read_fd(self, segment: int) -> int:
        fd = self._read_fds.get(segment)
        if fd is None:
            fd = self._read_fds[segment] = os.open(self._path(segment), os.O_RDONLY)
        return fd

    def _load_many(self, rids: Sequence[int]) -> list[Event | CorruptRecord]:
        """Events by rid; adjacent records are fetched with one pread and checked and
        decoded by one `records.read_run`."""
        return self._read_runs(rids, records.read_run)

    def _load_envelopes(self, rids: Sequence[int]) -> list[bytes | CorruptRecord]:
        """Envelope bytes by rid, checked (one hash each) but not decoded."""
        return self._read_runs(rids, records.read_run_envelopes)

    def _read_runs(self, rids: Sequence[int], reader: Any) -> list[Any]:
        """`reader`'s results for each rid, adjacent records fetched with one pread."""
        result: list[Any] = []
        segments, offsets, lengths = self._rid_segment, self._rid_offset, self._rid_length
        start, count = 0, len(rids)
        while start < count:
            first = rids[start]
            end, segment, base = start + 1, segments[first], offsets[first]
            stop = base + lengths[first]
            while end < count:
                rid = rids[end]
                if segments[rid] != segment or offsets[rid] != stop:
                    break
                stop += lengths[rid]
                end += 1
            data = os.pread(self._read_fd(segment), stop - base, base)
            run = rids[start:end]
            ats = [offsets[rid] - base for rid in run]
            loaded, bad = reader(data, ats, [lengths[rid] for rid in run])
            for position in bad:
                loaded[position] = records.corrupt_error(segment_name(segment), ats[position] + base, loaded[position])
            result += loaded
            start = end
        return result

    def _check(self, rid: int) -> CorruptRecord | None:
        return self._check_many([rid])[0]

    def _check_many(self, rids: list[int]) -> list[CorruptRecord | None]:
        """Check records' bytes: one hash each, no decoding (the digest covers every byte);
        adjacent records are read with one pread."""
        segments, offsets, lengths, states = self._rid_segment, self._rid_offset, self._rid_length, self._index.rid_state
        result: list[CorruptRecord | None] = []
        start, count = 0, len(rids)
        while start < count:
            first = rids[start]
            end, segment, base = start + 1, segments[first], offsets[first]
            stop = base + lengths[first]
            while end < count and segments[rids[end]] == segment and offsets[rids[end]] == stop \
                    and stop - base < SCRUB_READ_BYTES_MAX:
                stop += lengths[rids[end]]
                end += 1
            data = os.pread(self._read_fd(segment), stop - base, base)
            run = rids[start:end]
            if records.all_sound(data, [offsets[rid] - base for rid in run], [lengths[rid] for rid in run]):
                result += [None] * len(run)  # the usual event records, all sound: checked by columns
                start = end
                continue
            for rid in run:
                at = offsets[rid] - base
                checked = records.check_record(data[at:at + lengths[rid]])
                if not checked and states[rid] == LIVE and data[at:at + 4] == records.DOT_MAGIC:
                    checked = "a served record holds no event"
                result.append(records.corrupt_error(segment_name(segment), offsets[rid], checked) if checked else None)
            start = end
        return result

    def close(self) -> None:
        """Checkpoint the indexes and release every descriptor and the directory lock."""
        self._join_checkpoint()
        if self._recovered and self._lock_fd >= 0 and self._index.records() != self._records_at_snapshot:
            self.checkpoint()
        for fd in self._read_fds.values():
            os.close(fd)
        self._read_fds.clear()
        if self._writer_fd >= 0:
            os.close(self._writer_fd)
            self._writer_fd, self._writer_segment = -1, 0
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        super().close()

