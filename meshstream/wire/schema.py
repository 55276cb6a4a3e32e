"""Declarative message records and their validated CBOR codec.

A message kind is a frozen, slotted dataclass decorated with `@message(kind)`. Kinds are
append-only integers: a number is never reused for another meaning. A message encodes as
the CBOR array `[kind, field1, field2, ...]` in field order; decoding checks every field
against its annotation and raises RemoteProtocolError for anything else, so protocol code
only ever sees well-typed values.

Supported annotations: `int`, `float`, `bool`, `str`, `bytes`, `X | None`, `tuple[X, ...]`,
`dict[str, X]`, `Dot`, `VersionVector`, `Event` (carried as its envelope and digest-checked),
`EventBatch` (a sequence of data events, checked and decoded in one pass by
`envelope_batch.decode_run`, with no cache: an `EnvelopeRun` when they form one, else a
tuple of the same values) and nested `@record`
dataclasses (encoded as arrays). Every collection is bounded by
`COLLECTION_ITEMS_MAX`; the frame size limit bounds the rest.

Kind ranges: 1-19 session and client API, 20-39 membership, 40-79 replication.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from typing import Any

from meshstream.cbor import dumps, loads_strict
from meshstream.clocks import Dot, VersionVector
from meshstream.envelope import Event, decode_event
from meshstream.errors import LocalProtocolError, RemoteProtocolError
from meshstream.envelope_run import EnvelopeRun
from meshstream.wire.envelope_batch import decode_run

COLLECTION_ITEMS_MAX = 100_000  # items in one list or map field of one message
DECODED_EVENTS_MAX = 16_384  # envelopes remembered decoded (wire only): at most 16 MiB
DECODED_EVENT_BYTES_MAX = 1024  # larger envelopes (data events) are decoded every time
INT_MIN, INT_MAX = -(2**63), 2**64 - 1

Encoder = Callable[[Any], Any]
Decoder = Callable[[Any], Any]
# A field of freshly written data events (a master's eager push): each replica decodes
# each of them once, so the whole list is decoded in one pass (`decode_run`: a master's
# push is a run, taken whole by the replica) rather than one by one through the cache
# that gossip's repeats of small topology events want.
EventBatch = typing.Annotated[tuple[Event, ...], "decode in one pass"]

MESSAGE_KINDS: dict[int, type] = {}
_CODECS: dict[type, tuple[list[Encoder], list[Decoder]]] = {}
# Per record class: (field name, encoder or None for values encoded as they are).
_FIELDS: dict[type, tuple[tuple[str, Encoder | None], ...]] = {}
_DECODERS: dict[type, Decoder] = {}  # per record class: its array form -> the record
_ENCODERS: dict[type, Encoder] = {}  # per record class: the record -> its array form (a tuple)


def record(cls: type) -> type:
    """Register a frozen dataclass as a nested record (encoded as an array)."""
    assert dataclasses.is_dataclass(cls), cls
    _CODECS[cls] = _compile_fields(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # not per message: fields() costs ~2 us
    _FIELDS[cls] = tuple((name, None if enc is _identity else enc) for name, enc in zip(names, _CODECS[cls][0]))
    _DECODERS[cls] = _compile_decoder(cls, names, typing.get_type_hints(cls))
    _ENCODERS[cls] = _compile_encoder(cls)
    return cls


def message(kind: int) -> Callable[[type], type]:
    """Register a frozen dataclass as message `kind` (an append-only number)."""

    def register(cls: type) -> type:
        assert 1 <= kind <= 0xFFFF and kind not in MESSAGE_KINDS, f"kind {kind} reused by {cls.__name__}"
        record(cls)
        cls.KIND = kind  # type: ignore[attr-defined]
        MESSAGE_KINDS[kind] = cls
        return cls

    return register


def encode_message(msg: Any) -> list[Any]:
    """The CBOR-ready array form of a registered message; LocalProtocolError otherwise."""
    fields = _FIELDS.get(type(msg))
    if fields is None or not hasattr(msg, "KIND"):
        raise LocalProtocolError(f"{type(msg).__name__} is not a registered message")
    values = [msg.KIND]
    for name, encoder in fields:
        values.append(getattr(msg, name) if encoder is None else encoder(getattr(msg, name)))
    return values


def decode_message(value: Any) -> Any:
    """Rebuild a message from its array form; RemoteProtocolError if anything is off."""
    if not isinstance(value, list) or not value or type(value[0]) is not int:
        raise RemoteProtocolError("a message must be [kind, fields...]")
    cls = MESSAGE_KINDS.get(value[0])
    if cls is None:
        raise RemoteProtocolError(f"unknown message kind {value[0]}")
    return _DECODERS[cls](value[1:])


def message_to_bytes(msg: Any) -> bytes:
    return dumps(encode_message(msg))


def message_from_bytes(data: bytes) -> Any:
    return decode_message(loads_strict(data))


def _decode_record(cls: type, values: Any) -> Any:
    return _DECODERS[cls](values)


# -- record decoders ---------------------------------------------------------------------
# A batch append carries a hundred records, and a generic loop of decoder calls and a
# dataclass __init__ cost ~2.5 us a record. Each record class therefore gets a decoder
# written for its fields (as dataclasses writes __init__): a field of a plain type is
# checked inline and passed through, any other value goes to the field's decoder (which
# converts it or raises); a record without __post_init__ is built by filling a slotted
# shell of its layout. The result and the errors are those of the field decoders and cls.

_INLINE_CHECKS = {  # annotation -> the test under which a decoded value passes as it is
    bytes: "type({v}) is bytes", str: "type({v}) is str", bool: "type({v}) is bool",
    float: "type({v}) is float", int: "type({v}) is int and INT_MIN <= {v} <= INT_MAX",
}


def _compile_decoder(cls: type, names: list[str], hints: dict[str, Any]) -> Decoder:
    decoders = _CODECS[cls][1]
    count = len(names)
    fields = [f"f{i}" for i in range(count)]
    lines = [f"def decode(values):",
             f"    if not isinstance(values, list) or len(values) != {count}:",
             f"        raise RemoteProtocolError('{cls.__name__} needs {count} fields')",
             f"    try:"]
    if count:
        lines.append(f"        {', '.join(fields)}, = values")
    for i, name in enumerate(names):
        hint = hints[name]
        check = _INLINE_CHECKS.get(hint)
        if check is None and typing.get_origin(hint) is dict:
            check = "type({v}) is dict and not {v}"  # most metadata: nothing to check
        if check is None:
            lines.append(f"        f{i} = d{i}(f{i})")
        else:
            lines.append(f"        if not ({check.format(v=f'f{i}')}): f{i} = d{i}(f{i})")
    lines.append(f"        return build({', '.join(fields)})")
    lines += ["    except RemoteProtocolError:", "        raise",
              "    except (ValueError, TypeError) as exc:  # a record's own __post_init__ validation",
              f"        raise RemoteProtocolError(f'invalid {cls.__name__}: {{exc}}') from None"]
    namespace = {"build": _builder(cls), "RemoteProtocolError": RemoteProtocolError, "INT_MIN": INT_MIN, "INT_MAX": INT_MAX,
                 **{f"d{i}": decoder for i, decoder in enumerate(decoders)}}
    exec("\n".join(lines), namespace)  # noqa: S102 - source built above from field names only
    return namespace["decode"]


def _compile_encoder(cls: type) -> Encoder:
    """The record -> the tuple of its encoded fields (a tuple is the same CBOR array as a
    list, and cbor2 encodes it without the abstract-class checks it makes of a list)."""
    values = [f"value.{name}" if enc is None else f"e{i}(value.{name})" for i, (name, enc) in enumerate(_FIELDS[cls])]
    namespace = {f"e{i}": enc for i, (_, enc) in enumerate(_FIELDS[cls])}
    exec(f"def encode(value):\n    return ({''.join(value + ', ' for value in values)})", namespace)  # noqa: S102 - field names only
    return namespace["encode"]


def unchecked_builder(cls: type, checks: bool = True) -> Callable[..., Any]:
    """A positional constructor of `cls` for values already checked: a record without
    __post_init__ is built by filling a slotted shell of its layout, which then becomes a
    `cls` (a frozen dataclass's __init__ sets each field through object.__setattr__:
    ~0.5 us a record); other classes are called as they are. `checks=False` builds a record
    with __post_init__ the same way, without running it (for `_builder`, which runs it)."""
    if not _shell_builds(cls, checks):
        return cls
    names = [f.name for f in dataclasses.fields(cls)]
    fields = [f"f{i}" for i in range(len(names))]
    lines = [f"def build({', '.join(fields)}):", "    record = Shell()",
             *[f"    record.{name} = f{i}" for i, name in enumerate(names)], "    record.__class__ = cls", "    return record"]
    namespace = {"cls": cls, "Shell": type(f"{cls.__name__}Shell", (), {"__slots__": cls.__slots__})}
    exec("\n".join(lines), namespace)  # noqa: S102 - field names only
    build = namespace["build"]
    try:
        record = build(*names)  # (not compared with cls(*names): its __post_init__ may refuse them)
        works = type(record) is cls and [getattr(record, name) for name in names] == names
    except TypeError:  # an interpreter that refuses the __class__ assignment
        works = False
    return build if works else cls


def _builder(cls: type) -> Callable[..., Any]:
    """The decoders' constructor of `cls`: the shell build of `unchecked_builder`, and then
    the record's own __post_init__ checks (what its __init__ would run after setting the
    fields: the same values and the same errors, without ~1.5 us of object.__setattr__ a
    record; a gossiped rate table decodes 64 such records)."""
    post_init = getattr(cls, "__post_init__", None)
    if post_init is None:
        return unchecked_builder(cls)
    fill = unchecked_builder(cls, checks=False)
    if fill is cls:
        return cls

    def build(*values: Any) -> Any:
        record = fill(*values)
        post_init(record)
        return record

    return build


def _shell_builds(cls: type, checks: bool = True) -> bool:
    """True when a record of `cls` may be built by filling a slotted shell of its layout:
    its fields are all its slots, and it has no __post_init__ to run (when `checks`)."""
    slots = getattr(cls, "__slots__", None)
    if slots is None or (checks and hasattr(cls, "__post_init__")) or "__dict__" in dir(cls):
        return False
    return tuple(slots) == tuple(f.name for f in dataclasses.fields(cls))


def _compile_fields(cls: type) -> tuple[list[Encoder], list[Decoder]]:
    hints = typing.get_type_hints(cls, include_extras=True)  # EventBatch is Annotated
    pairs = [_codec_for(hints[f.name], f"{cls.__name__}.{f.name}") for f in dataclasses.fields(cls)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _identity(value: Any) -> Any:
    return value


def _scalar(kind: type, where: str) -> Decoder:
    def decode(value: Any) -> Any:
        if type(value) is not kind:
            if kind is float and type(value) is int:
                return float(value)
            raise RemoteProtocolError(f"{where} must be {kind.__name__}, got {type(value).__name__}")
        if kind is int and not INT_MIN <= value <= INT_MAX:
            raise RemoteProtocolError(f"{where} is out of range")
        return value

    return decode


def _codec_for(hint: Any, where: str) -> tuple[Encoder, Decoder]:
    origin = typing.get_origin(hint)
    if hint == EventBatch:
        return _event_batch_codec(where)
    assert origin is not typing.Annotated, f"{where}: unsupported annotation {hint!r}"
    if hint in (int, float, bool, str, bytes):
        return _identity, _scalar(hint, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if type(None) not in args:
            return _identity, _scalar_union(args, where)
        return _optional_codec(hint, where)
    if origin is tuple:
        return _tuple_codec(hint, where)
    if origin is dict:
        return _dict_codec(hint, where)
    if hint is Dot:
        return _encode_dot, Dot.from_cbor
    if hint is VersionVector:
        return VersionVector.to_cbor, VersionVector.from_cbor
    if hint is Event:
        return _encode_event, _decode_event(where)
    if hint in _CODECS:
        return _record_codec(hint)
    raise AssertionError(f"{where}: unsupported annotation {hint!r}")


def _scalar_union(kinds: tuple[type, ...], where: str) -> Decoder:
    assert all(kind in (int, str, bytes) for kind in kinds), f"{where}: unions of int, str, bytes only"
    decoders = {kind: _scalar(kind, where) for kind in kinds}

    def decode(value: Any) -> Any:
        decoder = decoders.get(type(value))
        if decoder is None:
            raise RemoteProtocolError(f"{where} must be one of {[k.__name__ for k in kinds]}")
        return decoder(value)

    return decode


def _optional_codec(hint: Any, where: str) -> tuple[Encoder, Decoder]:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    assert len(args) == 1 and len(typing.get_args(hint)) == 2, f"{where}: only X | None unions"
    encode_inner, decode_inner = _codec_for(args[0], where)
    return (lambda v: None if v is None else encode_inner(v)), (lambda v: None if v is None else decode_inner(v))


def _tuple_codec(hint: Any, where: str) -> tuple[Encoder, Decoder]:
    args = typing.get_args(hint)
    assert len(args) == 2 and args[1] is Ellipsis, f"{where}: only tuple[X, ...]"
    encode_inner, decode_inner = _codec_for(args[0], where)

    plain = args[0] if args[0] in (bytes, str) else None  # checked by type alone (`_scalar`)

    def decode(value: Any) -> tuple:
        if not isinstance(value, list) or len(value) > COLLECTION_ITEMS_MAX:
            raise RemoteProtocolError(f"{where} must be a list of at most {COLLECTION_ITEMS_MAX} items")
        if plain is not None and (not value or set(map(type, value)) == {plain}):
            return tuple(value)  # a catch-up's 2000 envelopes: one C pass, not a call each
        return tuple([decode_inner(item) for item in value])

    return (lambda v: [encode_inner(item) for item in v]), decode


def _dict_codec(hint: Any, where: str) -> tuple[Encoder, Decoder]:
    key_hint, value_hint = typing.get_args(hint)
    assert key_hint is str, f"{where}: only dict[str, X]"
    encode_inner, decode_inner = _codec_for(value_hint, where)

    def decode(value: Any) -> dict:
        if not isinstance(value, dict) or len(value) > COLLECTION_ITEMS_MAX:
            raise RemoteProtocolError(f"{where} must be a map of at most {COLLECTION_ITEMS_MAX} entries")
        if not value:
            return {}  # most metadata: nothing to check
        if not all(type(k) is str for k in value):
            raise RemoteProtocolError(f"{where} keys must be text")
        return {k: decode_inner(v) for k, v in value.items()}

    return (lambda v: {k: encode_inner(v[k]) for k in sorted(v)}), decode


def _encode_dot(dot: Dot) -> tuple[str, int]:
    return (dot.peer, dot.counter)  # a tuple, as records (see _compile_encoder)


def _encode_event(event: Event) -> bytes:
    return event.envelope


def _decode_event(where: str) -> Decoder:
    def decode(value: Any) -> Event:
        if not isinstance(value, bytes):
            raise RemoteProtocolError(f"{where} must be an event envelope")
        if len(value) <= DECODED_EVENT_BYTES_MAX:
            return _decode_small_event(value)
        return decode_event(value)

    return decode


@functools.lru_cache(maxsize=DECODED_EVENTS_MAX)
def _decode_small_event(envelope: bytes) -> Event:
    # Gossip brings one topology event to a peer many times (piggyback, anti-entropy,
    # join snapshots), and a simulator runs hundreds of peers in one process: the same
    # bytes always decode to the same immutable Event. Errors are not cached.
    return decode_event(envelope)


def _event_batch_codec(where: str) -> tuple[Encoder, Decoder]:
    def decode(value: Any) -> tuple:
        if not isinstance(value, list) or len(value) > COLLECTION_ITEMS_MAX:
            raise RemoteProtocolError(f"{where} must be a list of at most {COLLECTION_ITEMS_MAX} items")
        for envelope in value:
            if type(envelope) is not bytes:
                raise RemoteProtocolError(f"{where} must hold event envelopes")
        events = decode_run(value)  # a master's push is a run: its replica takes it whole
        return events if type(events) is EnvelopeRun else tuple(events)

    def encode(events: Any) -> list[bytes]:
        if type(events) is EnvelopeRun:  # a master's push: its envelopes, with no Event built
            return list(events.envelopes)
        return [event.envelope for event in events]

    return encode, decode


def _record_codec(cls: type) -> tuple[Encoder, Decoder]:
    return _ENCODERS[cls], _DECODERS[cls]  # records are registered before they are used
