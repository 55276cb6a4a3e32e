"""The group-commit thread (runtime/commit.py): writes run off the trio thread and are
reported on it; stopping waits for a write in flight; a failed write ends `run`."""

from __future__ import annotations

import threading

import pytest
import trio

from meshstream.runtime.commit import CommitThread


async def test_writes_run_off_the_trio_thread_and_report_on_it():
    trio_thread = threading.get_ident()
    writers, reports = [], []
    done = trio.Event()

    def write(prepared):
        writers.append(threading.get_ident())

    def on_written(prepared):
        reports.append((prepared, threading.get_ident()))
        if len(reports) == 3:
            done.set()

    commit = CommitThread(write, on_written)
    async with trio.open_nursery() as nursery:
        await nursery.start(commit.run)
        commit.submit("a")
        with trio.fail_after(5):
            while not reports:
                await trio.sleep(0.001)
        commit.submit("b")
        commit.submit("c")
        with trio.fail_after(5):
            await done.wait()
        nursery.cancel_scope.cancel()
    assert [prepared for prepared, _ in reports] == ["a", "b", "c"]
    assert all(ident == trio_thread for _, ident in reports)
    assert len(writers) == 3 and trio_thread not in writers


async def test_stopping_waits_for_the_write_in_flight():
    started, release = threading.Event(), threading.Event()
    reports = []
    commit = CommitThread(lambda prepared: (started.set(), release.wait(5)), lambda prepared: reports.append(
        (prepared, commit.closing)))
    async with trio.open_nursery() as nursery:
        await nursery.start(commit.run)
        commit.submit("slow")
        await trio.to_thread.run_sync(started.wait, 5)
        nursery.cancel_scope.cancel()
        threading.Timer(0.2, release.set).start()  # the disk answers after the cancel
    # The nursery closed only once the write returned, and the batch was reported (closing).
    assert release.is_set() and reports == [("slow", True)]


async def test_a_failed_write_ends_run_with_its_error():
    def write(prepared):
        raise OSError(5, "Input/output error")

    commit = CommitThread(write, lambda prepared: None)
    with pytest.raises(BaseException) as caught:
        async with trio.open_nursery() as nursery:
            await nursery.start(commit.run)
            commit.submit("x")
    error = caught.value
    while isinstance(error, BaseExceptionGroup):
        (error,) = error.exceptions
    assert isinstance(error, OSError) and error.errno == 5
