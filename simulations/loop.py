"""The seeded discrete-event loop and the journal every run is judged by.

`EventLoop` keeps a heap of `(time, seq, action)`: `seq` is a global counter, so two actions
due at the same instant run in the order they were scheduled, never in an order that
depends on object identity or hashing. Simulated time only moves when the next action is
popped; nothing reads a clock.

The loop runs with Python's cyclic garbage collector paused: a simulated mesh is millions
of long-lived objects (every peer's fold, log and store), and the automatic collector,
triggered by allocations, rescanned them over and over (~15% of a 500-peer run) while the
run makes almost no cyclic garbage (53 objects in 30 s of 500 peers). Reference counting
still frees everything else at once; a full collection runs every `GC_EVERY_ACTIONS`
actions instead, so a long run with crashed and departed peers (each a cycle of node
parts) stays bounded. Collection never changes what a run does: the digest is the same.

`Journal` records every send, delivery, drop and decision as one text line with its time.
The trace digest is BLAKE3 over those lines, so one seed gives one digest byte for byte.
Lines are hashed as they come and kept only when a trace file was asked for.
"""

from __future__ import annotations

import gc
import heapq
from collections.abc import Callable

import blake3

Action = Callable[[], None]
HASHED_LINES_BATCH = 256  # journal lines joined per hasher update
GC_EVERY_ACTIONS = 1_000_000  # actions between full collections while the loop runs (~1 s each at 500 peers)


class EventLoop:
    """A heap of timed actions. `now` is seconds of simulated time from 0.0."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Action]] = []
        self._seq = 0
        self.actions_run = 0
        self._next_collection = GC_EVERY_ACTIONS

    def at(self, when: float, action: Action) -> None:
        """Run `action` at simulated time `when` (never earlier than now)."""
        assert when == when, "NaN time"
        self._seq += 1
        heapq.heappush(self._heap, (max(when, self.now), self._seq, action))

    def after(self, delay_s: float, action: Action) -> None:
        self.at(self.now + delay_s, action)

    def run_until(self, end: float) -> None:
        """Run every action due at or before `end`, then leave `now` at `end`."""
        heap = self._heap
        collecting = gc.isenabled()
        gc.disable()  # see the module docstring
        try:
            while heap and heap[0][0] <= end:
                when, _, action = heapq.heappop(heap)
                self.now = when
                self.actions_run += 1
                action()
                if self.actions_run >= self._next_collection:
                    self._next_collection += GC_EVERY_ACTIONS
                    gc.collect()
        finally:
            if collecting:
                gc.enable()
        self.now = max(self.now, end)

    def pending(self) -> int:
        return len(self._heap)


class Journal:
    """Every send, delivery, drop and decision, digested line by line.

    Lines are hashed in batches of `HASHED_LINES_BATCH` (BLAKE3 is a stream: the digest of
    the joined batch equals that of the lines one by one; a call per line cost more than
    the hashing)."""

    def __init__(self, keep_lines: bool = False) -> None:
        self._hasher = blake3.blake3()
        self.lines: list[str] | None = [] if keep_lines else None
        self._pending: list[str] = []
        self.count = 0
        self._stamped: tuple[float, str] = (-1.0, "")  # the last time formatted: one action records a few lines

    def record(self, now: float, kind: str, text: str) -> None:
        if now != self._stamped[0]:
            self._stamped = (now, f"{now:.6f}")
        line = f"{self._stamped[1]} {kind} {text}\n"
        pending = self._pending
        pending.append(line)
        if len(pending) >= HASHED_LINES_BATCH:
            self._flush()
        self.count += 1
        if self.lines is not None:
            self.lines.append(line[:-1])

    def digest(self) -> str:
        self._flush()
        return self._hasher.hexdigest()

    def _flush(self) -> None:
        if self._pending:
            self._hasher.update("".join(self._pending).encode("utf-8"))
            self._pending.clear()
