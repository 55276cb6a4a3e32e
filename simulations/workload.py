"""Client workloads: writers that append at a rate, and readers that follow with a cursor.

A `Writer` sends one-item `AppendRequest`s to the peers of its `via` list in turn (or to
a random live peer), keys `w<client>-000042`, with data derived from the key so a retry is
byte-identical. Replies are recorded: acknowledged events with their dot and digest,
definite failures (nothing was written: given up) and indefinite ones (it may still
spread: retried with the same key after a pause, which natural-key dedup makes safe). A
request whose peer crashed, or that got no answer within the client timeout, counts as
indefinite.

A `Reader` follows a stream by sending `ReadRequest`s with its cursor (a version vector)
to a different random live peer each time, and records every natural key and digest it is
served: seeing one event (digest) twice is a duplicate (the `no_duplicates` checker reads `duplicates`).

Clients talk to peers through a `ClientPort` (the cluster): `request(peer, client,
message)` returns False when the peer is down.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from meshstream.clocks import Dot, VersionVector
from meshstream.wire.messages import AppendItem, AppendReply, AppendRequest, ErrorReply, ReadReply, ReadRequest
from simulations.loop import EventLoop
from simulations.scenario import Workload

RETRY_DELAY_S = (0.2, 0.6)  # a client's back-off before retrying an indefinite failure
RETRIES_MAX = 40  # per key: enough to outlast a failover, bounded so a run always ends
READ_INTERVAL_S = 0.5  # a reader polls this often (the simulator has no long polls)
READ_LIMIT_EVENTS = 1000
READ_TIMEOUT_S = 2.0


class ClientPort(Protocol):
    loop: EventLoop

    def request(self, peer: str, client: int, message: object) -> bool: ...

    def live_peers(self) -> list[str]: ...


@dataclass(slots=True)
class Acked:
    stream: str
    key: bytes
    dot: Dot
    digest: bytes
    ack: str
    at_s: float
    peer: str  # the peer the client sent to


@dataclass(slots=True)
class _Pending:
    key: bytes
    attempt: int
    peer: str
    sent_at: float


class Writer:
    def __init__(self, spec: Workload, client: int, port: ClientPort, rng: random.Random,
                 timeout_s: float, end_s: float) -> None:
        self.spec, self.client, self.port, self.rng = spec, client, port, rng
        self.timeout_s, self.end_s = timeout_s, end_s
        self.acked: list[Acked] = []
        self.definite_failures = 0
        self.indefinite_failures = 0
        self.retries = 0
        self.abandoned = 0
        self.sent = 0
        self._pending: dict[int, _Pending] = {}
        self._next_request = 0
        self._next_key = 0
        self._via_turn = 0

    def start(self) -> None:
        self.port.loop.at(self.spec.start_s, self._send_new)

    def _send_new(self) -> None:
        loop = self.port.loop
        if loop.now >= self.spec.stop_s:
            return
        self._next_key += 1
        self._send(f"w{self.client}-{self._next_key:06d}".encode(), attempt=1)
        loop.after(1.0 / self.spec.rate_per_s, self._send_new)

    def _pick_peer(self) -> str | None:
        if self.spec.via:
            peer = self.spec.via[self._via_turn % len(self.spec.via)]
            self._via_turn += 1
            return peer
        live = self.port.live_peers()
        return self.rng.choice(live) if live else None

    def _send(self, key: bytes, attempt: int) -> None:
        peer = self._pick_peer()
        self._next_request += 1
        request_id = self._next_request
        item = AppendItem(key=key, data=b"event:" + key, metadata={})
        message = AppendRequest(request_id=request_id, stream=self.spec.stream, items=(item,), ack=self.spec.ack)
        self.sent += 1
        now = self.port.loop.now
        if peer is None or not self.port.request(peer, self.client, message):
            self.definite_failures += 1  # the connection was refused: nothing was written
            return
        self._pending[request_id] = _Pending(key, attempt, peer, now)
        self.port.loop.after(self.timeout_s, lambda: self._timed_out(request_id))

    def on_reply(self, peer: str, message: object) -> None:
        if not isinstance(message, (AppendReply, ErrorReply)):
            return
        pending = self._pending.pop(message.request_id, None)
        if pending is None:
            return  # answered after it timed out: the retry already covers it
        if isinstance(message, AppendReply) and message.code == "" and message.appended:
            appended = message.appended[0]
            self.acked.append(Acked(self.spec.stream, pending.key, appended.dot, appended.digest,
                                    self.spec.ack, self.port.loop.now, peer))
        elif isinstance(message, AppendReply) and message.definite:
            self.definite_failures += 1
        else:
            self._indefinite(pending)

    def on_disconnect(self, peer: str) -> None:
        """The peer crashed: every request in flight there has an unknown outcome."""
        for request_id in sorted(self._pending):
            if self._pending[request_id].peer == peer:
                self._indefinite(self._pending.pop(request_id))

    def _timed_out(self, request_id: int) -> None:
        pending = self._pending.pop(request_id, None)
        if pending is not None:
            self._indefinite(pending)

    def _indefinite(self, pending: _Pending) -> None:
        self.indefinite_failures += 1
        if pending.attempt >= RETRIES_MAX:
            self.abandoned += 1
            return
        self.retries += 1
        delay_s = self.rng.uniform(*RETRY_DELAY_S)
        self.port.loop.after(delay_s, lambda: self._retry(pending))

    def _retry(self, pending: _Pending) -> None:
        if self.port.loop.now < self.end_s:
            self._send(pending.key, pending.attempt + 1)


class Reader:
    def __init__(self, stream: str, client: int, port: ClientPort, rng: random.Random, start_s: float) -> None:
        self.stream, self.client, self.port, self.rng = stream, client, port, rng
        self.start_s = start_s
        self.cursor = VersionVector()
        self.keys_seen: set[bytes] = set()
        self.digests_seen: set[bytes] = set()
        self.duplicates: list[str] = []
        self.key_rereads = 0
        self.events_read = 0
        self.reads = 0
        self._outstanding: int | None = None
        self._next_request = 0

    def start(self) -> None:
        self.port.loop.at(self.start_s, self._poll)

    def _poll(self) -> None:
        self._read()
        self.port.loop.after(READ_INTERVAL_S, self._poll)

    def _read(self) -> None:
        if self._outstanding is not None:
            return
        live = self.port.live_peers()
        if not live:
            return
        peer = self.rng.choice(live)
        self._next_request += 1
        request_id = self._next_request
        message = ReadRequest(request_id=request_id, stream=self.stream, cursor=self.cursor,
                              limit=READ_LIMIT_EVENTS, wait_s=0.0)
        if self.port.request(peer, self.client, message):
            self._outstanding = request_id
            self.reads += 1
            self.port.loop.after(READ_TIMEOUT_S, lambda: self._read_timed_out(request_id))

    def _read_timed_out(self, request_id: int) -> None:
        if self._outstanding == request_id:
            self._outstanding = None

    def on_reply(self, peer: str, message: object) -> None:
        if not isinstance(message, ReadReply) or message.request_id != self._outstanding:
            return
        self._outstanding = None
        if message.code:
            return
        for event in message.events:
            self.events_read += 1
            if event.digest in self.digests_seen:
                self.duplicates.append(f"{self.stream}/{event.key.decode(errors='replace')} from {peer}")
            elif event.key in self.keys_seen:
                self.key_rereads += 1  # another branch's event for this key, before the merge
            self.keys_seen.add(event.key)
            self.digests_seen.add(event.digest)
        self.cursor = message.cursor
        if len(message.events) >= READ_LIMIT_EVENTS:
            self.port.loop.after(0.0, self._read)

    def on_disconnect(self, peer: str) -> None:
        self._outstanding = None


Client = Writer | Reader
ReplyHandler = Callable[[str, object], None]
