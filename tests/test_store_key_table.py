"""The natural-key table: lookups after inserts, with colliding hashes, probe runs that
wrap around the end, growth, and `contains_any` agreeing with `contains`."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meshstream.store.key_table import RECENT_ADDS_KEPT, KeyIndex

HASHES = st.integers(min_value=0, max_value=2**64 - 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(HASHES, max_size=300), st.lists(HASHES, max_size=50), st.data())
def test_lookups_agree_with_a_set(stored: list[int], asked: list[int], data: st.DataObject) -> None:
    table = KeyIndex(slots=4)  # tiny: probe runs wrap and the table grows
    table.add_many(stored, 0)
    asked += data.draw(st.lists(st.sampled_from(stored), max_size=5)) if stored else []
    wanted = {hashed or 1 for hashed in stored}  # 0 is stored as 1
    for hashed in asked:
        assert table.contains(hashed) == ((hashed or 1) in wanted)
    assert table.contains_any(asked) == any((hashed or 1) in wanted for hashed in asked)
    assert table.absent_each(asked) == [(hashed or 1) not in wanted for hashed in asked]
    if stored:
        first = stored[0] or 1
        assert sorted(table.candidates(stored[0])) == [rid for rid, hashed in enumerate(stored) if (hashed or 1) == first]


def test_added_since_gives_what_came_after_a_mark_while_it_is_kept() -> None:
    table = KeyIndex()
    table.add_many([11, 12], 0)
    mark = table.added
    assert table.added_since(mark) == []
    table.add(13, 2)
    table.add_many([14, 15], 3)
    assert table.added_since(mark) == [13, 14, 15]
    for rid in range(5, 5 + RECENT_ADDS_KEPT):
        table.add(100 + rid, rid)
    assert table.added_since(mark) is None, "the adds after the mark are no longer all kept"
    assert table.added_since(table.added - 1) == [100 + 4 + RECENT_ADDS_KEPT]


def _probe_runs_are_unbroken(table: KeyIndex) -> None:
    """Linear probing's invariant: every slot from an entry's home to its own is taken."""
    mask, hashes = table.mask, table.hashes
    for slot, hashed in enumerate(hashes):
        if hashed:
            at = hashed & mask
            while at != slot:
                assert hashes[at], f"slot {at}, between the home and the place of {hashed}, is empty"
                at = (at + 1) & mask


CLUSTERED = st.lists(st.integers(min_value=0, max_value=70), min_size=32, max_size=200)  # shared homes


@settings(max_examples=150, deadline=None)
@given(st.lists(CLUSTERED, min_size=1, max_size=4), st.lists(HASHES, max_size=40))
def test_batches_put_by_columns_are_found_as_one_by_one(batches: list[list[int]], wide: list[int]) -> None:
    """Batches of 32 or more keys, many sharing a home slot, with equal hashes and zeros:
    every rid is found under its hash, the probe runs are unbroken, and lookups agree
    with a dict."""
    table, expected, rid = KeyIndex(slots=64), {}, 0
    for batch in batches + [wide]:
        table.add_many(batch, rid)
        for offset, hashed in enumerate(batch):
            expected.setdefault(hashed or 1, []).append(rid + offset)
        rid += len(batch)
    assert table.count == rid
    _probe_runs_are_unbroken(table)
    for hashed, rids in expected.items():
        assert sorted(table.candidates(hashed)) == rids
    asked = list(range(0, 80)) + wide
    assert table.absent_each(asked) == [(hashed or 1) not in expected for hashed in asked]
