"""CPU per event of real Nodes in one process: no sockets, no trio, no client in the way.

    python bench/peer_cpu_bench.py [--peers 1|3] [--ack master|all] [--events N]
                                   [--batch B] [--in-flight K] [--store segment|memory]
                                   [--profile] [--profile-peer NAME] [--catchup N] [--runs R]

Peers are `Node`s over `SegmentStore`s (fsync included, but fsync waits are not CPU) with
`meshstream run`'s defaults (local preset, 256 shards, rf 3). Every message between them
goes through the real frame codec (`FrameEncoder` / `FrameDecoder`), client requests
arrive as frames (encoded before the clock starts: the client's CPU is not the peer's) and
replies are encoded. Persists are group-committed per peer after each round of message
delivery with the store's prepare/write/commit, as the driver does. Ticks fire on
`time.monotonic()`, so gossip and anti-entropy cost what they cost per real second.

Prints, per peer, CPU microseconds per event split into frame decode, node logic, store
and frame encode, and the in-process rate. With `--catchup N`, a third peer that was away
while N events were written catches up from the other two, and the rate is printed.
`--profile-peer n3` profiles only that peer's work (its decode, node, store and encode
calls), which `--profile` mixes with the other peers' and the rig's.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import os
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict, deque
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from meshstream.cli import RUN_REPLICATION_FACTOR_DEFAULT, RUN_SHARDS_DEFAULT  # noqa: E402
from meshstream.config import Config  # noqa: E402
from meshstream.envelope import decode_event  # noqa: E402
from meshstream.wire import schema  # noqa: E402
from meshstream.protocol.effects import Deliver, Journal, Persist, Reply, Send, SendTo, take_group_commit  # noqa: E402
from meshstream.protocol.node import Node  # noqa: E402
from meshstream.runtime.peer import GC_OLDER_RATIOS, GC_YOUNG_OBJECTS  # noqa: E402
from meshstream.store.memory import MemoryStore  # noqa: E402
from meshstream.store.segment import SegmentStore  # noqa: E402
from meshstream.wire.framing import NEED_DATA, FrameDecoder, FrameEncoder  # noqa: E402
from meshstream.wire.messages import AppendItem, AppendReply, AppendRequest  # noqa: E402

DATA = b"x" * 200
PARTS = ("decode", "node", "store", "encode")


class RigPeer:
    def __init__(self, name: str, store: Any, config: Config, seeds: tuple[str, ...]) -> None:
        self.name = name
        self.store = store
        self.node = Node(name, name, config, random.Random(int.from_bytes(name.encode(), "big")), store, seeds)
        self.inbox: deque[tuple[str, bytes]] = deque()  # (src, frame bytes); src "" = client
        self.persists: deque[Persist] = deque()
        self.cpu: dict[str, float] = defaultdict(float)
        self.replies: list[Any] = []
        # Each peer process has its own cache of decoded small envelopes: one shared cache
        # would let the second replica find every event decoded by the first.
        self.decode_cache = functools.lru_cache(maxsize=schema.DECODED_EVENTS_MAX)(decode_event)


class Rig:
    def __init__(self, names: list[str], config: Config, store_kind: str, root: str) -> None:
        self.config = config
        self.root = root
        self.store_kind = store_kind
        self.peers: dict[str, RigPeer] = {}
        self.encoder = FrameEncoder(frame_bytes_max=config.frame_bytes_max)
        self.decoder = FrameDecoder(config.frame_bytes_max)
        self.moved: dict[str, int] = defaultdict(int)  # events carried per message class
        for index, name in enumerate(names):
            self.add(name, () if index == 0 else (names[0],))

    def add(self, name: str, seeds: tuple[str, ...]) -> RigPeer:
        store = SegmentStore.open(os.path.join(self.root, name), self.config) if self.store_kind == "segment" \
            else MemoryStore()
        peer = self.peers[name] = RigPeer(name, store, self.config, seeds)
        self.run(peer, peer.node.start(time.monotonic()), "node")
        return peer

    profiled: str | None = None  # the peer whose timed work a profiler records
    profiler: cProfile.Profile | None = None

    def timed(self, peer: RigPeer, part: str, fn: Any, *args: Any) -> Any:
        profiler = self.profiler if peer.name == self.profiled else None
        start = time.process_time()
        if profiler:
            profiler.enable()
        try:
            return fn(*args)
        finally:
            if profiler:
                profiler.disable()
            peer.cpu[part] += time.process_time() - start

    def run(self, peer: RigPeer, effects: list, part: str) -> None:
        for effect in effects:
            match effect:
                case Send(peer=dst, message=message):
                    self.send(peer, dst, message)
                case SendTo(address=dst, message=message):
                    self.send(peer, dst, message)
                case Persist():
                    peer.persists.append(effect)
                case Reply(message=message):
                    frame = self.timed(peer, "encode", self.encoder.encode, message)
                    self.decoder.receive_data(frame)
                    peer.replies.append(self.decoder.next_message())
                case Deliver() | Journal():
                    pass

    def send(self, peer: RigPeer, dst: str, message: Any) -> None:
        if dst not in self.peers:
            return
        events = getattr(message, "events", None)
        if events:
            self.moved[type(message).__name__] += len(events)
        frame = self.timed(peer, "encode", self.encoder.encode, message)
        self.peers[dst].inbox.append((peer.name, frame))

    def deliver(self, peer: RigPeer, src: str, frame: bytes) -> None:
        def decode() -> Any:
            schema._decode_small_event = peer.decode_cache
            self.decoder.receive_data(frame)
            return self.decoder.next_message()

        message = self.timed(peer, "decode", decode)
        now = time.monotonic()
        if src:
            effects = self.timed(peer, "node", peer.node.receive, src, message, now)
        else:
            effects = self.timed(peer, "node", peer.node.client_request, 1, message, now)
        self.run(peer, effects, "node")

    def commit(self, peer: RigPeer) -> None:
        while peer.persists:
            batch, events = take_group_commit(peer.persists, self.config.group_commit_events_max)

            def write() -> None:
                prepared = peer.store.prepare_batch(events, on_conflict="resolve")
                peer.store.write_prepared(prepared)
                peer.store.commit_prepared(prepared)

            if events:
                self.timed(peer, "store", write)
            now = time.monotonic()
            for persist in batch:
                self.run(peer, self.timed(peer, "node", peer.node.persisted, persist.token, now), "node")

    def step(self) -> bool:
        """Deliver everything queued, commit, tick what is due. True if anything ran."""
        busy = False
        for name in sorted(self.peers):
            peer = self.peers[name]
            while peer.inbox:
                busy = True
                self.deliver(peer, *peer.inbox.popleft())
        for name in sorted(self.peers):
            peer = self.peers[name]
            if peer.persists:
                busy = True
                self.commit(peer)
        now = time.monotonic()
        for name in sorted(self.peers):
            peer = self.peers[name]
            deadline = peer.node.next_deadline()
            if deadline is not None and deadline <= now:
                self.run(peer, self.timed(peer, "node", peer.node.tick, now), "node")
        return busy

    def run_until(self, condition: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(what)
            if not self.step():
                time.sleep(0.001)

    def settled(self, names: list[str]) -> bool:
        for name in names:
            node = self.peers[name].node
            live = sorted(p for p in node.topology.live_peers())
            if live != sorted(names) or not node.can_sequence():
                return False
            if any(node.topology.live_master(s) is None for s in range(node.topology.shards or 0)):
                return False
        return True

    def reset_cpu(self) -> None:
        for peer in self.peers.values():
            peer.cpu.clear()
        self.moved.clear()


def request_frames(encoder: FrameEncoder, count: int, batch: int, ack: str, stream: str) -> list[bytes]:
    frames = []
    for request_id in range(1, count + 1):
        items = tuple(AppendItem(os.urandom(16), DATA, {}) for _ in range(batch))
        frames.append(encoder.encode(AppendRequest(request_id, stream, items, ack)))
    return frames


def drive(rig: Rig, entry: RigPeer, frames: list[bytes], in_flight: int) -> float:
    """Send `frames` to `entry` with `in_flight` outstanding; the wall seconds taken."""
    pending = deque(frames)
    outstanding = 0
    answered = 0
    start = time.perf_counter()
    while answered < len(frames):
        while pending and outstanding < in_flight:
            entry.inbox.append(("", pending.popleft()))
            outstanding += 1
        if not rig.step():
            time.sleep(0.0005)
        for reply in entry.replies:
            if isinstance(reply, AppendReply):
                assert not reply.code, f"append failed: {reply.code} {reply.detail}"
                outstanding -= 1
                answered += 1
        entry.replies.clear()
    return time.perf_counter() - start


def report(rig: Rig, events: int, wall: float) -> float:
    """Print the rate and each peer's CPU an event by part; return the entry peer's (n1)."""
    print(f"{events} events in {wall:.2f} s wall: {events / wall:,.0f} events/s in one process")
    total = 0.0
    for name in sorted(rig.peers):
        cpu = rig.peers[name].cpu
        per = {part: cpu[part] / events * 1e6 for part in PARTS}
        total += sum(per.values())
        parts = "  ".join(f"{part} {per[part]:5.1f}" for part in PARTS)
        print(f"  {name}: {sum(per.values()):6.1f} us CPU/event  ({parts})")
    print(f"  all peers: {total:.1f} us CPU/event; events moved per message class: {dict(rig.moved)}")
    return sum(rig.peers["n1"].cpu[part] for part in PARTS) / events * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=1)
    parser.add_argument("--ack", default="master")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--store", default="segment", choices=["segment", "memory"])
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--profile-peer", metavar="NAME", help="profile only this peer's decode/node/store/encode work")
    parser.add_argument("--catchup", type=int, default=0, help="events written while a third peer is away")
    parser.add_argument("--runs", type=int, default=1, help="repeat on fresh peers; print the medians")
    args = parser.parse_args()
    if args.runs > 1 and not args.catchup:
        figures = [measure_once(args, run + 1) for run in range(args.runs)]
        cpu, rate = statistics.median(f[0] for f in figures), statistics.median(f[1] for f in figures)
        print(f"medians of {args.runs} runs (load {os.getloadavg()[0]:.2f}): n1 {cpu:.1f} us CPU/event "
              f"({', '.join(f'{f[0]:.1f}' for f in figures)}), {rate:,.0f} events/s in one process")
        return
    measure_once(args, 0)


def measure_once(args: argparse.Namespace, run: int) -> tuple[float, float]:
    """One measurement on fresh peers: (n1's CPU us an event, events/s in one process)."""
    if run:
        print(f"run {run} (load {os.getloadavg()[0]:.2f})")
    gc.set_threshold(GC_YOUNG_OBJECTS, *GC_OLDER_RATIOS)  # as a peer process runs
    config = Config.preset("local", shards=RUN_SHARDS_DEFAULT, replication_factor=RUN_REPLICATION_FACTOR_DEFAULT)
    root = tempfile.mkdtemp(prefix="meshstream-cpu-")
    try:
        if args.catchup:
            catchup(args, config, root)
            return 0.0, 0.0
        names = [f"n{i}" for i in range(1, args.peers + 1)]
        rig = Rig(names, config, args.store, root)
        rig.run_until(lambda: rig.settled(names), 60, "mesh settled")
        entry = rig.peers["n1"]
        stream = "bench"
        warm = request_frames(rig.encoder, 20, args.batch, args.ack, stream)
        drive(rig, entry, warm, args.in_flight)
        frames = request_frames(rig.encoder, args.events // args.batch, args.batch, args.ack, stream)
        rig.reset_cpu()
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        if args.profile_peer:
            rig.profiled, rig.profiler = args.profile_peer, cProfile.Profile()
        wall = drive(rig, entry, frames, args.in_flight)
        profiler = profiler or rig.profiler
        if args.profile:
            profiler.disable()
        cpu = report(rig, len(frames) * args.batch, wall)
        if profiler and os.environ.get("PROFILE_OUT"):
            profiler.dump_stats(os.environ["PROFILE_OUT"])  # for print_callers and friends
        if profiler:
            pstats.Stats(profiler).sort_stats(os.environ.get("SORT", "tottime")).print_stats(int(os.environ.get("LINES", "30")))
        return cpu, len(frames) * args.batch / wall
    finally:
        shutil.rmtree(root, ignore_errors=True)


def catchup(args: argparse.Namespace, config: Config, root: str) -> None:
    """Three peers; n3 stops, N events are written, n3 returns: its catch-up rate."""
    names = ["n1", "n2", "n3"]
    rig = Rig(names, config, args.store, root)
    rig.run_until(lambda: rig.settled(names), 60, "mesh settled")
    away = rig.peers.pop("n3")
    away.store.close() if hasattr(away.store, "close") else None
    rig.run_until(lambda: rig.settled(["n1", "n2"]), 60, "n3 declared failed")
    stream = "bench"
    master = rig.peers[rig.peers["n1"].node.master_of(stream) or "n1"]
    frames = request_frames(rig.encoder, args.catchup // 1000, 1000, "quorum", stream)
    drive(rig, master, frames, 4)
    held = master.store.event_count(stream)
    rig.reset_cpu()
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    if args.profile_peer:
        rig.profiled, rig.profiler = args.profile_peer, cProfile.Profile()
    start = time.perf_counter()
    back = rig.add("n3", ("n1",))
    rig.run_until(lambda: back.store.event_count(stream) >= held, 600, "n3 caught up")
    wall = time.perf_counter() - start
    if profiler:
        profiler.disable()
    print(f"catch-up of {held} events: {held / wall:,.0f} events/s in one process (target 100,000)")
    report(rig, held, wall)
    profiler = profiler or rig.profiler
    if profiler and os.environ.get("PROFILE_OUT"):
        profiler.dump_stats(os.environ["PROFILE_OUT"])
    if profiler:
        pstats.Stats(profiler).sort_stats(os.environ.get("SORT", "tottime")).print_stats(int(os.environ.get("LINES", "30")))


if __name__ == "__main__":
    main()
