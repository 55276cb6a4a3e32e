"""A deterministic in-memory harness wiring several Nodes back to back (like h11's
ConnectionPair, for N peers).

One heap of timed actions `(time, seq, action)`, one seeded `random.Random`, one
`MemoryStore` per peer (or any EventStore from `store_factory`). Messages go through the wire codec (`message_to_bytes` /
`message_from_bytes`) so byte counts are real; each takes a uniform latency. A `Persist`
completes after `fsync_s` (in order per peer), then `node.persisted`. Crashing a peer
drops its node, its unfinished persists and the messages in flight to it; restarting
builds a new Node over the same store. Links can be cut (partitions) and healed.

The simulator proper lives in simulations/; this is the small, fast rig for unit tests.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshstream.clocks import VersionVector
from meshstream.config import Config
from meshstream.envelope import Event
from meshstream.protocol.effects import Deliver, Journal, Persist, Reply, Send, SendTo
from meshstream.protocol.node import Node
from meshstream.store.memory import MemoryStore
from meshstream.wire.messages import AppendItem, AppendReply, AppendRequest, ReadReply, ReadRequest
from meshstream.wire.schema import message_from_bytes, message_to_bytes

READ_PAGE_EVENTS = 10_000


def fast_config(**overrides: Any) -> Config:
    """Fast timings so a test mesh detects failures within a couple of seconds."""
    base = dict(
        shards=8, replication_factor=3, probe_interval_s=0.2, probe_timeout_s=0.1,
        suspicion_multiplier=3.0, gossip_interval_s=0.05, append_timeout_s=3.0, forward_timeout_s=0.5,
        scrub_pass_s_min=1.0,  # corruption tests find a flipped record within a second or two
    )
    base.update(overrides)
    return Config.preset("sim", **base)




@dataclass
class Peer:
    name: str
    store: Any  # an EventStore: MemoryStore unless the test gives a store_factory
    node: Node | None = None
    generation: int = 0  # bumped on crash: stale persists and ticks are ignored
    tick_at: float | None = None
    disk_free_at: float = 0.0
    replies: list[Any] = field(default_factory=list)
    delivered: list[Event] = field(default_factory=list)


class Harness:
    def __init__(self, seed: int, config: Config | None = None, latency_s: tuple[float, float] = (0.001, 0.005),
                 fsync_s: float = 0.002, store_factory: Callable[[str], Any] | None = None) -> None:
        self.store_factory = store_factory or (lambda name: MemoryStore())
        self.seed = seed
        self.rng = random.Random(seed)
        self.config = config or fast_config()
        self.latency_s = latency_s
        self.fsync_s = fsync_s
        self.now = 0.0
        self.peers: dict[str, Peer] = {}
        self.cut: set[frozenset[str]] = set()
        self.loss = 0.0
        self.journal: list[tuple[float, str, str]] = []
        self.bytes_to: Counter[str] = Counter()
        self.bytes_by_kind: Counter[str] = Counter()
        self.bytes_to_by_kind: Counter[tuple[str, str]] = Counter()  # (destination, message class)
        self.messages = 0
        self.node_setup: Callable[[Node], None] | None = None
        self._heap: list[tuple[float, int, tuple]] = []
        self._seq = 0
        self._request_id = 0

    # -- peers --
    def preload(self, name: str, events: Sequence[Event]) -> None:
        """Store `events` on `name` before it starts (a peer with history)."""
        peer = self.peers.get(name) or self.peers.setdefault(name, Peer(name, self.store_factory(name)))
        peer.store.append_batch(events, on_conflict="resolve")

    def start(self, name: str, seeds: Sequence[str] = ()) -> Node:
        peer = self.peers.get(name) or self.peers.setdefault(name, Peer(name, self.store_factory(name)))
        assert peer.node is None, f"{name} is running"
        peer.node = Node(name, name, self.config, random.Random(self.rng.getrandbits(64)), peer.store, seeds)
        if self.node_setup is not None:
            self.node_setup(peer.node)
        self._run(peer, peer.node.start(self.now))
        return peer.node

    def crash(self, name: str) -> None:
        peer = self.peers[name]
        peer.node, peer.tick_at = None, None
        peer.generation += 1
        self.journal.append((self.now, "crash", name))

    def node(self, name: str) -> Node:
        node = self.peers[name].node
        assert node is not None, f"{name} is down"
        return node

    def live_names(self) -> list[str]:
        return sorted(name for name, peer in self.peers.items() if peer.node is not None)

    # -- network --
    def partition(self, *groups: Iterable[str]) -> None:
        sides = [set(g) for g in groups]
        names = sorted(self.peers)
        self.cut = {frozenset((a, b)) for a in names for b in names
                    if a < b and not any(a in side and b in side for side in sides)}

    def heal(self) -> None:
        self.cut = set()

    def _send(self, src: str, dst: str, message: Any) -> None:
        data = message_to_bytes(message)
        self.messages += 1
        self.bytes_to[dst] += len(data)
        self.bytes_by_kind[type(message).__name__] += len(data)
        self.bytes_to_by_kind[(dst, type(message).__name__)] += len(data)
        if frozenset((src, dst)) in self.cut or dst not in self.peers or self.rng.random() < self.loss:
            return
        target = self.peers[dst]
        delay = self.rng.uniform(*self.latency_s)
        self._push(self.now + delay, ("receive", src, dst, target.generation, data))

    # -- the loop --
    def _push(self, when: float, action: tuple) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, action))

    def _run(self, peer: Peer, effects: list) -> None:
        for effect in effects:
            match effect:
                case Send(peer=dst, message=message):
                    address = peer.node.address_of(dst) if peer.node is not None else None
                    if address is not None:
                        self._send(peer.name, address, message)
                case SendTo(address=address, message=message):
                    self._send(peer.name, address, message)
                case Persist(token=token, events=events):
                    peer.disk_free_at = max(peer.disk_free_at, self.now) + self.fsync_s
                    self._push(peer.disk_free_at, ("persist", peer.name, peer.generation, token, events))
                case Reply(message=message):
                    peer.replies.append(message)
                case Deliver(events=events):
                    peer.delivered.extend(events)
                case Journal(kind=kind, text=text):
                    self.journal.append((self.now, kind, text))
                case _:
                    raise AssertionError(f"unknown effect {effect!r}")
        self._schedule_tick(peer)

    def _schedule_tick(self, peer: Peer) -> None:
        if peer.node is None:
            return
        deadline = peer.node.next_deadline()
        if deadline is None:
            return
        deadline = max(deadline, self.now)
        if peer.tick_at is None or deadline < peer.tick_at:
            peer.tick_at = deadline
            self._push(deadline, ("tick", peer.name, peer.generation))

    def _step(self) -> None:
        when, _, action = heapq.heappop(self._heap)
        self.now = max(self.now, when)
        kind, name = action[0], action[2] if action[0] == "receive" else action[1]
        peer = self.peers[name]
        if peer.node is None:
            return
        if kind == "receive":
            _, src, _, generation, data = action
            if generation == peer.generation and frozenset((src, name)) not in self.cut:
                self._run(peer, peer.node.receive(src, message_from_bytes(data), self.now))
        elif kind == "persist":
            _, _, generation, token, events = action
            if generation == peer.generation:
                peer.store.append_batch(events, on_conflict="resolve")
                self._run(peer, peer.node.persisted(token, self.now))
        elif kind == "tick":
            if action[2] == peer.generation and peer.tick_at == when:
                peer.tick_at = None
                self._run(peer, peer.node.tick(self.now))

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def run_until(self, until: float) -> None:
        while self._heap and self._heap[0][0] <= until:
            self._step()
        self.now = max(self.now, until)

    def wait_for(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Run until `condition()` holds; fail naming `what` and the seed after timeout_s."""
        deadline = self.now + timeout_s
        while not condition():
            if not self._heap or self._heap[0][0] > deadline:
                raise AssertionError(f"seed={self.seed}: {what} did not happen within {timeout_s} s")
            self._step()

    # -- clients --
    def client(self, name: str, message: Any) -> int:
        peer = self.peers[name]
        assert peer.node is not None
        self._run(peer, peer.node.client_request(1, message, self.now))
        return getattr(message, "request_id", 0)

    def next_request_id(self) -> int:
        self._request_id += 1
        return self._request_id

    def append(self, name: str, stream: str, items: Sequence[tuple[bytes, bytes]], ack: str = "master",
               timeout_s: float = 10.0) -> AppendReply:
        """Send an append to `name` and run until its reply arrives."""
        request_id = self.next_request_id()
        request = AppendRequest(request_id, stream, tuple(AppendItem(k, d, {}) for k, d in items), ack)
        self.client(name, request)
        return self.await_reply(name, request_id, timeout_s)

    def await_reply(self, name: str, request_id: int, timeout_s: float = 10.0) -> Any:
        peer = self.peers[name]
        found: list[Any] = []

        def arrived() -> bool:
            found[:] = [r for r in peer.replies if getattr(r, "request_id", None) == request_id]
            return bool(found)

        self.wait_for(arrived, timeout_s, f"a reply to request {request_id} on {name}")
        return found[0]

    def read_all(self, name: str, stream: str) -> list[Event]:
        """Every event of `stream` on `name`, straight from its store, canonical order."""
        return self.peers[name].store.read(stream, VersionVector(), 1 << 40)

    def read_via_client(self, name: str, stream: str, cursor: VersionVector) -> ReadReply:
        request_id = self.next_request_id()
        self.client(name, ReadRequest(request_id, stream, cursor, READ_PAGE_EVENTS, 0.0))
        return self.await_reply(name, request_id)

    # -- mesh helpers --
    def form_mesh(self, names: Sequence[str], timeout_s: float = 10.0) -> None:
        """Start names[0] alone, the rest from it as seed; wait until all agree on
        membership and every shard has a live master."""
        self.start(names[0])
        for name in names[1:]:
            self.start(name, seeds=(names[0],))
        self.wait_for(lambda: self.agreed(names), timeout_s, f"mesh of {list(names)} formed")

    def agreed(self, names: Sequence[str]) -> bool:
        """All running `names` see exactly `names` live and every shard mastered."""
        for name in names:
            node = self.peers[name].node
            if node is None:
                return False
            topology = node.topology
            if topology.shards is None or topology.live_peers() != sorted(names):
                return False
            if any(topology.live_master(s) is None for s in range(topology.shards)):
                return False
            if not node.can_sequence():
                return False
        return True

    def replicas_of(self, stream: str, via: str) -> list[str]:
        node = self.node(via)
        return list(node.placement(node.shard_of(stream)))

    def converged(self, stream: str, names: Sequence[str]) -> bool:
        """Every named peer serves the same events of `stream` in the same order."""
        orders = [[e.digest for e in self.read_all(name, stream)] for name in names]
        return all(order == orders[0] for order in orders)

    def catch_up_ratio(self, stream: str, names: Sequence[str], batches: int, batch_events: int,
                       kinds: Sequence[str], timeout_s: float) -> float:
        """Crash a replica of `stream` that is not its master, write `batches` quorum batches
        of 200-byte events, restart it, and once it holds them all (plus 1 s for stragglers)
        return the bytes of message `kinds` it received over the bytes it lacked."""
        master = self.node(names[0]).master_of(stream)
        away = next(name for name in names if name != master)
        self.crash(away)
        self.wait_for(lambda: self.node(master).topology.member(away).status == "failed", 10, "declared failed")
        for batch in range(batches):
            items = [(f"k{batch}-{i}".encode(), bytes(200)) for i in range(batch_events)]
            assert self.append(master, stream, items, "quorum").code == ""
        lacking = sum(e.size() for e in self.read_all(master, stream))
        before = sum(self.bytes_to_by_kind[(away, kind)] for kind in kinds)
        self.start(away)
        total = batches * batch_events
        self.wait_for(lambda: len(self.read_all(away, stream)) == total, timeout_s, "caught up")
        self.run_for(1.0)
        return (sum(self.bytes_to_by_kind[(away, kind)] for kind in kinds) - before) / lacking
