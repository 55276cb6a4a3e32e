"""How anti-entropy cuts a batch (`take_within`): the same envelopes, cut at the same
place, as taking them one at a time against the byte budget and the event room."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meshstream.protocol.anti_entropy import EVENT_OVERHEAD_BYTES, take_within


def _one_at_a_time(found: list[bytes], candidates: list[bytes], budget: int, room: int) -> tuple[bool, int]:
    limit = len(found) + room
    for envelope in candidates:
        cost = len(envelope) + EVENT_OVERHEAD_BYTES
        if len(found) >= limit or (found and cost > budget):
            return True, budget
        found.append(envelope)
        budget -= cost
    return False, budget


@settings(max_examples=500, deadline=None)
@given(st.lists(st.integers(0, 300), max_size=3), st.lists(st.integers(0, 300), max_size=30),
       st.integers(-50, 3000), st.integers(1, 40))
def test_a_batch_is_cut_as_one_envelope_at_a_time_cuts_it(before: list[int], sizes: list[int], budget: int,
                                                           room: int) -> None:
    candidates = [bytes(size) for size in sizes]
    expected_found, found = [bytes(size) for size in before], [bytes(size) for size in before]
    expected = _one_at_a_time(expected_found, candidates, budget, room)
    cut, left = take_within(found, candidates, budget, room)
    assert found == expected_found
    assert cut == expected[0]
    if not cut:
        assert left == expected[1]
