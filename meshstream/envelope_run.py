"""`EnvelopeRun`: a batch of checked events kept as columns, not as `Event` objects.

A catch-up brings hundreds of thousands of events in batches of ~2000 that are nearly
always one writer's consecutive dots in one stream, each in the context of the one
before. Building an `Event` (and its `Dot` and `VersionVector`) for each, and walking
each through the node's and the store's per-event checks, cost about half of a returning
peer's CPU. A run keeps what those steps need as lists (keys, counters, digests, the
envelope bytes as received), so the node tracks it in flight and the store lays it out
and indexes it with whole-column operations (`Node.take_events`, `IndexedStore.unheld_run`,
`prepare_batch`).

A run is also a `Sequence[Event]`: any code that does not know runs (the simulator's disk
model, a conflict check, a reader) gets the same events `decode_event` would give, built
on first use and kept. `decode_run` (wire/envelope_batch.py) makes runs from envelopes,
after checking every byte as `decode_envelopes` does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain, repeat
from typing import overload

from meshstream.clocks import VersionVector
from meshstream.envelope import Event, make_dot_unchecked, make_event_unchecked

_new = object.__new__


class EnvelopeRun(Sequence[Event]):
    """Events `writer:first` .. `writer:first + len - 1` of `stream`, in order, none with
    metadata, the i-th in the context `context_base` plus {writer: writer_counts[i]} (the
    other writers' entries are the same for every event of a run: one master sequenced
    them). Built by `decode_run` from checked envelopes (and `joined`); immutable by
    convention."""

    __slots__ = ("stream", "writer", "first", "keys", "datas", "context_base", "writer_counts", "digests",
                 "envelopes", "hashes", "key_mark", "_events", "_dots", "_naturals")

    def __init__(self, stream: str, writer: str, first: int, keys: list[bytes], datas: list[bytes],
                 context_base: dict[str, int], writer_counts: list[int], digests: list[bytes],
                 envelopes: list[bytes]) -> None:
        assert len(keys) == len(datas) == len(writer_counts) == len(digests) == len(envelopes) > 0
        assert writer not in context_base
        self.stream, self.writer, self.first = stream, writer, first
        self.keys, self.datas, self.digests, self.envelopes = keys, datas, digests, envelopes
        self.context_base, self.writer_counts = context_base, writer_counts
        self.hashes: list[int] | None = None  # natural-key hashes, once the store computed them
        self.key_mark: tuple | None = None  # (a store's KeyIndex, its `added`) when none of the keys was there
        self._events: list[Event] | None = None
        self._dots: list[tuple[str, str, int]] | None = None
        self._naturals: list[tuple[str, bytes]] | None = None

    @classmethod
    def joined(cls, runs: Sequence["EnvelopeRun"]) -> "EnvelopeRun":
        """One run of `runs`, each continued by the next (`continued_by`)."""
        def column(name: str) -> list:
            return list(chain.from_iterable(getattr(run, name) for run in runs))

        first = runs[0]
        joined = cls(first.stream, first.writer, first.first, column("keys"), column("datas"), first.context_base,
                     column("writer_counts"), column("digests"), column("envelopes"))
        if all(run.hashes is not None for run in runs):
            joined.hashes = column("hashes")
        marks = [run.key_mark for run in runs]
        if all(mark is not None and mark[0] is marks[0][0] for mark in marks):
            joined.key_mark = min(marks, key=lambda mark: mark[1])  # keys added since the earliest check
        return joined

    def continued_by(self, other: "EnvelopeRun") -> bool:
        """True when `other` is the same writer's next events in the same stream and context."""
        return (other.first == self.last + 1 and other.stream == self.stream and other.writer == self.writer
                and other.context_base == self.context_base)

    @property
    def last(self) -> int:
        return self.first + len(self.keys) - 1

    def counters(self) -> range:
        return range(self.first, self.first + len(self.keys))

    def dots(self) -> list[tuple[str, str, int]]:
        """(stream, writer, counter) of each event: the node's in-flight dot entries (made
        once: the node tests, adds and removes them)."""
        if self._dots is None:
            self._dots = list(zip(repeat(self.stream), repeat(self.writer), self.counters()))
        return self._dots

    def naturals(self) -> list[tuple[str, bytes]]:
        """(stream, key) of each event: the node's in-flight natural keys (made once)."""
        if self._naturals is None:
            self._naturals = list(zip(repeat(self.stream), self.keys))
        return self._naturals

    def events(self) -> list[Event]:
        """The events, built once."""
        if self._events is None:
            stream, writer = self.stream, self.writer
            before = {peer: count for peer, count in self.context_base.items() if peer < writer}  # sorted by peer
            after = {peer: count for peer, count in self.context_base.items() if peer > writer}
            built = []
            for counter, key, data, count, digest, envelope in zip(self.counters(), self.keys, self.datas,
                                                                   self.writer_counts, self.digests, self.envelopes):
                context = _new(VersionVector)
                context._counters, context._hash = {**before, writer: count, **after}, None
                built.append(make_event_unchecked(stream, key, data, (), make_dot_unchecked(writer, counter),
                                                  context, digest, envelope))
            self._events = built
        return self._events

    def event_of(self, key: bytes) -> Event | None:
        """The event of the run with natural key (stream, `key`), if any."""
        try:
            return self.events()[self.keys.index(key)]
        except ValueError:
            return None

    def __eq__(self, other: object) -> bool:
        """Equal to any sequence of the same events (a decoded message to the one sent)."""
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(other) == len(self) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # like a list

    def __len__(self) -> int:
        return len(self.keys)

    @overload
    def __getitem__(self, index: int) -> Event: ...

    @overload
    def __getitem__(self, index: slice) -> list[Event]: ...

    def __getitem__(self, index):
        return self.events()[index]

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events())

    def __repr__(self) -> str:
        return f"EnvelopeRun({self.stream!r}, {self.writer}:{self.first}..{self.last})"
