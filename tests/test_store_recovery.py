"""Crash recovery: a child process appends batches and reports each acknowledged one; the
test SIGKILLs it at random moments, reopens the store and checks that every acknowledged
batch is present, nothing partial is served, and the child can go on appending."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import time

from meshstream.clocks import VersionVector
from meshstream.store.segment import SegmentStore

KILLS = 24
BATCH_EVENTS = 50
CHILD = textwrap.dedent(
    """
    import os, sys
    from meshstream.clocks import VersionVector
    from meshstream.config import Config
    from meshstream.envelope import Event
    from meshstream.store.segment import SegmentStore

    directory, peer = sys.argv[1], sys.argv[2]
    store = SegmentStore.open(directory, Config(segment_bytes_max=256 * 1024))
    vector = store.version_vector("s")
    batch = 0
    while True:
        events = []
        for _ in range({batch_events}):
            following, dot = vector.increment(peer)
            events.append(Event.sequence("s", f"{{peer}}-{{dot.counter}}".encode(), os.urandom(200), {{}}, dot, vector))
            vector = following
        store.append_batch(events)
        print(peer, vector[peer], flush=True)  # acknowledged: every dot up to here is durable
        batch += 1
    """
).format(batch_events=BATCH_EVENTS)


def run_child(directory: str, peer: str, rng: random.Random) -> int:
    """Start the child, kill it after a random delay; return the highest acknowledged counter."""
    environment = dict(os.environ, PYTHONPATH=os.getcwd())
    child = subprocess.Popen([sys.executable, "-c", CHILD, directory, peer], stdout=subprocess.PIPE,
                             env=environment, bufsize=0)
    acked, buffer = 0, b""
    deadline = time.monotonic() + 10.0
    first_ack = None
    kill_after = rng.uniform(0.0, 0.15)
    while time.monotonic() < deadline:
        if first_ack is not None and time.monotonic() >= first_ack + kill_after:
            break
        ready, _, _ = select.select([child.stdout], [], [], 0.01)
        if ready:
            chunk = os.read(child.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            lines = buffer.split(b"\n")
            buffer = lines[-1]
            for line in lines[:-1]:
                acked = int(line.split()[1])
                first_ack = first_ack or time.monotonic()
    child.send_signal(signal.SIGKILL)
    child.wait()
    for line in (buffer + child.stdout.read()).split(b"\n"):
        fields = line.split()
        if len(fields) == 2:  # a line cut short by the kill was never acknowledged
            acked = int(fields[1])
    child.stdout.close()
    assert first_ack is not None, "the child never acknowledged a batch"
    return acked


def test_sigkill_at_random_moments_loses_no_acknowledged_batch(tmp_path):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    directory = str(tmp_path / "data")
    acked: dict[str, int] = {}
    for kill in range(KILLS):
        peer = f"p{kill % 3}"
        acked[peer] = max(acked.get(peer, 0), run_child(directory, peer, rng))
        store = SegmentStore.open(directory)
        context = f"seed={seed} kill={kill} acked={acked} recovery={store.recovery}"
        vector = store.version_vector("s")
        for name, counter in acked.items():
            assert vector.get(name, 0) >= counter, context
        served = store.read("s", VersionVector(), 10**6)
        assert len(served) == store.event_count("s") == vector.total(), context
        assert all(vector.contains(event.dot) and len(event.data) == 200 for event in served), context
        assert store.corrupt_records() == [], context
        store.close()
        if kill % 5 == 4:  # sometimes reopen from a full scan rather than the snapshot
            os.remove(os.path.join(directory, "index.snapshot"))
