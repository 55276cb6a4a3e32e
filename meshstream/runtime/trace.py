"""Per-hop timestamps for latency work: off unless `MESHSTREAM_TRACE` names a directory.

With `MESHSTREAM_TRACE=DIR` in its environment, a process appends one line per step of a
message's path to `DIR/<pid>.trace`: `<time.perf_counter()> <cpu_us> <thread> <what>`, where
`cpu_us` is the noting thread's CPU time so far in microseconds (so the CPU each step took
can be told from the time it waited for a CPU on a busy machine), `thread` its name
(`MainThread`, or `meshstream-commit` for the group-commit thread) and `what` is e.g.
`read 412` (bytes off a socket), `in AppendRequest` (an input fed to the node), `out
Replicate` (an effect queued), `fsync start 1` / `fsync end 1` (the group commit handed to
and back from its thread, which notes `fsync thread got` / `fsync thread done` around the
write itself), `sent ReplicateAck` (bytes handed to the socket), `tick 0.12` (a tick's
milliseconds). On Linux
`perf_counter` is CLOCK_MONOTONIC, one clock for every process of the machine, so the
files of a master, its replicas and a client merge into one timeline
(`bench/client_bench.py --part trace` does that for single appends).

Lines are written through as they come (line buffering), so a SIGKILLed peer loses none;
that costs a few microseconds per line, which is why call sites test `ENABLED` first and
nothing is formatted when tracing is off.
"""

from __future__ import annotations

import os
import threading
import time

_DIRECTORY = os.environ.get("MESHSTREAM_TRACE", "")
_file = None
_lock = threading.Lock()  # the group-commit thread notes too
ENABLED = bool(_DIRECTORY)


def cpu_s() -> float:
    """This thread's CPU seconds so far."""
    return time.thread_time()


def note(what: str) -> None:
    """One trace line (call only when ENABLED)."""
    global _file
    with _lock:
        if _file is None:
            _file = open(os.path.join(_DIRECTORY, f"{os.getpid()}.trace"), "a", buffering=1)
        _file.write(f"{time.perf_counter():.6f} {time.thread_time() * 1e6:.0f} {threading.current_thread().name} {what}\n")
