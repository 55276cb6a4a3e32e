"""`meshstream demo` (what `make run` runs): a three-peer mesh on loopback survives its master.

It starts three peers as subprocesses (`python -m meshstream run ...`) on free loopback
ports with temporary data directories, writes events with `ack=all`, kills the stream's
master with SIGKILL, shows the new master taking writes, restarts the old master and shows
it rejoin as a replica and catch up, then prints a summary. Every process it starts is
killed in a `finally`, so nothing outlives it.

`PeerProcess`, `free_port` and `wait_until` are shared with the integration tests.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from meshstream import ids

STREAM = "orders"
EVENTS_PER_PHASE = 20
POLL_INTERVAL_S = 0.05
STOP_TIMEOUT_S = 3.0
READ_PAGE_EVENTS = 1000


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PeerProcess:
    """One `meshstream run` subprocess with its port, data directory and log file."""

    def __init__(self, name: str, data_dir: str, join: Sequence[str] = (), port: int | None = None,
                 extra_args: Sequence[str] = ()) -> None:
        self.name = name
        self.port = port or free_port()
        self.data_dir = data_dir
        self.join = list(join)
        self.extra_args = list(extra_args)
        self.log_path = os.path.join(os.path.dirname(data_dir.rstrip("/")) or ".", f"{name}.log")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        argv = [sys.executable, "-m", "meshstream", "run", "--name", self.name, "--listen", self.address,
                "--data", self.data_dir]
        for seed in self.join:
            argv += ["--join", seed]
        return argv + self.extra_args

    def start(self) -> None:
        assert not self.running, f"{self.name} is already running"
        os.makedirs(self.data_dir, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (a graceful leave), then SIGKILL if it has not exited in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, "rb") as log:
                return b"".join(log.readlines()[-lines:]).decode("utf-8", "replace")
        except OSError:
            return ""


def start_mesh(root: str, count: int, extra_args: Sequence[str] = ()) -> list[PeerProcess]:
    """Start peers n1..n<count> under `root`, every one joining n1 (the seed)."""
    peers = [PeerProcess("n1", os.path.join(root, "n1", "data"), extra_args=extra_args)]
    for index in range(2, count + 1):
        peers.append(PeerProcess(f"n{index}", os.path.join(root, f"n{index}", "data"), join=[peers[0].address],
                                 extra_args=extra_args))
    for peer in peers:
        peer.start()
    return peers


async def wait_until(check: Callable[[], Awaitable[Any]], timeout_s: float, what: str) -> Any:
    """Poll `check()` until it returns something truthy; TimeoutError naming `what` if it
    has not within `timeout_s`. Exceptions from `check` count as not yet."""
    deadline = trio.current_time() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            result = await check()
            if result:
                return result
        except Exception as exc:  # a peer still starting, or just killed
            last_error = exc
        if trio.current_time() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what} (last error: {last_error})")
        await trio.sleep(POLL_INTERVAL_S)


async def topology_view(address: str, **client_options: Any) -> dict[str, Any]:
    """The topology view of the peer at `address` (one connection, no failover)."""
    from meshstream.client import open_client

    async with open_client([address], retry_timeout_s=0.5, **client_options) as client:
        _, view = await client.topology()
    return view


def live_members(view: dict[str, Any]) -> list[str]:
    return sorted(peer for peer, m in view.get("members", {}).items() if m.get("status") in ("alive", "suspect"))


def master_of(view: dict[str, Any], stream: str) -> str | None:
    """The master of `stream`'s shard in a topology view, or None."""
    shards = view.get("shards")
    if not shards:
        return None
    entry = view.get("masters", {}).get(str(ids.shard_of(stream, shards)))
    return entry["peer"] if entry else None


async def all_see(peers: Sequence[PeerProcess], predicate: Callable[[dict[str, Any]], bool]) -> bool:
    for peer in peers:
        if not predicate(await topology_view(peer.address)):
            return False
    return True


async def mesh_settled(peers: Sequence[PeerProcess], timeout_s: float = 60.0, quiet_s: float = 1.0) -> None:
    """Wait until no peer is catching up or handing a shard over and every peer has named
    the same masters for `quiet_s` (a new mesh rebalances its masters before it is steady:
    benchmarks measure the steady mesh). TimeoutError if it has not within `timeout_s`."""
    from meshstream.client import open_client

    async def masters_if_quiet() -> Any:
        views = [await topology_view(peer.address) for peer in peers]
        masters = [view.get("masters", {}) for view in views]
        for peer in peers:
            async with open_client([peer.address], retry_timeout_s=0.5) as client:
                moving = (await client.status()).get("rebalance") or {}
            if moving.get("catching_up") or moving.get("handovers"):
                return None
        return masters[0] if all(m == masters[0] for m in masters) else None

    deadline = trio.current_time() + timeout_s
    previous = None
    while trio.current_time() < deadline:
        masters = await wait_until(masters_if_quiet, deadline - trio.current_time(), "the mesh to settle")
        if masters == previous:
            return
        previous = masters
        await trio.sleep(quiet_s)
    raise TimeoutError(f"the mesh did not settle within {timeout_s} s")


def say(text: str) -> None:
    print(text, flush=True)


async def _demo(root: str) -> int:
    from meshstream.client import open_client

    started = trio.current_time()
    n1 = PeerProcess("n1", os.path.join(root, "n1", "data"))
    n2 = PeerProcess("n2", os.path.join(root, "n2", "data"), join=[n1.address])
    n3 = PeerProcess("n3", os.path.join(root, "n3", "data"), join=[n1.address])
    peers = [n1, n2, n3]
    try:
        for peer in peers:
            peer.start()
        say(f"started n1 {n1.address}, n2 {n2.address}, n3 {n3.address} (data under {root})")
        names = ["n1", "n2", "n3"]
        await wait_until(lambda: all_see(peers, lambda v: live_members(v) == names), 15, "three peers to meet")
        say(f"all three peers see each other after {trio.current_time() - started:.1f} s")
        master = await wait_until(lambda: _master(n1.address), 10, f"a master for {STREAM!r}")
        by_name = {peer.name: peer for peer in peers}
        say(f"master of stream {STREAM!r} is {master}")
        addresses = [peer.address for peer in peers]
        async with open_client(addresses, retry_timeout_s=10) as client:
            for index in range(EVENTS_PER_PHASE):
                await client.append(STREAM, b'{"order": %d}' % index, ack="all")
        say(f"wrote {EVENTS_PER_PHASE} events with ack=all (every live replica persisted each one)")
        by_name[master].kill()
        killed_at = trio.current_time()
        say(f"killed master {master} with SIGKILL")
        survivors = [peer for peer in peers if peer.name != master]
        async with open_client([p.address for p in survivors], retry_timeout_s=15) as client:
            await client.append(STREAM, b'{"order": "after-kill"}', ack="all")
            first_ack_s = trio.current_time() - killed_at
            for index in range(EVENTS_PER_PHASE, 2 * EVENTS_PER_PHASE - 1):
                await client.append(STREAM, b'{"order": %d}' % index, ack="all")
        new_master = await wait_until(lambda: _master(survivors[0].address, not_peer=master), 10, "a new master")
        say(f"new master {new_master} acknowledged the first write {first_ack_s:.2f} s after the kill; "
            f"{EVENTS_PER_PHASE} more events written")
        by_name[master].join = [survivors[0].address]
        by_name[master].start()
        say(f"restarted {master}")
        old = by_name[master]
        await wait_until(lambda: _is_replica(old.address, master), 15, f"{master} to rejoin as a replica")
        total = 2 * EVENTS_PER_PHASE
        count = await wait_until(lambda: _caught_up(old.address, total), 15, f"{master} to catch up")
        say(f"{master} rejoined as a replica (master is {await _master(old.address)}) and holds {count} events")
        counts = [await _count(peer.address) for peer in peers]
        say(f"summary: {total} acknowledged events, on every peer {counts}; master moved {master} -> "
            f"{new_master}; first write after the kill acknowledged in {first_ack_s:.2f} s; "
            f"demo took {trio.current_time() - started:.1f} s")
        return 0
    except Exception as exc:  # report any failure with the peers' logs, then clean up
        say(f"demo failed: {exc}")
        for peer in peers:
            say(f"--- last log lines of {peer.name} ---\n{peer.log_tail()}")
        return 1
    finally:
        for peer in peers:
            peer.stop(timeout_s=1.0)
        for peer in peers:
            peer.kill()


async def _master(address: str, not_peer: str | None = None) -> str | None:
    master = master_of(await topology_view(address), STREAM)
    return None if master == not_peer else master


async def _is_replica(address: str, name: str) -> bool:
    view = await topology_view(address)
    return name in live_members(view) and master_of(view, STREAM) not in (None, name)


async def read_all(address: str, stream: str, page_events: int = READ_PAGE_EVENTS) -> list[Any]:
    """Every event of `stream` served via the peer at `address` (a peer that holds no copy
    redirects the read to the stream's replicas), in canonical order, page by page."""
    from meshstream.client import open_client
    from meshstream.clocks import EMPTY

    events: list[Any] = []
    cursor = EMPTY
    async with open_client([address], retry_timeout_s=0.5) as client:
        while True:
            result = await client.read(stream, cursor, limit=page_events)
            if not result.events:
                return events
            events.extend(result.events)
            cursor = result.cursor


async def _count(address: str) -> int:
    return len(await read_all(address, STREAM))


async def _caught_up(address: str, expected: int) -> int:
    count = await _count(address)
    return count if count >= expected else 0


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="meshstream-demo-") as root:
        return trio.run(_demo, root)
