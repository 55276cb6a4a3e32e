"""Scenario files (TOML, DESIGN section 6): parsing and validation into frozen dataclasses.

`load_scenario(path)` / `parse_scenario(text)` return a `Scenario` or raise ConfigError
with one line naming the bad key or value (`fault[2].kind: unknown fault kind 'explode'`).
Unknown keys are errors: a typo must never silently become a default.

Beyond DESIGN section 6 (all optional): `description`; `[network] bandwidth_mbps`;
`[config]` (Config fields for every peer, e.g. `probe_interval_s`); `[[workload]] reader`
(a cursor-resuming reader follows the stream, default true); `[config]` defaults
`scrub_records_per_s` to `SIM_SCRUB_RECORDS_PER_S` (see there); fault keys `pick` (choose
that many peers at random from the selection), `nodes` on `partition` (cut those peers off
from all) and `one_way = [["n1", "n2"]]` (block n1 -> n2 only), `loss`/`latency_ms` on the
`loss`/`latency` faults, `count` on `join` and `corrupt`; `[expect]` also takes
`membership_converged_by_s`, `no_failed_live_peers` and `acked_min`.

Many streams in one `[[workload]]`: `streams = 200` with `stream_prefix = "s"` (instead of
`stream`) writes `s000` .. `s199`, each at `rate_per_s`; `stagger_s` spreads their starts
evenly over that many seconds after `start_s`. Scale-out expectations (simulations/
scaleout.py), checked at the end of the run: `placement_converged` (every shard's master
is in its replica set and has confirmed every replica caught up), `masters_balanced` (no
peer masters more than ceil(shards / peers) + 1 shards), `replicas_dropped` (peers outside
a shard's replica set hold none of its events, every replica holds all of them) and
`step_settle_s_max` (every join or leave step settled, all three of placement, balance and
membership, within that many seconds; the time each step took is in the report).

Node selectors: peer names, `master:STREAM` (resolved when the fault fires), `crashed`
(every peer down at that moment), `isolated` (peers cut off by `partition nodes=`),
`live` (every peer up).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshstream.config import Config
from meshstream.errors import ConfigError
from meshstream.ids import validate_stream_name
from meshstream.errors import LocalProtocolError

FAULT_KINDS = ("crash", "restart", "partition", "heal", "join", "leave", "loss", "latency", "corrupt")
ACK_LEVELS = ("master", "quorum", "all")
NODES_MAX = 5000  # a simulated mesh beyond this would not finish in a test's time
REPLICATION_FACTOR_MAX = 1024  # Config's own cap: full replication (rf = N) of a 1000-peer mesh
# One CPU runs every simulated peer's background scrub: at the `sim` preset's 10k records/s
# a 500-peer mesh spent half its time re-checking ~1000-record in-memory stores five times a
# second. 1000/s still passes over such a store every second; a scenario may set its own.
SIM_SCRUB_RECORDS_PER_S = 1000
STREAMS_PER_WORKLOAD_MAX = 100_000  # `streams = N` in one [[workload]]
_FAULT_KEYS = {
    "crash": {"nodes"},
    "restart": {"nodes"},
    "partition": {"groups", "nodes", "one_way"},
    "heal": {"nodes"},
    "join": {"count"},
    "leave": {"nodes"},
    "loss": {"loss", "nodes"},
    "latency": {"latency_ms", "nodes"},
    "corrupt": {"nodes", "count"},
}
_NEEDS_NODES = ("crash", "restart", "leave", "corrupt")


@dataclass(frozen=True, slots=True)
class Cluster:
    nodes: int
    replication_factor: int
    shards: int


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    latency_ms: tuple[float, float] = (1.0, 10.0)
    loss: float = 0.0
    bandwidth_mbps: float = 0.0  # 0: unlimited


@dataclass(frozen=True, slots=True)
class Workload:
    stream: str
    rate_per_s: float
    start_s: float
    stop_s: float
    ack: str
    via: tuple[str, ...]
    reader: bool


@dataclass(frozen=True, slots=True)
class Fault:
    at_s: float
    kind: str
    nodes: tuple[str, ...] | None = None
    groups: tuple[tuple[str, ...], ...] = ()
    one_way: tuple[tuple[str, str], ...] = ()
    count: int = 1
    loss: float = 0.0
    latency_ms: tuple[float, float] = (0.0, 0.0)
    pick: int | None = None


@dataclass(frozen=True, slots=True)
class Expect:
    converged_by_s: float | None = None
    no_acked_loss: bool = False
    no_duplicates: bool = False
    single_master_by_s: float | None = None
    membership_converged_by_s: float | None = None
    no_failed_live_peers: bool = False
    acked_min: int | None = None
    placement_converged: bool = False
    masters_balanced: bool = False
    replicas_dropped: bool = False
    step_settle_s_max: float | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    seed: int
    duration_s: float
    cluster: Cluster
    network: NetworkSpec
    workloads: tuple[Workload, ...]
    faults: tuple[Fault, ...]
    expect: Expect
    config: Config
    description: str = ""


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; ConfigError names the problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read scenario {str(path)!r}: {exc.strerror}") from None
    return parse_scenario(text)


def parse_scenario(text: str) -> Scenario:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"scenario is not valid TOML: {exc}") from None
    _only(doc, "", {"name", "seed", "duration_s", "description", "cluster", "network", "workload", "fault",
                    "expect", "config"})
    name = _text(doc, "", "name", required=True)
    seed = _int(doc, "", "seed", default=1, low=0)
    duration_s = _number(doc, "", "duration_s", required=True, low=0.001)
    cluster = _cluster(_table(doc, "cluster", required=True))
    network = _network(_table(doc, "network"))
    config = _config(_table(doc, "config"), cluster)
    workloads = tuple(item for i, w in enumerate(_tables(doc, "workload"))
                      for item in _workloads(w, f"workload[{i}]", duration_s))
    faults = tuple(_fault(f, f"fault[{i}]") for i, f in enumerate(_tables(doc, "fault")))
    _check_names(cluster, workloads, faults)
    expect = _expect(_table(doc, "expect"))
    return Scenario(name, seed, duration_s, cluster, network, workloads, faults, expect, config,
                    _text(doc, "", "description", default=""))


# -- sections --
def _cluster(table: dict[str, Any]) -> Cluster:
    _only(table, "cluster.", {"nodes", "replication_factor", "shards"})
    nodes = _int(table, "cluster.", "nodes", required=True, low=1, high=NODES_MAX)
    replication_factor = _int(table, "cluster.", "replication_factor", default=3, low=1, high=REPLICATION_FACTOR_MAX)
    shards = _int(table, "cluster.", "shards", default=16, low=1, high=65536)
    return Cluster(nodes, replication_factor, shards)


def _network(table: dict[str, Any]) -> NetworkSpec:
    _only(table, "network.", {"latency_ms", "loss", "bandwidth_mbps"})
    latency = _range(table, "network.", "latency_ms", default=(1.0, 10.0))
    loss = _number(table, "network.", "loss", default=0.0, low=0.0, high=1.0)
    bandwidth = _number(table, "network.", "bandwidth_mbps", default=0.0, low=0.0)
    return NetworkSpec(latency, loss, bandwidth)


def _config(table: dict[str, Any], cluster: Cluster) -> Config:
    overrides = dict(table)
    overrides.setdefault("scrub_records_per_s", SIM_SCRUB_RECORDS_PER_S)
    for key in ("shards", "replication_factor"):
        if key in overrides:
            raise ConfigError(f"config.{key}: set it in [cluster]")
    try:
        return Config.preset("sim", shards=cluster.shards, replication_factor=cluster.replication_factor, **overrides)
    except ConfigError as exc:
        raise ConfigError(f"[config]: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"[config]: {exc}") from None


def _workloads(table: Any, where: str, duration_s: float) -> list[Workload]:
    """One `[[workload]]` table: one stream, or `streams` of them named by a prefix."""
    if not isinstance(table, dict) or "streams" not in table:
        return [_workload(table, where, duration_s)]
    at = where + "."
    if "stream" in table:
        raise ConfigError(f"{at}stream: give either stream or streams with stream_prefix")
    count = _int(table, at, "streams", required=True, low=1, high=STREAMS_PER_WORKLOAD_MAX)
    prefix = _text(table, at, "stream_prefix", required=True)
    stagger_s = _number(table, at, "stagger_s", default=0.0, low=0.0)
    start_s = _number(table, at, "start_s", default=0.0, low=0.0)
    width = len(str(count - 1))
    rest = {key: value for key, value in table.items() if key not in ("streams", "stream_prefix", "stagger_s")}
    return [_workload({**rest, "stream": f"{prefix}{index:0{width}d}", "start_s": start_s + stagger_s * index / count},
                      where, duration_s) for index in range(count)]


def _workload(table: Any, where: str, duration_s: float) -> Workload:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    at = where + "."
    _only(table, at, {"stream", "rate_per_s", "start_s", "stop_s", "ack", "via", "reader"})
    stream = _text(table, at, "stream", required=True)
    try:
        validate_stream_name(stream)
    except LocalProtocolError as exc:
        raise ConfigError(f"{at}stream: {exc}") from None
    rate = _number(table, at, "rate_per_s", required=True, low=0.001, high=100_000)
    start_s = _number(table, at, "start_s", default=0.0, low=0.0)
    stop_s = _number(table, at, "stop_s", default=duration_s, low=0.0)
    if stop_s < start_s:
        raise ConfigError(f"{at}stop_s: must not be before start_s ({stop_s} < {start_s})")
    ack = _text(table, at, "ack", default="quorum")
    if ack not in ACK_LEVELS:
        raise ConfigError(f"{at}ack: must be one of {', '.join(ACK_LEVELS)}, got {ack!r}")
    via = _names(table, at, "via", default=())
    reader = _bool(table, at, "reader", default=True)
    return Workload(stream, rate, start_s, stop_s, ack, via, reader)


def _fault(table: Any, where: str) -> Fault:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    at = where + "."
    kind = _text(table, at, "kind", required=True)
    if kind not in FAULT_KINDS:
        raise ConfigError(f"{at}kind: unknown fault kind {kind!r}; choose from {', '.join(FAULT_KINDS)}")
    _only(table, at, {"at_s", "kind", "pick"} | _FAULT_KEYS[kind])
    fields: dict[str, Any] = {"at_s": _number(table, at, "at_s", required=True, low=0.0), "kind": kind}
    if "nodes" in table:
        fields["nodes"] = _names(table, at, "nodes", default=(), selectors=True)
    elif kind in _NEEDS_NODES:
        raise ConfigError(f"{at}nodes: required for a {kind} fault")
    if "pick" in table:
        fields["pick"] = _int(table, at, "pick", low=1)
    if kind == "partition":
        fields.update(_partition_fields(table, at))
    if kind in ("join", "corrupt"):
        fields["count"] = _int(table, at, "count", default=1, low=1, high=NODES_MAX)
    if kind == "loss":
        fields["loss"] = _number(table, at, "loss", required=True, low=0.0, high=1.0)
    if kind == "latency":
        fields["latency_ms"] = _range(table, at, "latency_ms", required=True)
    return Fault(**fields)


def _partition_fields(table: dict[str, Any], at: str) -> dict[str, Any]:
    if not any(key in table for key in ("groups", "nodes", "one_way")):
        raise ConfigError(f"{at}groups: a partition needs groups, nodes or one_way")
    fields: dict[str, Any] = {}
    if "groups" in table:
        groups = table["groups"]
        if not isinstance(groups, list) or not all(isinstance(g, list) for g in groups):
            raise ConfigError(f"{at}groups: must be a list of lists of peer names")
        fields["groups"] = tuple(_names({"g": g}, f"{at}groups[{i}]", "g", default=()) for i, g in enumerate(groups))
        seen = [peer for group in fields["groups"] for peer in group]
        if len(seen) != len(set(seen)):
            raise ConfigError(f"{at}groups: a peer appears in two groups")
    if "one_way" in table:
        pairs = table["one_way"]
        if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise ConfigError(f"{at}one_way: must be a list of [from, to] peer name pairs")
        fields["one_way"] = tuple(tuple(_names({"p": p}, f"{at}one_way", "p", default=())) for p in pairs)
    return fields


def _expect(table: dict[str, Any]) -> Expect:
    at = "expect."
    _only(table, at, {field.name for field in dataclasses.fields(Expect)})
    return Expect(
        converged_by_s=_number(table, at, "converged_by_s", default=None, low=0.0),
        no_acked_loss=_bool(table, at, "no_acked_loss", default=False),
        no_duplicates=_bool(table, at, "no_duplicates", default=False),
        single_master_by_s=_number(table, at, "single_master_by_s", default=None, low=0.0),
        membership_converged_by_s=_number(table, at, "membership_converged_by_s", default=None, low=0.0),
        no_failed_live_peers=_bool(table, at, "no_failed_live_peers", default=False),
        acked_min=_int(table, at, "acked_min", default=None, low=0),
        placement_converged=_bool(table, at, "placement_converged", default=False),
        masters_balanced=_bool(table, at, "masters_balanced", default=False),
        replicas_dropped=_bool(table, at, "replicas_dropped", default=False),
        step_settle_s_max=_number(table, at, "step_settle_s_max", default=None, low=0.0),
    )


def _check_names(cluster: Cluster, workloads: tuple[Workload, ...], faults: tuple[Fault, ...]) -> None:
    """Every plain peer name must exist: n1..nN plus the peers joins will add."""
    joined = sum(f.count for f in faults if f.kind == "join")
    known = {f"n{i}" for i in range(1, cluster.nodes + joined + 1)}
    for index, workload in enumerate(workloads):
        for name in workload.via:
            if name not in known:
                raise ConfigError(f"workload[{index}].via: unknown peer {name!r}")
    for index, fault in enumerate(faults):
        named = list(fault.nodes or ()) + [p for g in fault.groups for p in g] + [p for w in fault.one_way for p in w]
        for name in named:
            if not _is_selector(name) and name not in known:
                raise ConfigError(f"fault[{index}]: unknown peer {name!r}")


# -- typed field readers --
def _only(table: dict[str, Any], at: str, allowed: set[str]) -> None:
    for key in sorted(table):
        if key not in allowed:
            raise ConfigError(f"{at}{key}: unknown key (expected one of {', '.join(sorted(allowed))})")


def _table(doc: dict[str, Any], key: str, required: bool = False) -> dict[str, Any]:
    if key not in doc:
        if required:
            raise ConfigError(f"[{key}]: required section is missing")
        return {}
    if not isinstance(doc[key], dict):
        raise ConfigError(f"{key}: must be a table ([{key}])")
    return doc[key]


def _tables(doc: dict[str, Any], key: str) -> list[Any]:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise ConfigError(f"{key}: must be an array of tables ([[{key}]])")
    return value


def _missing(table: dict[str, Any], at: str, key: str, required: bool) -> bool:
    if key in table:
        return False
    if required:
        raise ConfigError(f"{at}{key}: required")
    return True


def _number(table, at, key, *, default=None, required=False, low=None, high=None):
    if _missing(table, at, key, required):
        return default
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{at}{key}: must be a number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{at}{key}: must be within [{low}, {high}], got {value!r}")
    return float(value)


def _int(table, at, key, *, default=None, required=False, low=None, high=None):
    if _missing(table, at, key, required):
        return default
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{at}{key}: must be a whole number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{at}{key}: must be within [{low}, {high}], got {value!r}")
    return value


def _bool(table, at, key, *, default):
    if key not in table:
        return default
    if not isinstance(table[key], bool):
        raise ConfigError(f"{at}{key}: must be true or false, got {table[key]!r}")
    return table[key]


def _text(table, at, key, *, default=None, required=False):
    if _missing(table, at, key, required):
        return default
    if not isinstance(table[key], str) or not table[key]:
        raise ConfigError(f"{at}{key}: must be non-empty text, got {table[key]!r}")
    return table[key]


def _range(table, at, key, *, default=None, required=False) -> tuple[float, float]:
    if _missing(table, at, key, required):
        return default
    value = table[key]
    ok = isinstance(value, list) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in value)
    if not ok or value[0] > value[1]:
        raise ConfigError(f"{at}{key}: must be [low, high] with 0 <= low <= high, got {value!r}")
    return (float(value[0]), float(value[1]))


def _names(table, at, key, *, default, selectors=False) -> tuple[str, ...]:
    if key not in table:
        return default
    value = table[key]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{at}{key}: must be a list of peer names, got {value!r}")
    for name in value:
        if _is_selector(name) and not selectors:
            raise ConfigError(f"{at}{key}: selector {name!r} is not allowed here; name peers")
        if name.startswith("master:") and len(name) == len("master:"):
            raise ConfigError(f"{at}{key}: 'master:' needs a stream name")
    return tuple(value)


def _is_selector(name: str) -> bool:
    return name in ("crashed", "isolated", "live") or name.startswith("master:")
