"""The simulator's own machinery, driven by a tiny fake node (not the real one).

The fake node: full replication to every peer it knows, heartbeats for liveness, the
smallest-named live peer as master of every shard, appends sequenced wherever they land,
pushed once to every peer (no repair, so tests that need convergence run without loss).
A small dict store stands in for MemoryStore.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from meshstream.clocks import Dot, VersionVector
from meshstream.envelope import Event
from meshstream.errors import ConfigError
from meshstream.ids import shard_of
from meshstream.ordering import canonical_order
from meshstream.protocol.effects import Journal, Persist, Reply, Send
from meshstream.store.api import AppendResult
from meshstream.store.memory import MemoryStore
from meshstream.wire.messages import AppendReply, AppendRequest, Appended, ReadReply, ReadRequest
from meshstream.wire.schema import MESSAGE_KINDS, message
from simulations.network import Network
from simulations.runner import Simulation, main
from simulations.scenario import parse_scenario

HEARTBEAT_S = 0.5
FAILED_AFTER_S = 2.0


def _register(kind, cls):
    if kind in MESSAGE_KINDS:
        return MESSAGE_KINDS[kind]
    return message(kind)(cls)


@dataclass(frozen=True, slots=True)
class _Beat:
    peer: str
    known: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Push:
    events: tuple[Event, ...]


FakeBeat = _register(60001, _Beat)
FakePush = _register(60002, _Push)


class DictStore:
    def __init__(self) -> None:
        self.events: dict[tuple[str, bytes], Event] = {}
        self.corrupted: set[tuple[str, bytes]] = set()

    def append_batch(self, events, *, on_conflict="raise"):
        results = []
        for event in events:
            old = self.events.get(event.natural_key)
            if old is None or event.digest < old.digest:
                self.events[event.natural_key] = event
                results.append(AppendResult.STORED if old is None else AppendResult.WON)
            else:
                results.append(AppendResult.DUPLICATE)
        return results

    def get(self, stream, key):
        return None if (stream, key) in self.corrupted else self.events.get((stream, key))

    def read(self, stream, cursor, limit):
        chosen = [e for (s, k), e in self.events.items() if s == stream and (s, k) not in self.corrupted
                  and not cursor.contains(e.dot)]
        return canonical_order(chosen)[:limit]

    def version_vector(self, stream):
        vector = VersionVector()
        for event in self.read(stream, VersionVector(), 10**9):
            vector = vector.with_dot(event.dot)
        return vector

    def streams(self):
        return sorted({s for s, _ in self.events})

    def event_count(self, stream):
        return len(self.read(stream, VersionVector(), 10**9))

    def damage(self, stream, key):
        self.corrupted.add((stream, key))


@dataclass
class _Member:
    peer: str
    status: str
    incarnation: int = 1


class FakeTopology:
    def __init__(self, node):
        self.node = node

    def members(self):
        return {p: _Member(p, "alive" if self.node.is_live(p) else "failed") for p in sorted(self.node.last_seen)}

    def live(self):
        return [p for p in sorted(self.node.last_seen) if self.node.is_live(p)]

    def replica_set(self, shard):
        return tuple(self.live())

    def master(self, shard):
        live = self.live()
        return (live[0], 1) if live else None

    def live_master(self, shard):
        found = self.master(shard)
        return found[0] if found else None


class FakeNode:
    def __init__(self, name, address, config, rng, store, seeds=()):
        self.name, self.config, self.rng, self.store = name, config, rng, store
        self.last_seen = {name: 0.0}
        self.seeds = tuple(seeds)
        self.now = 0.0
        self.next_beat = 0.0
        self.waiting = {}  # token -> (client, request_id, event)
        self.next_token = 0
        self.topology = FakeTopology(self)

    def is_live(self, peer):
        return peer == self.name or self.now - self.last_seen[peer] < FAILED_AFTER_S

    def start(self, now):
        self.now = now
        for seed in self.seeds:
            self.last_seen.setdefault(seed, now)
        return self.tick(now)

    def tick(self, now):
        self.now = now
        self.last_seen[self.name] = now
        if now < self.next_beat:
            return []
        self.next_beat = now + HEARTBEAT_S
        known = tuple(sorted(self.last_seen))
        return [Send(peer, FakeBeat(self.name, known)) for peer in known if peer != self.name]

    def next_deadline(self):
        return self.next_beat

    def receive(self, src, msg, now):
        self.now = now
        if isinstance(msg, _Beat):
            self.last_seen[src] = now
            for peer in msg.known:
                self.last_seen.setdefault(peer, now)
            return []
        self.next_token += 1
        return [Persist(self.next_token, msg.events)]

    def client_request(self, client, msg, now):
        self.now = now
        if isinstance(msg, ReadRequest):
            events = tuple(self.store.read(msg.stream, msg.cursor, msg.limit))
            cursor = msg.cursor
            for event in events:
                cursor = cursor.with_dot(event.dot)
            return [Reply(client, ReadReply(msg.request_id, events, cursor, "", ""))]
        item = msg.items[0]
        existing = self.store.get(msg.stream, item.key)
        if existing is not None:
            appended = Appended(item.key, existing.dot, existing.digest, True)
            return [Reply(client, AppendReply(msg.request_id, (appended,), "", "", False))]
        counter = self.store.version_vector(msg.stream).get(self.name) + len(self.waiting) + 1
        event = Event.sequence(msg.stream, item.key, item.data, {}, Dot(self.name, counter), VersionVector())
        self.next_token += 1
        self.waiting[self.next_token] = (client, msg.request_id, event)
        return [Persist(self.next_token, (event,))]

    def persisted(self, token, now):
        self.now = now
        waiting = self.waiting.pop(token, None)
        if waiting is None:
            return []
        client, request_id, event = waiting
        appended = Appended(event.key, event.dot, event.digest, False)
        effects = [Reply(client, AppendReply(request_id, (appended,), "", "", False)),
                   Journal("appended", f"{event.key!r}")]
        effects += [Send(p, FakePush((event,))) for p in sorted(self.last_seen) if p != self.name]
        return effects

    def leave(self, now):
        return []

    def address_of(self, peer):
        return peer

    def master_of(self, stream):
        return self.topology.live_master(0)

    def shard_of(self, stream):
        return shard_of(stream, self.config.shards)


SMOKE = """
name = "fake-smoke"
seed = 3
duration_s = 12
[cluster]
nodes = 4
replication_factor = 3
shards = 4
[network]
latency_ms = [1, 5]
[[workload]]
stream = "orders"
rate_per_s = 20
start_s = 2
stop_s = 7
ack = "master"
[expect]
converged_by_s = 10
no_acked_loss = true
no_duplicates = true
single_master_by_s = 10
membership_converged_by_s = 10
no_failed_live_peers = true
acked_min = 50
"""


def run(text, seed=None, **kw):
    store = kw.pop("store_factory", MemoryStore)
    return Simulation(parse_scenario(text), seed, node_factory=FakeNode, store_factory=store, **kw).run()


def test_smoke_with_fake_node_passes_and_counts():
    result = run(SMOKE)
    assert result.ok, (result.seed, result.checks, result.details["problems"])
    assert result.acked >= 100 and result.lost == 0 and result.duplicates == 0
    assert result.messages > 0 and result.bytes > result.messages
    assert result.details["events_read"] >= result.acked


def test_same_seed_same_digest_other_seed_differs():
    first, second, other = run(SMOKE), run(SMOKE), run(SMOKE, seed=4)
    assert first.trace_digest == second.trace_digest, first.seed
    assert first.trace_digest != other.trace_digest


def test_crash_loses_unsynced_persists_and_checker_sees_divergence():
    text = SMOKE.replace("[expect]", """
[[fault]]
at_s = 3
kind = "crash"
nodes = ["n3"]
[expect]""")
    result = run(text)
    # n3 is down at the end: it is no live replica, the rest still agree
    assert result.checks["converged_by_s"], result.details["problems"]
    assert result.details["live_peers"] == 3


def test_partition_without_repair_diverges_and_fails_checks():
    text = SMOKE.replace("[expect]", """
[[fault]]
at_s = 2
kind = "partition"
groups = [["n1", "n2"], ["n3", "n4"]]
[[fault]]
at_s = 8
kind = "heal"
[expect]""")
    result = run(text)
    # the fake node has no anti-entropy: writes during the cut never reach the other side
    assert not result.ok
    assert result.divergent_replicas > 0 and not result.checks["converged_by_s"]
    assert result.lost > 0


def test_restart_crashed_and_master_selector():
    text = SMOKE.replace("[expect]", """
[[fault]]
at_s = 2
kind = "crash"
nodes = ["master:orders"]
[[fault]]
at_s = 4
kind = "restart"
nodes = ["crashed"]
[expect]""")
    result = run(text)
    faults = [entry.text for entry in result.timeline if entry.kind == "fault"]
    assert faults == ["crash n1", "restart n1"], faults
    assert result.details["live_peers"] == 4


def test_corrupt_hits_a_record_and_join_adds_peers():
    text = SMOKE.replace("[expect]", """
[[fault]]
at_s = 5
kind = "corrupt"
nodes = ["n2"]
count = 2
[[fault]]
at_s = 6
kind = "join"
count = 3
[expect]""")
    result = run(text)
    faults = [entry.text for entry in result.timeline if entry.kind == "fault"]
    assert faults[0].startswith("corrupt n2:orders/") and len(faults[0].split()) == 3, faults
    assert faults[1] == "join n5 n6 n7"
    assert result.details["peers"] == 7
    assert result.divergent_replicas > 0  # the fake node never repairs a corrupt record


def test_network_partition_isolate_one_way_heal():
    network = Network((1, 2), 0.0)
    for name in ("a", "b", "c"):
        network.add_peer(name)
    rng = random.Random(1)
    network.partition([["a", "b"]])
    assert network.reachable("a", "b") and not network.reachable("a", "c")
    network.heal()
    network.cut_one_way([("a", "b")])
    assert not network.reachable("a", "b") and network.reachable("b", "a")
    network.heal(["a"])
    network.isolate(["c"])
    assert network.transit("a", "c", 10, rng) is None and network.transit("a", "b", 10, rng) is not None
    network.heal(["c"])
    assert network.reachable("c", "a")
    network.set_link(["a"], loss=1.0)
    assert network.transit("a", "b", 10, rng) is None and network.transit("b", "c", 10, rng) is not None


@pytest.mark.parametrize("mutation, needle", [
    (("nodes = 4", "nodes = 4\ncolour = 1"), "cluster.colour: unknown key"),
    (("nodes = 4", "nodes = 0"), "cluster.nodes: must be within"),
    (('ack = "master"', 'ack = "some"'), "workload[0].ack: must be one of"),
    (("[expect]", '[[fault]]\nat_s = 1\nkind = "explode"\n[expect]'), "fault[0].kind: unknown fault kind"),
    (("[expect]", '[[fault]]\nat_s = 1\nkind = "crash"\nnodes = ["n9"]\n[expect]'), "fault[0]: unknown peer 'n9'"),
    (("[expect]", '[[fault]]\nat_s = 1\nkind = "crash"\n[expect]'), "fault[0].nodes: required"),
    (("[expect]", '[[fault]]\nat_s = 1\nkind = "heal"\ngroups = []\n[expect]'), "fault[0].groups: unknown key"),
    (("latency_ms = [1, 5]", "latency_ms = [5, 1]"), "network.latency_ms: must be [low, high]"),
    (("no_duplicates = true", "no_duplicates = 1"), "expect.no_duplicates: must be true or false"),
    (("duration_s = 12", "duration_s = 12\n[config]\nprobe_interval_s = -1"), "[config]: config probe_interval_s"),
    (("duration_s = 12", "duration_s = [1]"), "duration_s: must be a number"),
])
def test_scenario_validation_names_the_bad_key(mutation, needle):
    old, new = mutation
    assert old in SMOKE
    with pytest.raises(ConfigError) as info:
        parse_scenario(SMOKE.replace(old, new, 1))
    assert needle in str(info.value)


def test_cli_exit_codes_and_seed_first(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(SMOKE.replace("nodes = 4", "nodes = 4\nx = 1"))
    assert main([str(bad)]) == 2
    captured = capsys.readouterr()
    assert "cluster.x: unknown key" in captured.err and captured.err.count("\n") == 1
    assert main([str(tmp_path / "missing.toml")]) == 2


def test_dict_store_and_memory_store_give_the_same_run():
    with_memory = run(SMOKE)
    with_dict = run(SMOKE, store_factory=DictStore)
    assert with_memory.ok and with_dict.ok
    assert with_memory.trace_digest == with_dict.trace_digest
