"""The simulated network: a networkx graph of links, with latency, loss, bandwidth and cuts.

Every peer is a graph node; an edge means the two peers can reach each other. Edges carry
their link properties (`latency_ms` as a (low, high) range, `loss` probability,
`bandwidth_bytes_per_s`, 0 for unlimited) when a fault overrode them; otherwise the graph's
defaults (`graph.graph`) apply, which keeps a 1000-peer full mesh cheap.

Partitions remove edges: `partition(groups)` cuts every pair not in one group (a peer in no
group is cut off from all), `isolate(peers)` cuts peers off from everyone, `cut_one_way`
blocks one direction only (an asymmetric partition), and `heal` restores edges. A message
crossing a missing edge or a one-way block is dropped at send time.

`transit(src, dst, size_bytes, rng)` decides a message's fate: None when dropped (cut or
lost), else its delivery delay in seconds (uniform latency plus size / bandwidth).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence

import networkx as nx

_NO_EDGES: dict[str, dict] = {}  # a peer not in the graph (never written to)


class Network:
    def __init__(self, latency_ms: tuple[float, float], loss: float, bandwidth_bytes_per_s: float = 0.0) -> None:
        self.graph = nx.Graph(latency_ms=tuple(latency_ms), loss=loss, bandwidth_bytes_per_s=bandwidth_bytes_per_s)
        self.cut_pairs: set[tuple[str, str]] = set()  # sorted pairs removed by group partitions
        self.isolated: set[str] = set()
        self.one_way: set[tuple[str, str]] = set()  # (src, dst) directions blocked
        self.messages = 0
        self.bytes = 0
        self.dropped = 0

    # -- membership of the graph --
    def add_peer(self, peer: str) -> None:
        """Connect a new peer to every peer that it is not cut off from."""
        if peer in self.graph:
            return
        others = sorted(self.graph.nodes)
        self.graph.add_node(peer)
        if peer in self.isolated:
            return
        self.graph.add_edges_from((peer, other) for other in others if self._allowed(peer, other))

    def peers(self) -> list[str]:
        return sorted(self.graph.nodes)

    # -- faults --
    def partition(self, groups: Sequence[Sequence[str]]) -> None:
        """Cut every pair of peers that share no group; peers in no group are cut off."""
        group_of: dict[str, int] = {}
        for index, group in enumerate(groups):
            for peer in group:
                group_of[peer] = index
        for a, b in itertools.combinations(self.peers(), 2):
            if a not in group_of or b not in group_of or group_of[a] != group_of[b]:
                self.cut_pairs.add((a, b))
        self._rebuild()

    def isolate(self, peers: Iterable[str]) -> None:
        self.isolated.update(peers)
        self._rebuild()

    def cut_one_way(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.one_way.update((src, dst) for src, dst in pairs)

    def heal(self, peers: Iterable[str] | None = None) -> None:
        """Restore every link (peers=None), or every link touching `peers`."""
        if peers is None:
            self.cut_pairs.clear()
            self.isolated.clear()
            self.one_way.clear()
        else:
            chosen = set(peers)
            self.isolated -= chosen
            self.cut_pairs = {pair for pair in self.cut_pairs if not chosen.intersection(pair)}
            self.one_way = {pair for pair in self.one_way if not chosen.intersection(pair)}
        self._rebuild()

    def set_link(self, peers: Iterable[str] | None, **properties: object) -> None:
        """Override link properties on edges touching `peers` (None: the defaults, all links)."""
        if peers is None:
            self.graph.graph.update(properties)
            for _, _, data in self.graph.edges(data=True):
                for name in properties:
                    data.pop(name, None)
            return
        for peer in sorted(set(peers)):
            if peer in self.graph:
                for other in sorted(self.graph.adj[peer]):
                    self.graph.edges[peer, other].update(properties)

    # -- delivery --
    def transit(self, src: str, dst: str, size_bytes: int, rng: random.Random) -> float | None:
        """None if the message is dropped, else its delay in seconds."""
        self.messages += 1
        self.bytes += size_bytes
        # networkx's own dict of dicts: its `adj` view builds a view object per look-up,
        # and this runs once per message.
        edge = self.graph._adj.get(src, _NO_EDGES).get(dst)  # noqa: SLF001
        if edge is None or (src, dst) in self.one_way:
            self.dropped += 1
            return None
        defaults = self.graph.graph
        loss = edge.get("loss", defaults["loss"])
        if loss and rng.random() < loss:
            self.dropped += 1
            return None
        low, high = edge.get("latency_ms", defaults["latency_ms"])
        delay_s = rng.uniform(low, high) / 1000.0
        bandwidth = edge.get("bandwidth_bytes_per_s", defaults["bandwidth_bytes_per_s"])
        if bandwidth:
            delay_s += size_bytes / bandwidth
        return delay_s

    def reachable(self, src: str, dst: str) -> bool:
        return dst in self.graph._adj.get(src, _NO_EDGES) and (src, dst) not in self.one_way  # noqa: SLF001

    # -- internals --
    def _allowed(self, a: str, b: str) -> bool:
        pair = (a, b) if a < b else (b, a)
        return pair not in self.cut_pairs and a not in self.isolated and b not in self.isolated

    def _rebuild(self) -> None:
        """Make the edge set match the cuts, keeping overridden properties of kept edges."""
        peers = self.peers()
        for a, b in itertools.combinations(peers, 2):
            present = self.graph.has_edge(a, b)
            allowed = self._allowed(a, b)
            if present and not allowed:
                self.graph.remove_edge(a, b)
            elif allowed and not present:
                self.graph.add_edge(a, b)
