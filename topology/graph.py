"""networkx views of a topology fold, and DOT text for people and tools.

- `membership_graph(state)`: one node per member with `status`, `address`,
  `incarnation` attributes (a graph with no edges: membership is a set; callers add
  their own edges, such as the simulator's network links).
- `shard_graph(state)`: bipartite; peer nodes (`bipartite=0`, `kind="peer"`) and shard
  nodes named `"shard:<n>"` (`bipartite=1`, `kind="shard"`), an edge from every replica to
  its shard with `role="master"` or `role="replica"`. A master that is no longer in the
  replica set (failed, left, outranked) keeps a master edge, so the picture shows it.
- `to_dot(graph)`: DOT text written here (no pydot/pygraphviz), nodes and edges in sorted
  order so the text is deterministic.
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from topology.fold import TopologyState

STATUS_COLORS = {"alive": "palegreen", "suspect": "gold", "failed": "tomato", "left": "lightgray"}


def shard_node(shard: int) -> str:
    return f"shard:{shard}"


def membership_graph(state: TopologyState) -> nx.Graph:
    """Members as nodes carrying status, address and incarnation."""
    graph = nx.Graph(name="membership")
    for peer, member in state.members().items():
        graph.add_node(peer, kind="peer", status=member.status, address=member.address,
                       incarnation=member.incarnation)
    return graph


def shard_graph(state: TopologyState) -> nx.Graph:
    """Peers and shards, with role=master/replica edges. Empty of shards until configured."""
    graph = nx.Graph(name="shards")
    for peer, member in state.members().items():
        graph.add_node(peer, kind="peer", bipartite=0, status=member.status, address=member.address)
    for shard in range(state.shards or 0):
        node = shard_node(shard)
        master = state.master(shard)
        graph.add_node(node, kind="shard", bipartite=1, shard=shard,
                       epoch=0 if master is None else master[1])
        for peer in state.replica_set(shard):
            graph.add_edge(peer, node, role="replica")
        if master is not None:
            graph.add_edge(master[0], node, role="master")
    return graph


def to_dot(graph: nx.Graph) -> str:
    """DOT text for `graph`: nodes (with attributes) and edges, in sorted order."""
    keyword = "digraph" if graph.is_directed() else "graph"
    arrow = "->" if graph.is_directed() else "--"
    lines = [f"{keyword} {_quote(str(graph.graph.get('name') or 'topology'))} {{"]
    for node in sorted(graph.nodes, key=str):
        lines.append(f"  {_quote(str(node))}{_attributes(_node_style(graph.nodes[node]))};")
    edges = sorted((sorted((str(u), str(v))) if not graph.is_directed() else [str(u), str(v)], data)
                   for u, v, data in graph.edges(data=True))
    for (u, v), data in edges:
        lines.append(f"  {_quote(u)} {arrow} {_quote(v)}{_attributes(_edge_style(data))};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _node_style(data: dict[str, Any]) -> dict[str, Any]:
    style = dict(data)
    if data.get("kind") == "shard":
        style.setdefault("shape", "box")
    elif "status" in data:
        style.setdefault("style", "filled")
        style.setdefault("fillcolor", STATUS_COLORS.get(str(data["status"]), "white"))
    return style


def _edge_style(data: dict[str, Any]) -> dict[str, Any]:
    style = dict(data)
    if data.get("role") == "master":
        style.setdefault("penwidth", 2.5)
    elif data.get("role") == "replica":
        style.setdefault("style", "dashed")
    return style


def _attributes(data: dict[str, Any]) -> str:
    if not data:
        return ""
    pairs = ", ".join(f"{_quote(str(key))}={_quote(_text(value))}" for key, value in sorted(data.items()))
    return f" [{pairs}]"


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _quote(text: str) -> str:
    """A DOT double-quoted ID: backslashes and quotes escaped, newlines as \\n."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
