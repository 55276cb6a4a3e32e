"""A heap of the node's own deadlines (append timeouts, forward retries, push retries,
parked reads), with lazy deletion.

Entries are `(time, seq, kind, ident)`; the sequence number breaks ties so two deadlines
at one instant fire in the order they were set, never by comparing kinds or ids. An entry
whose work is already done stays in the heap and is ignored by its handler when it fires:
cancelling would cost a search, a stale pop costs nothing.
"""

from __future__ import annotations

import heapq


class Timers:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str, int]] = []
        self._seq = 0

    def add(self, when: float, kind: str, ident: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, kind, ident))

    def next(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[tuple[str, int]]:
        """Every (kind, ident) due at or before `now`, in deadline order."""
        due: list[tuple[str, int]] = []
        while self._heap and self._heap[0][0] <= now:
            _, _, kind, ident = heapq.heappop(self._heap)
            due.append((kind, ident))
        return due

    def __len__(self) -> int:
        return len(self._heap)
