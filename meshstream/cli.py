"""The `meshstream` command: run a peer, append, read, status, topology, verify, simulate, demo.

Every subcommand parses its arguments with argparse and then calls the client library, the
runtime, the store's verifier or the simulator. Exit status: 0 on success, 2 for a usage
error (bad flag, malformed address, stream name or cursor), 1 for an operational error
(no peer reachable, write refused, key conflict); each error is one line on stderr.

With `--json`, output is one JSON object per line. Event data appears as `"data"` when it
is UTF-8 text, otherwise as `"data_base64"`; keys likewise as `"key"` (text) or
`"key_base64"`. A read event shows `stream`, `key`, `hash` (hex BLAKE3 digest), `dot`
(`peer:counter`) and `cursor` (the cursor to resume after it, `peer:counter,...`).

`run` with `MESHSTREAM_PROFILE=DIR` in the environment profiles the peer with cProfile and
writes `DIR/<name>.prof` whenever the process gets SIGUSR1 and on exit, each time with what
ran since the last write (benchmarks profile an interval of their choosing with two
SIGUSR1s, then SIGKILL).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import trio

from meshstream import ids
from meshstream.clocks import EMPTY, VersionVector
from meshstream.config import Config
from meshstream.envelope import Event
from meshstream.errors import ConfigError, LocalProtocolError, MeshError

APPEND_STDIN_BATCH_EVENTS = 100  # events per request when reading lines from stdin
READ_PAGE_EVENTS = 1000
FOLLOW_WAIT_S = 5.0
CLI_RETRY_TIMEOUT_S = 5.0  # long enough to ride through a master election on a local mesh
# Defaults of `meshstream run` for a mesh that may grow from 1 to 500 peers (README,
# "Defaults"). The shard count is fixed when the mesh is created, so it is sized for a
# large mesh: with 256 shards, 500 peers each master at most ceil(256/500)+1 = 2, and
# write capacity grows with peers up to 256 masters. Measured idle cost on this machine,
# 3 peers holding every shard: 64 shards 3.3% CPU each, 256 about 5%, 512 about 7% (the
# digests of every shard in each anti-entropy round's summary). Three replicas survive one
# failure with a quorum left; a one-peer mesh takes ack=master writes until a second joins.
RUN_SHARDS_DEFAULT = 256
RUN_REPLICATION_FACTOR_DEFAULT = 3
WATCH_INTERVAL_S = 1.0  # redraw period of `status --watch`: a person reads it, not a machine
MEMBER_STATUS_TIMEOUT_S = 2.0  # `status --mesh`: a member that does not answer in time is skipped
BAR_CELLS = 24  # width of a progress bar in characters
ANSI_HOME_CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen: plain ANSI, no curses


class UsageError(Exception):
    """A command line that cannot be carried out as written (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one clear line, exit 2
        self.exit(2, f"meshstream: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="meshstream", description="A peer-to-peer event streaming mesh.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = commands.add_parser("run", help="run a peer in the foreground")
    run.add_argument("--name", required=True)
    run.add_argument("--listen", required=True, metavar="HOST:PORT")
    run.add_argument("--data", required=True, metavar="DIR")
    run.add_argument("--join", action="append", default=[], metavar="HOST:PORT")
    run.add_argument("--advertise", metavar="HOST:PORT", help="the address other peers dial")
    run.add_argument("--cluster-key-file", metavar="FILE")
    run.add_argument("--replication-factor", type=int,
                     help=f"copies of each shard (default {RUN_REPLICATION_FACTOR_DEFAULT}; fixed at mesh creation)")
    run.add_argument("--shards", type=int,
                     help=f"shards of the mesh (default {RUN_SHARDS_DEFAULT}, sized for up to 500 peers)")
    run.add_argument("--preset", default="local", choices=["local", "lan"])
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    append = commands.add_parser("append", help="append events to a stream")
    _client_flags(append)
    append.add_argument("stream")
    append.add_argument("--key", help="natural key (text); default: random, reused on retry")
    append.add_argument("--ack", default="master", choices=["master", "quorum", "all"])
    append.add_argument("data", nargs="?", default="-", metavar="DATA | -")
    read = commands.add_parser("read", help="read a stream from a cursor")
    _client_flags(read)
    read.add_argument("stream")
    read.add_argument("--from", dest="cursor", default="", metavar="CURSOR")
    read.add_argument("--limit", type=int)
    read.add_argument("--follow", action="store_true")
    status = commands.add_parser("status", help="a peer's view of the mesh, and shards on the move")
    _client_flags(status)
    status.add_argument("--mesh", action="store_true", help="also ask every live member for its moving shards")
    status.add_argument("--watch", action="store_true", help="redraw the moving shards as a live table (Ctrl-C ends)")
    status.add_argument("--interval", type=float, default=WATCH_INTERVAL_S, metavar="SECONDS")
    topology = commands.add_parser("topology", help="the topology stream and its view")
    _client_flags(topology)
    topology.add_argument("--dot", action="store_true", help="Graphviz output")
    verify = commands.add_parser("verify", help="scrub a data directory offline")
    verify.add_argument("--data", required=True, metavar="DIR")
    verify.add_argument("--json", action="store_true")
    simulate = commands.add_parser("simulate", help="run a simulator scenario", add_help=False)
    simulate.add_argument("args", nargs=argparse.REMAINDER)
    commands.add_parser("demo", help="a three-peer local demo")
    return parser


def _client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--peer", action="append", required=True, metavar="HOST:PORT",
                        help="a peer to talk to (repeat for failover)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--cluster-key-file", metavar="FILE")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulate"]:
        return _simulate(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (UsageError, ConfigError, LocalProtocolError) as exc:
        print(f"meshstream: error: {exc}", file=sys.stderr)
        return 2
    except (MeshError, OSError) as exc:
        print(f"meshstream: {args.command} failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        return _run(args)
    if args.command == "verify":
        from meshstream.store.verify import run_verify

        return run_verify(args.data, args.json, sys.stdout)
    if args.command == "demo":
        from meshstream.demo import main as demo_main

        return demo_main()
    for peer in args.peer:
        ids.parse_address(peer)
    key = _cluster_key(args.cluster_key_file)
    handler = {"append": _append, "read": _read, "status": _status, "topology": _topology}[args.command]
    return trio.run(handler, args, key)


def _simulate(argv: list[str]) -> int:
    from simulations.runner import main as simulate_main

    return simulate_main(argv)


def _cluster_key(path: str | None) -> bytes | None:
    if path is None:
        return None
    from meshstream.runtime.transport import load_cluster_key

    return load_cluster_key(path)


# -- run --


def _run(args: argparse.Namespace) -> int:
    from meshstream.runtime.peer import PeerOptions, run_peer

    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format=f"%(asctime)s {args.name} %(levelname)s %(name)s: %(message)s")
    overrides: dict[str, Any] = {
        "replication_factor": RUN_REPLICATION_FACTOR_DEFAULT if args.replication_factor is None
        else args.replication_factor,
        "shards": RUN_SHARDS_DEFAULT if args.shards is None else args.shards,
    }
    config = Config.preset(args.preset, **overrides)
    ids.validate_peer_name(args.name)
    for address in [args.listen, *args.join, *([args.advertise] if args.advertise else [])]:
        ids.parse_address(address)
    options = PeerOptions(name=args.name, listen=args.listen, data_dir=args.data, join=tuple(args.join),
                          advertise=args.advertise, cluster_key=_cluster_key(args.cluster_key_file), config=config)
    _profiled(args.name, lambda: trio.run(run_peer, options))
    return 0


def _profiled(name: str, run: Any) -> None:
    """`run()`, under cProfile when MESHSTREAM_PROFILE names a directory."""
    directory = os.environ.get("MESHSTREAM_PROFILE")
    if not directory:
        run()
        return
    import cProfile
    import signal

    # The default (wall-clock) timer: a CPU-time timer costs a system call per function
    # call, and peers that slow could not keep a mesh settled. Idle time shows up in the
    # blocking calls (epoll, thread locks); other processes' turns fall on whatever ran.
    profiler = cProfile.Profile()
    path = os.path.join(directory, f"{name}.prof")

    def dump(*_: Any) -> None:
        profiler.disable()
        profiler.dump_stats(path)
        profiler.clear()  # the next dump covers the time from this one on
        profiler.enable()

    signal.signal(signal.SIGUSR1, dump)
    profiler.enable()
    try:
        run()
    finally:
        profiler.disable()
        profiler.dump_stats(path)


# -- append --


async def _append(args: argparse.Namespace, cluster_key: bytes | None) -> int:
    from meshstream.client import make_item, open_client

    ids.validate_stream_name(args.stream)
    if args.data == "-" and args.key is not None:
        raise UsageError("--key needs a single DATA argument, not '-' (one event per line)")
    key = args.key.encode("utf-8") if args.key is not None else None
    async with open_client(args.peer, cluster_key=cluster_key, retry_timeout_s=CLI_RETRY_TIMEOUT_S) as client:
        if args.data != "-":
            appended = await client.append(args.stream, args.data.encode("utf-8"), key=key, ack=args.ack)
            _print_appended(args, [appended])
            return 0
        batch: list[Any] = []
        for line in sys.stdin.buffer:
            batch.append(make_item(line.rstrip(b"\r\n")))
            if len(batch) >= APPEND_STDIN_BATCH_EVENTS:
                _print_appended(args, await client.append_batch(args.stream, batch, ack=args.ack))
                batch = []
        if batch:
            _print_appended(args, await client.append_batch(args.stream, batch, ack=args.ack))
    return 0


def _print_appended(args: argparse.Namespace, results: Sequence[Any]) -> None:
    for appended in results:
        doc = {"stream": args.stream, **key_fields(appended.key), "dot": dot_text(appended.dot),
               "hash": appended.digest.hex(), "duplicate": appended.duplicate}
        if args.json:
            print(json.dumps(doc), flush=True)
        else:
            note = " (duplicate: already stored)" if appended.duplicate else ""
            print(f"appended {args.stream} {doc.get('key', doc.get('key_base64'))} at {doc['dot']}{note}", flush=True)


# -- read --


async def _read(args: argparse.Namespace, cluster_key: bytes | None) -> int:
    from meshstream.client import open_client

    ids.validate_stream_name(args.stream, allow_system=True)
    cursor = parse_cursor(args.cursor)
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    remaining = args.limit
    async with open_client(args.peer, cluster_key=cluster_key, retry_timeout_s=CLI_RETRY_TIMEOUT_S) as client:
        while remaining is None or remaining > 0:
            page = READ_PAGE_EVENTS if remaining is None else min(remaining, READ_PAGE_EVENTS)
            result = await client.read(args.stream, cursor, limit=page, wait_s=FOLLOW_WAIT_S if args.follow else 0.0)
            for event in result.events:
                cursor = cursor.with_dot(event.dot)
                _print_event(args, event, cursor)
            cursor = result.cursor
            if remaining is not None:
                remaining -= len(result.events)
            if not result.events and not args.follow:
                break
    return 0


def _print_event(args: argparse.Namespace, event: Event, cursor: VersionVector) -> None:
    doc = event_document(event, cursor)
    if args.json:
        print(json.dumps(doc), flush=True)
    else:
        data = doc["data"] if "data" in doc else "base64:" + doc["data_base64"]
        print(f"{doc['dot']} {doc.get('key', doc.get('key_base64'))} {data}", flush=True)


def event_document(event: Event, cursor: VersionVector | None = None) -> dict[str, Any]:
    """The JSON form of an event (see the module docstring)."""
    doc: dict[str, Any] = {"stream": event.stream, **key_fields(event.key), "hash": event.digest.hex(),
                           "dot": dot_text(event.dot)}
    if cursor is not None:
        doc["cursor"] = cursor_text(cursor)
    doc.update(_bytes_field("data", event.data))
    if event.metadata:
        doc["metadata"] = {name: _json_value(value) for name, value in event.metadata}
    return doc


def key_fields(key: bytes) -> dict[str, str]:
    return _bytes_field("key", key)


def _bytes_field(name: str, value: bytes) -> dict[str, str]:
    try:
        return {name: value.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_base64": base64.b64encode(value).decode("ascii")}


def _json_value(value: Any) -> Any:
    return base64.b64encode(value).decode("ascii") if isinstance(value, bytes) else value


def dot_text(dot: Any) -> str:
    return f"{dot.peer}:{dot.counter}"


def cursor_text(cursor: VersionVector) -> str:
    return ",".join(f"{peer}:{count}" for peer, count in cursor.items())


def parse_cursor(text: str) -> VersionVector:
    """`peer:counter,peer:counter` (as printed by read) to a VersionVector; UsageError if bad."""
    if not text:
        return EMPTY
    counters: dict[str, int] = {}
    for part in text.split(","):
        peer, _, count = part.strip().rpartition(":")
        if not peer or not count.isdigit() or peer in counters:
            raise UsageError(f"cursor must be peer:counter,... as printed by read, got {text!r}")
        counters[peer] = int(count)
    return VersionVector(counters)


# -- status and topology --


async def _status(args: argparse.Namespace, cluster_key: bytes | None) -> int:
    if args.interval <= 0:
        raise UsageError("--interval must be positive")
    if not args.watch:
        status, others = await _gather_status(args, cluster_key)
        if args.json:
            print(json.dumps({**status, "mesh": others} if args.mesh else status, sort_keys=True))
        else:
            print(status_text(status))
            if args.mesh:
                print(moving_text(others))
        return 0
    try:
        while True:
            status, others = await _gather_status(args, cluster_key, mesh=True)
            print(ANSI_HOME_CLEAR + watch_text(status, others, trio.current_time()), flush=True)
            await trio.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


async def _gather_status(args: argparse.Namespace, cluster_key: bytes | None,
                         mesh: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The asked peer's status, and (with --mesh or --watch) every live member's."""
    from meshstream.client import open_client

    async with open_client(args.peer, cluster_key=cluster_key, retry_timeout_s=CLI_RETRY_TIMEOUT_S) as client:
        status = await client.status()
    if not (mesh or args.mesh):
        return status, [status]
    addresses = sorted({m["address"] for m in status.get("members", [])
                        if m.get("status") in ("alive", "suspect") and m.get("address")})
    found: dict[str, dict[str, Any]] = {}

    async def ask(address: str) -> None:
        with trio.move_on_after(MEMBER_STATUS_TIMEOUT_S):
            try:
                async with open_client([address], cluster_key=cluster_key, retry_timeout_s=0.5) as member:
                    found[address] = await member.status()
            except (MeshError, OSError):
                pass  # a member that does not answer is left out of the table

    async with trio.open_nursery() as nursery:
        for address in addresses:
            nursery.start_soon(ask, address)
    return status, [found[a] for a in sorted(found)]


def status_text(status: dict[str, Any]) -> str:
    """A person's view of a status document: members, then streams, then everything else."""
    lines = [f"peer {status.get('name', '?')} at {status.get('address', '?')}"]
    members = status.get("members")
    if isinstance(members, list):
        lines.append("members:")
        for m in members:
            lines.append(f"  {m.get('peer', '?'):<16} {m.get('address', '?'):<22} {m.get('status', '?'):<8} "
                         f"incarnation {m.get('incarnation', '?')}")
    streams = status.get("streams")
    if isinstance(streams, list):
        lines.append("streams:")
        for s in streams:
            replicas = ",".join(s.get("replicas", []))
            lines.append(f"  {s.get('stream', '?'):<24} shard {s.get('shard', '?'):<4} master {s.get('master') or '-':<10}"
                         f" replicas {replicas:<24} events {s.get('events', '?')}")
    rest = {k: v for k, v in status.items() if k not in ("name", "address", "members", "streams", "rebalance")}
    lines.extend(f"{key}: {json.dumps(rest[key], sort_keys=True)}" for key in sorted(rest))
    if isinstance(status.get("rebalance"), dict):
        lines.append(moving_text([status]))
    return "\n".join(lines)


def moving_rows(statuses: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per shard on the move, from peers' status documents: replicas catching up
    (events left, total, rate) and masters handing a shard over."""
    rows: list[dict[str, Any]] = []
    for status in statuses:
        rebalance = status.get("rebalance") if isinstance(status, dict) else None
        if not isinstance(rebalance, dict):
            continue
        peer = status.get("name", "?")
        for item in rebalance.get("catching_up", []):
            rows.append({"shard": item.get("shard"), "kind": "catch-up", "peer": peer, "from": item.get("master"),
                         "left": int(item.get("events_left", 0)), "total": int(item.get("events_total", 0)),
                         "rate": float(item.get("rate_per_s", 0.0))})
        for item in rebalance.get("handovers", []):
            rows.append({"shard": item.get("shard"), "kind": "handover", "peer": item.get("to"), "from": peer,
                         "left": 0, "total": 0, "rate": 0.0})
    rows.sort(key=lambda row: (str(row["kind"]), int(row["shard"] or 0), str(row["peer"])))
    return rows


def progress_bar(done: float, cells: int = BAR_CELLS) -> str:
    """`[#####-----]` for a fraction 0..1 (clamped)."""
    filled = round(max(0.0, min(1.0, done)) * cells)
    return "[" + "#" * filled + "-" * (cells - filled) + "]"


def moving_text(statuses: Sequence[dict[str, Any]]) -> str:
    """The table of shards on the move: progress bar, events left, rate and time left."""
    rows = moving_rows(statuses)
    if not rows:
        return "moving shards: none (placement settled)"
    lines = [f"moving shards: {len(rows)}",
             f"  {'shard':>5} {'kind':<9} {'from':<12} {'to':<12} {'progress':<{BAR_CELLS + 7}} "
             f"{'left':>9} {'rate/s':>9} {'eta':>7}"]
    for row in rows:
        total = max(row["total"], row["left"])
        done = 1.0 if total == 0 else 1.0 - row["left"] / total
        eta = "-" if row["rate"] <= 0 else f"{row['left'] / row['rate']:.1f}s"
        lines.append(f"  {row['shard']:>5} {row['kind']:<9} {str(row['from']):<12} {str(row['peer']):<12} "
                     f"{progress_bar(done)} {done * 100:>4.0f}% {row['left']:>9,} {row['rate']:>9,.0f} {eta:>7}")
    return "\n".join(lines)


def watch_text(status: dict[str, Any], statuses: Sequence[dict[str, Any]], now: float) -> str:
    """One frame of `status --watch`: a headline, then the moving shards of every member."""
    members = status.get("members", [])
    live = sum(1 for m in members if isinstance(m, dict) and m.get("status") in ("alive", "suspect"))
    head = (f"meshstream status --watch  via {status.get('name', '?')}  live peers {live}/{len(members)}  "
            f"shards {status.get('shards', '?')}  answered {len(statuses)}")
    return head + "\n" + moving_text(statuses)


async def _topology(args: argparse.Namespace, cluster_key: bytes | None) -> int:
    from meshstream.client import open_client

    async with open_client(args.peer, cluster_key=cluster_key, retry_timeout_s=CLI_RETRY_TIMEOUT_S) as client:
        events, view = await client.topology()
    if args.dot:
        print(topology_dot(view))
    elif args.json:
        for event in events:
            print(json.dumps({"dot": dot_text(event.dot), "hash": event.digest.hex(), "fact": fact_document(event)}))
        print(json.dumps({"view": view}, sort_keys=True))
    else:
        for event in events:
            print(f"{dot_text(event.dot)} {json.dumps(fact_document(event), sort_keys=True)}")
        print(json.dumps(view, indent=2, sort_keys=True))
    return 0


def fact_document(event: Event) -> dict[str, Any]:
    from dataclasses import asdict

    from topology.events import fact_of

    try:
        fact = fact_of(event)
    except MeshError as exc:
        return {"type": "undecodable", "error": str(exc)}
    return {"type": type(fact).__name__, **asdict(fact)}


def topology_dot(view: dict[str, Any]) -> str:
    """Graphviz of a topology view: members (coloured by status), shards to their replicas."""
    colours = {"alive": "palegreen", "suspect": "gold", "failed": "salmon", "left": "lightgrey"}
    lines = ["digraph mesh {", "  rankdir=LR;"]
    for peer, member in sorted(_members(view).items()):
        status = member.get("status", "?") if isinstance(member, dict) else str(member)
        lines.append(f'  "{peer}" [style=filled, fillcolor={colours.get(status, "white")}, '
                     f'label="{peer}\\n{status}"];')
    for shard, master in sorted(_masters(view).items()):
        lines.append(f'  "shard {shard}" [shape=box];')
        lines.append(f'  "shard {shard}" -> "{master}" [style=bold, label="master"];')
    lines.append("}")
    return "\n".join(lines)


def _members(view: dict[str, Any]) -> dict[str, Any]:
    members = view.get("members", {})
    if isinstance(members, list):
        return {m.get("peer", str(i)): m for i, m in enumerate(members) if isinstance(m, dict)}
    return members if isinstance(members, dict) else {}


def _masters(view: dict[str, Any]) -> dict[str, str]:
    masters = view.get("masters", {})
    result: dict[str, str] = {}
    if isinstance(masters, dict):
        for shard, value in masters.items():
            result[str(shard)] = value[0] if isinstance(value, (list, tuple)) else str(value.get("peer", value)
                                                                                     if isinstance(value, dict)
                                                                                     else value)
    return result


if __name__ == "__main__":
    sys.exit(main())
