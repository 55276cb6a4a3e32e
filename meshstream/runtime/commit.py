"""The group-commit thread: writes and fsyncs prepared batches off the trio thread.

`CommitThread` owns one long-lived thread. The driver, on the trio thread, hands it one
prepared batch at a time (`submit`); the thread runs `write(prepared)` (the store's write +
fdatasync) and reports back with trio's `run_sync_soon`, so `on_written(prepared)` runs on
the trio thread as soon as the fsync returns. A slow or stuck disk stalls only this
thread: probes, reads and everything else keep running on the trio thread.

Why not `trio.to_thread.run_sync` per batch: it takes a scheduling round to acquire the
thread limiter before the thread starts, and two after it ends (the entry-queue task, then
the waiting task), plus a hand-off through trio's thread cache: ~55 us of CPU per commit
measured here against ~36 us for this path, and every round of it was on the path of an
acknowledgement (each replica's, then the master's).

`on_written` must not raise: an exception from it (our bug) or from `write` (a failed
fsync) ends `run` with that exception, which ends the peer, as a failed commit did before.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from meshstream.runtime import trace

log = logging.getLogger("meshstream.commit")

_STOP = object()


class CommitThread:
    """Run `await nursery.start(commit.run)`; then `submit(prepared)` from the trio thread."""

    def __init__(self, write: Callable[[Any], None], on_written: Callable[[Any], None]) -> None:
        self._write = write
        self._on_written = on_written
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._done: deque[tuple[Any, BaseException | None]] = deque()  # written, not reported yet
        self._token: trio.lowlevel.TrioToken | None = None
        self._failure: BaseException | None = None
        self._failed = trio.Event()
        self.closing = False  # set once `run` is ending: `on_written` should only tidy up

    def submit(self, prepared: Any) -> None:
        """Write and fsync `prepared` on the commit thread (call on the trio thread, after
        `run` started). `on_written` follows on the trio thread."""
        assert self._token is not None, "CommitThread.submit before run"
        self._queue.put(prepared)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Own the thread until cancelled. On the way out, wait (shielded) for a batch in
        flight, so the store is never closed under a write; re-raise a failure."""
        self._token = trio.lowlevel.current_trio_token()
        thread = threading.Thread(target=self._main, name="meshstream-commit", daemon=True)
        thread.start()
        task_status.started()
        try:
            await self._failed.wait()
            assert self._failure is not None
            raise self._failure
        finally:
            self.closing = True
            self._queue.put(_STOP)
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(thread.join)
            self._report()  # a batch that finished meanwhile, before its callback ran
            if self._failure is not None and not self._failed.is_set():
                log.error("group commit failed while stopping: %r", self._failure)

    def _main(self) -> None:
        assert self._token is not None
        while True:
            prepared = self._queue.get()
            if prepared is _STOP:
                return
            try:
                if trace.ENABLED:
                    trace.note("fsync thread got")  # how long the hand-off took
                self._write(prepared)
                if trace.ENABLED:
                    trace.note("fsync thread done")
                error: BaseException | None = None
            except BaseException as exc:  # reported on the trio thread, which ends the run
                error = exc
            self._done.append((prepared, error))
            try:
                self._token.run_sync_soon(self._report)
            except trio.RunFinishedError:
                return

    def _report(self) -> None:
        # Runs on the trio thread; an exception escaping a run_sync_soon callback would
        # crash trio itself, so it is handed to `run` instead.
        while self._done:
            prepared, error = self._done.popleft()
            if error is None:
                try:
                    self._on_written(prepared)
                except BaseException as exc:
                    error = exc
            if error is not None and self._failure is None:
                self._failure = error
                if not self.closing:
                    self._failed.set()
