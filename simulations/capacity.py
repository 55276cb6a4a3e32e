"""Per-peer capacity model: how fast a mesh can take writes, given where its masters are.

Every peer can sequence `capacity_per_s` events per second as a master (its CPU and fsync
budget), shared among the streams whose shards it masters. Two ways to load it:

- closed loop (`"closed"`): one producer per stream, each writing as fast as it is
  acknowledged. A master's capacity is split evenly among its busy streams, so the mesh
  sustains `capacity_per_s` times the number of peers that master at least one stream.
- uniform offered load (`"uniform"`): one rate spread evenly over all the streams. The
  busiest master saturates first: the mesh sustains
  `capacity_per_s * streams / (streams on the busiest master)`.

The inputs are a topology view (`TopologyState`) and the stream names, so the model can be
evaluated on any peer's view at any moment of a simulation; it is pure arithmetic.
Also here: `message_family`, the bucket a peer message falls in for per-peer message
rates (membership, anti-entropy, rebalance, writes).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from meshstream.ids import shard_of

MODELS = ("closed", "uniform")
_FAMILIES = {
    "SyncSummary": "anti_entropy", "SyncOffer": "anti_entropy", "SyncPull": "anti_entropy", "SyncEvents": "anti_entropy",
    "SyncContinue": "anti_entropy", "SyncEnvelopes": "anti_entropy",
    "CatchUpQuery": "rebalance", "CatchUpReply": "rebalance", "HandoverPrepare": "rebalance",
    "HandoverDone": "rebalance", "ReleaseQuery": "rebalance", "ReleaseReply": "rebalance", "RateHints": "rebalance",
    "Replicate": "writes", "ReplicateAck": "writes",
    "ForwardAppend": "writes", "ForwardReply": "writes",
}


def stream_masters(view: Any, streams: Iterable[str]) -> dict[str, str | None]:
    """Each stream's live master in `view` (None while its shard has none)."""
    shards = view.shards
    assert shards is not None, "the view has no mesh shape yet"
    return {stream: view.live_master(shard_of(stream, shards)) for stream in sorted(set(streams))}


def streams_per_master(view: Any, streams: Iterable[str]) -> Counter:
    return Counter(master for master in stream_masters(view, streams).values() if master is not None)


def sustained_rate(view: Any, streams: Iterable[str], capacity_per_s: float, model: str = "closed") -> float:
    """Events per second the mesh sustains under `model` (see the module docstring)."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    names = sorted(set(streams))
    load = streams_per_master(view, names)
    if not load:
        return 0.0
    if model == "closed":
        return capacity_per_s * len(load)
    mastered = sum(load.values())  # streams whose shard has no master take nothing
    return capacity_per_s * mastered / max(load.values())


def message_family(message: object) -> str:
    """membership | anti_entropy | rebalance | writes | other, for per-peer message rates."""
    kind = getattr(type(message), "KIND", 0)
    if 20 <= kind <= 39:
        return "membership"
    return _FAMILIES.get(type(message).__name__, "other")
