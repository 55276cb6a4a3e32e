"""The disk model: fsync latency, loss of unsynced writes on crash, and corruption.

Each peer owns a `SimDisk` wrapping its durable store (a MemoryStore). A `Persist` effect is
queued and completes after a simulated fsync latency; completion applies the events to the
store (`append_batch(..., on_conflict="resolve")`) and only then is the node told
`persisted`. Completions are FIFO per disk (a later batch never becomes durable before an
earlier one). A crash bumps the disk's generation, so queued completions of the dead
process find a stale generation and do nothing: their events are lost, as unsynced writes
are. What is in the store survives and the restarted node recovers from it.

`corrupt(rng, count)` flips stored records through the store's hook, MemoryStore's
`damage(stream, key)`: the store then treats the record as one that failed its digest.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from meshstream.envelope import Event

FSYNC_LATENCY_S = (0.0005, 0.002)  # a local SSD's group commit: half a millisecond to two


class SimDisk:
    def __init__(self, store: object, rng: random.Random) -> None:
        self.store = store
        self.rng = rng
        self.generation = 0
        self._last_completion = 0.0
        self.batches = 0
        self.lost_batches = 0
        self.pending = 0

    def completion_time(self, now: float) -> float:
        """When a persist issued now becomes durable (FIFO after earlier ones)."""
        done = max(now + self.rng.uniform(*FSYNC_LATENCY_S), self._last_completion)
        self._last_completion = done
        self.pending += 1
        return done

    def complete(self, generation: int, events: Sequence[Event]) -> bool:
        """Apply a persist if its process is still alive; False when it was lost."""
        self.pending -= 1
        if generation != self.generation:
            self.lost_batches += 1
            return False
        self.store.append_batch(events, on_conflict="resolve")  # type: ignore[attr-defined]
        self.batches += 1
        return True

    def crash(self) -> None:
        """Every persist not yet complete is lost."""
        self.generation += 1

    def corrupt(self, rng: random.Random, count: int) -> list[str]:
        """Flip up to `count` stored data records chosen at random; describe what was hit."""
        hook = _corrupt_hook(self.store)
        if hook is None:
            return []
        candidates: list[tuple[str, Event]] = []
        for stream in self.store.streams():  # type: ignore[attr-defined]
            if stream.startswith("$"):
                continue  # topology records are the membership's lifeline; data is the target
            for event in _all_events(self.store, stream):
                candidates.append((stream, event))
        hit: list[str] = []
        for stream, event in rng.sample(candidates, min(count, len(candidates))):
            hook(stream, event)
            hit.append(f"{stream}/{event.dot.peer}:{event.dot.counter}")
        return hit


def _all_events(store: object, stream: str) -> list[Event]:
    from meshstream.clocks import VersionVector

    return store.read(stream, VersionVector(), 1_000_000_000)  # type: ignore[attr-defined]


def _corrupt_hook(store: object) -> Callable[[str, Event], None] | None:
    damage = getattr(store, "damage", None)
    if damage is None:
        return None
    return lambda stream, event: damage(stream, event.key)
