"""The one total order every replica derives for the events of a stream.

Causality gives a partial order: the events a peer sequenced form a chain by counter, and an
event comes after every event its context names. `canonical_order` is Kahn's topological
sort of that order, always releasing the ready event with the least `(peer, counter,
digest)`. The result depends only on the *set* of events: any permutation or duplication of
the input gives the same list. Corrupt input whose contexts form a cycle (which honest
peers cannot produce) is still ordered deterministically: the least remaining event is
released to break the cycle.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable

from meshstream.envelope import Event


def _tie_break(event: Event) -> tuple[str, int, bytes]:
    return (event.dot.peer, event.dot.counter, event.digest)


def canonical_order(events: Iterable[Event]) -> list[Event]:
    """Return the distinct events (by digest) in the canonical total order."""
    unique = {event.digest: event for event in events}
    ordered = sorted(unique.values(), key=_tie_break)
    by_peer: dict[str, list[int]] = {}
    for position, event in enumerate(ordered):
        by_peer.setdefault(event.dot.peer, []).append(position)
    counters = {peer: [ordered[p].dot.counter for p in positions] for peer, positions in by_peer.items()}

    successors: list[list[int]] = [[] for _ in ordered]
    waiting = [0] * len(ordered)
    for position, event in enumerate(ordered):
        for predecessor in _predecessors(position, event, ordered, by_peer, counters):
            successors[predecessor].append(position)
            waiting[position] += 1
    return [ordered[p] for p in _kahn(successors, waiting)]


def _predecessors(position, event, ordered, by_peer, counters) -> set[int]:
    """Positions of the nearest present events this one must follow."""
    found: set[int] = set()
    if position > 0 and ordered[position - 1].dot.peer == event.dot.peer:
        found.add(position - 1)  # `ordered` is sorted by (peer, counter): the chain link
    for peer, limit in event.context.items():
        if peer not in by_peer:
            continue
        cut = bisect.bisect_right(counters[peer], limit)
        if cut:
            candidate = by_peer[peer][cut - 1]
            if candidate != position:
                found.add(candidate)
    return found


def _kahn(successors: list[list[int]], waiting: list[int]) -> list[int]:
    ready = [p for p, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    done = [False] * len(waiting)
    result: list[int] = []
    while len(result) < len(waiting):
        if not ready:  # a cycle: release the least remaining event
            ready.append(next(p for p, finished in enumerate(done) if not finished and waiting[p] > 0))
        position = heapq.heappop(ready)
        if done[position]:
            continue
        done[position] = True
        result.append(position)
        for successor in successors[position]:
            waiting[successor] -= 1
            if waiting[successor] == 0 and not done[successor]:
                heapq.heappush(ready, successor)
    return result
