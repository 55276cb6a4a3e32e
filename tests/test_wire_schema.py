"""The message codec round-trips every registered kind, with values drawn from annotations.

Peer-message modules (membership, replication) are imported only when they exist, so this
test covers whatever kinds are registered when it runs.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing

import cbor2
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from meshstream.clocks import Dot, VersionVector
from meshstream.envelope import Event
from meshstream.errors import RemoteProtocolError
from meshstream.wire import schema
from meshstream.wire.framing import NEED_DATA, FrameDecoder, FrameEncoder
from meshstream.wire.messages import ACK_LEVELS, ROLES

OPTIONAL_MODULES = {  # module -> the kind range it owns
    "meshstream.wire.membership_messages": range(20, 40),
    "meshstream.wire.replication_messages": range(40, 80),
}
loaded = {"meshstream.wire.messages": (importlib.import_module("meshstream.wire.messages"), range(1, 20))}
for _name, _kinds in OPTIONAL_MODULES.items():
    try:
        loaded[_name] = (importlib.import_module(_name), _kinds)
    except ModuleNotFoundError as exc:
        if exc.name != _name:
            raise  # the module exists but is broken: that must fail, not skip

PEERS = ["n1", "n2", "n3"]
# Text fields are mostly drawn from words that field validators accept, so that messages
# with __post_init__ checks are generated without endless rejection.
WORDS = ["n1", "n2", "n3", "127.0.0.1:7001", "orders", "$topology", "mesh", "", *ACK_LEVELS, *ROLES,
         "alive", "suspect", "failed", "left", "{}"]
FIELD_OVERRIDES: dict[str, st.SearchStrategy] = {
    "nonce": st.binary(min_size=16, max_size=16),
    "role": st.sampled_from(ROLES),
    "ack": st.sampled_from(ACK_LEVELS),
}
events = st.builds(
    Event.sequence,
    st.sampled_from(["$topology", "$topology", "orders", "s"]),
    st.binary(min_size=1, max_size=16),
    st.binary(max_size=32),
    st.dictionaries(st.sampled_from(["a", "bb"]), st.integers(0, 9) | st.text(max_size=3)),
    st.builds(Dot, st.sampled_from(PEERS), st.integers(1, 50)),
    st.dictionaries(st.sampled_from(PEERS), st.integers(0, 50)).map(VersionVector),
)


def strategy_for(hint: typing.Any) -> st.SearchStrategy:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    simple = {
        int: st.integers(0, 3) | st.integers(0, 1000) | st.integers(schema.INT_MIN, schema.INT_MAX),
        float: st.floats(allow_nan=False) | st.floats(0, 60),
        bool: st.booleans(),
        str: st.sampled_from(WORDS) | st.text(max_size=20),
        bytes: st.binary(min_size=16, max_size=16) | st.binary(max_size=32),  # 16: digests, nonces
        Dot: st.builds(Dot, st.sampled_from(PEERS), st.integers(1, 2**63 - 1)),
        VersionVector: st.dictionaries(st.sampled_from(PEERS), st.integers(0, 2**63 - 1)).map(VersionVector),
        Event: events,
    }
    if hint in simple:
        return simple[hint]
    if origin in (typing.Union, types.UnionType):
        return st.one_of([st.none() if a is type(None) else strategy_for(a) for a in args])
    if origin is tuple:
        return st.lists(strategy_for(args[0]), max_size=3).map(tuple)
    if origin is dict:
        return st.dictionaries(st.text(max_size=5), strategy_for(args[1]), max_size=3)
    assert dataclasses.is_dataclass(hint), f"no strategy for {hint!r}"
    return instances_of(hint)


def instances_of(cls: type) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    fields = {f.name: FIELD_OVERRIDES.get(f.name, strategy_for(hints[f.name])) for f in dataclasses.fields(cls)}

    @st.composite
    def build(draw):
        values = {name: draw(strategy) for name, strategy in fields.items()}
        try:
            return cls(**values)
        except (ValueError, TypeError):  # the record's own validation (what the codec expects)
            reject()

    return build()


def all_kinds() -> list[tuple[int, type]]:
    return sorted(schema.MESSAGE_KINDS.items())


def test_kinds_live_in_their_modules_ranges():
    assert len(loaded) >= 1
    for name, (module, kinds) in loaded.items():
        owned = [kind for kind, cls in schema.MESSAGE_KINDS.items() if cls.__module__ == name]
        assert owned, f"{name} registers no kinds"
        assert all(kind in kinds for kind in owned), f"{name} registers kinds outside {kinds}: {owned}"


@pytest.mark.parametrize(("kind", "cls"), all_kinds(), ids=lambda v: str(v) if isinstance(v, int) else v.__name__)
def test_every_kind_round_trips(kind, cls):
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(instances_of(cls))
    def round_trip(msg):
        assert msg.KIND == kind
        data = schema.message_to_bytes(msg)
        assert schema.message_from_bytes(data) == msg
        decoder = FrameDecoder(1 << 24)
        decoder.receive_data(FrameEncoder().encode_many([msg, msg]))
        assert decoder.next_message() == msg and decoder.next_message() == msg
        assert decoder.next_message() is NEED_DATA

    round_trip()


@pytest.mark.parametrize(("kind", "cls"), all_kinds(), ids=lambda v: str(v) if isinstance(v, int) else v.__name__)
def test_every_kind_refuses_wrong_arity_and_wrong_types(kind, cls):
    arity = len(dataclasses.fields(cls))
    bad = [["x"] * (arity + 1)]
    if arity:  # {1: 1} fits no annotation: maps need text keys, nothing else takes a map
        bad += [["x"] * (arity - 1), [{1: 1}] * arity]
    for fields in bad:
        with pytest.raises(RemoteProtocolError):
            schema.decode_message([kind, *fields])


@pytest.mark.parametrize("value", [[], [0], [65536], ["1"], [True], {"kind": 1}, None, [2**70]])
def test_unknown_or_malformed_kinds_are_refused(value):
    with pytest.raises(RemoteProtocolError):
        schema.decode_message(value)


def test_inline_field_checks_pass_only_what_the_field_decoders_would():
    """Record decoders check plain fields inline and hand anything else to the field's
    decoder: each edge below must decode, convert or be refused as that decoder does."""
    from meshstream.wire.messages import AppendItem, AppendRequest, Appended, AppendReply, ReadRequest

    item = [b"k", b"d", {}]
    request = schema.decode_message([2, 7, "orders", [item, [b"j", b"", {"a": 1, "bb": b"x"}]], "all"])
    assert request == AppendRequest(7, "orders", (AppendItem(b"k", b"d", {}), AppendItem(b"j", b"", {"a": 1, "bb": b"x"})), "all")
    assert all(type(i) is AppendItem for i in request.items)
    assert schema.decode_message([4, 1, "s", [], 10, 2]).wait_s == 2.0  # an int where a float goes
    assert type(schema.decode_message([4, 1, "s", [], 10, 2]).wait_s) is float
    for bad in ([2, 7, "orders", [[b"k", b"d", {1: "x"}]], "all"],  # metadata keys must be text
                [2, 7, "orders", [[b"k", b"d", {"a": 1.5}]], "all"],  # values text, int or bytes
                [2, 7, "orders", [[b"k", bytearray(b"d"), {}]], "all"],
                [2, 7, "orders", [[b"k", b"d"]], "all"],
                [2, 7, "orders", [item], "sometimes"],  # __post_init__
                [2, 2**64, "orders", [item], "all"],
                [2, True, "orders", [item], "all"],
                [3, 1, [[b"k", ["n1", 0], b"d", False]], "", "", True],  # dot counters start at 1
                [3, 1, [[b"k", ["n1", 1], b"d", 1]], "", "", True]):
        with pytest.raises(RemoteProtocolError):
            schema.decode_message(bad)
    reply = AppendReply(1, (Appended(b"k", Dot("n1", 2**40), b"d", True),), "", "", True)
    assert schema.message_from_bytes(schema.message_to_bytes(reply)) == reply
    assert schema.message_to_bytes(reply) == cbor2.dumps([3, 1, [[b"k", ["n1", 2**40], b"d", True]], "", "", True])
