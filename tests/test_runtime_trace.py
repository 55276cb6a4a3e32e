"""The per-hop trace (runtime/trace.py): off by default, and with a directory set, one
`<perf_counter> <thread cpu> <thread> <what>` line per step; a connection's reads and sends
are among them."""

from __future__ import annotations

import os
import threading
import time

import trio

from meshstream.runtime import trace
from meshstream.runtime.transport import Connection
from meshstream.wire.messages import StatusReply
from tests.test_runtime_transport import CONFIG, _pair


def test_tracing_is_off_without_the_environment_variable():
    if not os.environ.get("MESHSTREAM_TRACE"):
        assert not trace.ENABLED


def _enable(monkeypatch, directory):
    monkeypatch.setattr(trace, "_DIRECTORY", str(directory))
    monkeypatch.setattr(trace, "ENABLED", True)
    monkeypatch.setattr(trace, "_file", None)


def _lines(directory):
    """(perf_counter, what) of each line, after checking its thread CPU and thread name."""
    rows = []
    with open(os.path.join(directory, f"{os.getpid()}.trace")) as file:
        for line in file:
            stamp, cpu_us, thread, what = line.rstrip("\n").split(" ", 3)
            assert int(cpu_us) >= 0 and thread == threading.current_thread().name, line
            rows.append((stamp, what))
    return rows


def test_note_writes_timestamped_lines_in_order(tmp_path, monkeypatch):
    _enable(monkeypatch, tmp_path)
    before = time.perf_counter()
    trace.note("in AppendRequest")
    trace.note("out Replicate")
    after = time.perf_counter()
    rows = _lines(tmp_path)
    assert [what for _, what in rows] == ["in AppendRequest", "out Replicate"]
    stamps = [float(t) for t, _ in rows]
    assert before - 1e-6 <= stamps[0] <= stamps[1] <= after + 1e-6


async def test_a_connection_traces_its_sends_and_reads(tmp_path, monkeypatch):
    _enable(monkeypatch, tmp_path)
    left, right, results = await _pair(None, None)
    a = Connection(left, results["a"], CONFIG, "a")
    b = Connection(right, results["b"], CONFIG, "b")
    got = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.run, lambda m: None)
        nursery.start_soon(b.run, lambda m: got.set())
        assert a.send_nowait(StatusReply(1, "{}"))
        with trio.fail_after(5):
            await got.wait()
        a.close()
        b.close()
    whats = [what for _, what in _lines(tmp_path)]
    assert "sent StatusReply" in whats
    assert any(what.startswith("read ") and int(what.split()[1]) > 0 for what in whats), whats
