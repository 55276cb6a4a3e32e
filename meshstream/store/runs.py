"""The store's whole-column path for an `EnvelopeRun` (envelope_run.py).

`run_is_new(index, run)` says whether the index certainly holds none of a run's dots and
none of its natural keys: no counter of the run is in its writer's log (one bisection)
and no key's hash is in the key table (the hashes, computed once, are kept on
the run for `prepare_run`). `prepare_run` decides a run so, and when it is new lays it out
as one batch of plain event records with no per-event decision; anything else (a key or a
dot the index may hold, two keys with one hash) is left to `prepare_batch`'s exact
per-event rules, on the run's events.
"""

from __future__ import annotations

import bisect

from meshstream.envelope_run import EnvelopeRun
from meshstream.store.api import AppendResult
from meshstream.store.key_table import key_hashes

def run_key_hashes(run: EnvelopeRun) -> list[int]:
    """`key_hash` of each natural key of the run, computed once."""
    if run.hashes is None:
        run.hashes = key_hashes(run.stream, run.keys)
    return run.hashes


def run_is_new(index, run: EnvelopeRun) -> bool:
    """True when `index` certainly holds no dot and no natural key of `run`. A run found
    new before (`run.key_mark`) has its keys checked only against those added since, when
    the key table still knows them (`KeyIndex.added_since`)."""
    hashes = run_key_hashes(run)
    found = index.stream(run.stream)
    log = None if found is None else found.logs.get(run.writer)
    if log is not None and log.counters:
        at = bisect.bisect_left(log.counters, run.first)
        if at < len(log.counters) and log.counters[at] <= run.last:
            return False
    distinct = set(hashes)
    if len(distinct) != len(hashes):
        return False
    keys, mark = index.keys, run.key_mark
    since = keys.added_since(mark[1]) if mark is not None and mark[0] is keys else None
    new = distinct.isdisjoint(since) if since is not None else not keys.contains_any(hashes)
    run.key_mark = (keys, keys.added) if new else None
    return new


def prepare_run(index, run: EnvelopeRun, prepared) -> bool:
    """Fill the empty `prepared` with `run`, every event a plain new record, when the
    index holds none of it (`run_is_new`); False, leaving it empty, otherwise."""
    if not run_is_new(index, run):
        return False
    prepared.events = run
    prepared.hashes = run.hashes
    prepared.results = [AppendResult.STORED] * len(run)
    return True
