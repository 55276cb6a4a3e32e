"""The simulated peers: it owns their nodes, disks and timers, carries out their effects
over the simulated network and applies faults.

Each `SimPeer` keeps its durable store and `SimDisk` across crashes; its `Node` lives only
while the peer is up. A restart builds a new Node over the same store (`Node.start`
recovers from it). Effects are carried out in order:

- `Send` / `SendTo`: encoded with `message_to_bytes`, judged by the network (cut, lost or
  delayed), decoded with `message_from_bytes` at the receiver, then `node.receive`.
  A message reaching a peer that is down, or that restarted since it was sent, is dropped.
- `Persist`: durable after the disk's fsync latency, then `node.persisted`.
- `Reply`: handed to the client (round-tripped through the codec) on the next step.
- `Journal`: a decision, recorded in the journal and on the timeline.

Timers: after every input the peer's `next_deadline()` is read and a tick scheduled; stale
timers are recognised by a per-peer timer id and ignored.
"""

from __future__ import annotations

import bisect
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshstream.config import Config
from meshstream.errors import RemoteProtocolError
from meshstream.protocol.effects import Deliver, Journal, Persist, Reply, Send, SendTo
from meshstream.wire.schema import message_from_bytes, message_to_bytes
from simulations.disk import SimDisk
from simulations.loop import EventLoop, Journal as TraceJournal
from simulations.network import Network

NodeFactory = Callable[..., Any]  # (name, address, config, rng, store, seeds) -> Node
StoreFactory = Callable[[], Any]
TICK_AFTER_TICK_S = 1e-4  # a node that asks to be ticked again at once waits this long
LEAVE_GRACE_S = 2.0  # a leaving peer keeps serving this long so its MemberLeft spreads
SEEDS_MAX = 3


@dataclass
class SimPeer:
    name: str
    store: Any
    disk: SimDisk
    node: Any = None
    alive: bool = False
    departed: bool = False  # left gracefully: never selected as "crashed"
    timer_id: int = 0
    timer_at: float | None = None
    starts: int = 0


@dataclass
class TimelineEntry:
    at_s: float
    kind: str
    text: str


@dataclass
class Stats:
    deliveries: int = 0
    replies: int = 0
    delivers: int = 0
    persists_lost: int = 0
    rejected: int = 0
    decisions: Counter = field(default_factory=Counter)


def default_node_factory() -> NodeFactory:
    from meshstream.protocol.node import Node

    return Node


def default_store_factory() -> StoreFactory:
    from meshstream.store.memory import MemoryStore

    return MemoryStore


class SimCluster:
    def __init__(self, config: Config, loop: EventLoop, journal: TraceJournal, network: Network,
                 rng: random.Random, node_factory: NodeFactory, store_factory: StoreFactory) -> None:
        self.config, self.loop, self.journal, self.network = config, loop, journal, network
        self.rng = rng  # the cluster's own stream: per-peer seeds, latency, loss
        self.node_factory, self.store_factory = node_factory, store_factory
        self.peers: dict[str, SimPeer] = {}
        self._names: list[str] = []  # the keys of `peers`, kept sorted (writers ask per write)
        self.clients: dict[int, Any] = {}
        self.timeline: list[TimelineEntry] = []
        self.stats = Stats()
        self.holders: dict[tuple[str, bytes], set[str]] = {}  # natural key -> peers that made it durable
        self.send_observers: list[Callable[[float, str, str, object], None]] = []  # benches watch sends

    # -- peers --
    def add_peer(self, name: str, seeds: Sequence[str]) -> SimPeer:
        assert name not in self.peers, name
        store = self.store_factory()
        peer = SimPeer(name, store, SimDisk(store, random.Random(self.rng.getrandbits(64))))
        self.peers[name] = peer
        bisect.insort(self._names, name)
        self.network.add_peer(name)
        self.start_peer(peer, seeds)
        return peer

    def start_peer(self, peer: SimPeer, seeds: Sequence[str]) -> None:
        node_rng = random.Random(self.rng.getrandbits(64))
        peer.node = self.node_factory(peer.name, peer.name, self.config, node_rng, peer.store, tuple(seeds))
        peer.alive, peer.departed = True, False
        peer.starts += 1
        peer.timer_at = None
        self.journal.record(self.loop.now, "start", f"{peer.name} seeds={','.join(seeds)}")
        self._run(peer, peer.node.start(self.loop.now))

    def crash(self, peer: SimPeer) -> None:
        if not peer.alive:
            return
        peer.alive = False
        peer.node = None
        peer.timer_at = None
        peer.disk.crash()
        self.journal.record(self.loop.now, "crash", peer.name)
        for client in sorted(self.clients):
            self.clients[client].on_disconnect(peer.name)

    def live_peers(self) -> list[str]:
        return [name for name in self._names if self.peers[name].alive]

    def down_peers(self) -> list[str]:
        return [name for name in self._names if not self.peers[name].alive and not self.peers[name].departed]

    def seeds_for(self, name: str) -> list[str]:
        """Seeds for a (re)starting peer: a few live peers, the oldest first."""
        live = [peer for peer in sorted(self.peers, key=_peer_number) if peer != name and self.peers[peer].alive]
        return live[:SEEDS_MAX]

    def leave(self, peer: SimPeer) -> None:
        if not peer.alive:
            return
        self._run(peer, peer.node.leave(self.loop.now))
        self.loop.after(LEAVE_GRACE_S, lambda: self._depart(peer))

    def _depart(self, peer: SimPeer) -> None:
        if peer.alive:
            self.crash(peer)
            peer.departed = True

    # -- clients --
    def request(self, peer_name: str, client: int, message: object) -> bool:
        peer = self.peers.get(peer_name)
        if peer is None or not peer.alive:
            return False
        self.journal.record(self.loop.now, "request", f"{peer_name} c{client} {type(message).__name__}")
        self._run(peer, peer.node.client_request(client, message, self.loop.now))
        return True

    def give_events(self, names: Sequence[str], src: str, events: Sequence[Any]) -> None:
        """Hand `events` to each peer in `names` as if they had come from `src` and been
        made durable there unasked (benches seed a state, e.g. each side of a healed cut)."""
        for name in names:
            peer = self.peers[name]
            if peer.alive:
                self._run(peer, peer.node.take_events(src, list(events), self.loop.now, ("topology",)))

    # -- effects --
    def _run(self, peer: SimPeer, effects: list[Any]) -> None:
        now = self.loop.now
        for effect in effects:
            if isinstance(effect, Send):
                address = peer.node.address_of(effect.peer) if peer.node is not None else None
                self._send(peer.name, address, effect.message)
            elif isinstance(effect, SendTo):
                self._send(peer.name, effect.address, effect.message)
            elif isinstance(effect, Persist):
                self._persist(peer, effect)
            elif isinstance(effect, Reply):
                self._reply(peer.name, effect)
            elif isinstance(effect, Journal):
                self.journal.record(now, "decision", f"{peer.name} {effect.kind} {effect.text}")
                self.timeline.append(TimelineEntry(now, effect.kind, f"{peer.name}: {effect.text}"))
                self.stats.decisions[effect.kind] += 1
            elif isinstance(effect, Deliver):
                self.stats.delivers += 1
            else:
                raise AssertionError(f"unknown effect {effect!r}")
        if peer.alive:
            self._arm(peer)

    def _send(self, src: str, address: str | None, message: object) -> None:
        for observe in self.send_observers:
            observe(self.loop.now, src, address, message)
        data = message_to_bytes(message)
        kind = type(message).__name__
        if address is None or address not in self.peers:
            self.journal.record(self.loop.now, "drop", f"{src} {address} {kind} {len(data)} unknown")
            return
        delay_s = self.network.transit(src, address, len(data), self.rng)
        if delay_s is None:
            self.journal.record(self.loop.now, "drop", f"{src} {address} {kind} {len(data)} net")
            return
        self.journal.record(self.loop.now, "send", f"{src} {address} {kind} {len(data)}")
        target = self.peers[address]
        generation = target.disk.generation
        self.loop.after(delay_s, lambda: self._deliver(src, target, generation, data, kind))

    def _deliver(self, src: str, peer: SimPeer, generation: int, data: bytes, kind: str) -> None:
        if not peer.alive or peer.disk.generation != generation:
            self.journal.record(self.loop.now, "drop", f"{src} {peer.name} {kind} down")
            return
        try:
            message = message_from_bytes(data)
        except RemoteProtocolError as exc:
            self.stats.rejected += 1
            self.journal.record(self.loop.now, "reject", f"{src} {peer.name} {kind} {exc}")
            return
        self.stats.deliveries += 1
        self.journal.record(self.loop.now, "recv", f"{src} {peer.name} {kind}")
        self._run(peer, peer.node.receive(src, message, self.loop.now))

    def _persist(self, peer: SimPeer, effect: Persist) -> None:
        generation = peer.disk.generation
        done_at = peer.disk.completion_time(self.loop.now)
        self.loop.at(done_at, lambda: self._persisted(peer, generation, effect))

    def _persisted(self, peer: SimPeer, generation: int, effect: Persist) -> None:
        if not peer.disk.complete(generation, effect.events):
            self.stats.persists_lost += 1
            self.journal.record(self.loop.now, "lost", f"{peer.name} persist {effect.token} {len(effect.events)}")
            return
        for event in effect.events:
            self.holders.setdefault(event.natural_key, set()).add(peer.name)
        self.journal.record(self.loop.now, "persisted", f"{peer.name} {effect.token} {len(effect.events)}")
        self._run(peer, peer.node.persisted(effect.token, self.loop.now))

    def _reply(self, peer_name: str, effect: Reply) -> None:
        message = message_from_bytes(message_to_bytes(effect.message))  # exercise the client codec
        client = self.clients.get(effect.client)
        self.stats.replies += 1
        self.journal.record(self.loop.now, "reply", f"{peer_name} c{effect.client} {type(message).__name__}")
        if client is not None:
            self.loop.after(0.0, lambda: client.on_reply(peer_name, message))

    # -- timers --
    def _arm(self, peer: SimPeer, after_tick: bool = False) -> None:
        deadline = peer.node.next_deadline()
        if deadline is None:
            return
        now = self.loop.now
        when = max(deadline, now + TICK_AFTER_TICK_S) if after_tick else max(deadline, now)
        if peer.timer_at is not None and peer.timer_at <= when:
            return
        peer.timer_id += 1
        timer_id, generation = peer.timer_id, peer.disk.generation
        peer.timer_at = when
        self.loop.at(when, lambda: self._fire(peer, timer_id, generation))

    def _fire(self, peer: SimPeer, timer_id: int, generation: int) -> None:
        if not peer.alive or peer.disk.generation != generation or peer.timer_id != timer_id:
            return
        peer.timer_at = None
        effects = peer.node.tick(self.loop.now)
        self._run_tick(peer, effects)

    def _run_tick(self, peer: SimPeer, effects: list[Any]) -> None:
        self._run(peer, effects)
        if peer.alive and peer.timer_at is not None and peer.timer_at <= self.loop.now:
            # the node asked for another tick at once: space it so time always advances
            peer.timer_at = None
            self._arm(peer, after_tick=True)


def _peer_number(name: str) -> tuple[int, str]:
    digits = name[1:]
    return (int(digits), name) if name.startswith("n") and digits.isdigit() else (1 << 30, name)
