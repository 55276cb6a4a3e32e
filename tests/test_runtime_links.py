"""Outgoing peer links on loopback: a link to a peer that is not listening yet (a seed still
starting) keeps redialling often, so a message queued early arrives soon after it listens."""

from __future__ import annotations

import random
import socket

import trio

from meshstream.config import Config
from meshstream.runtime import links as links_module
from meshstream.runtime.links import PeerLinks
from meshstream.runtime.transport import Connection, handshake, make_hello
from meshstream.wire.membership_messages import WhoAreYou

CONFIG = Config.preset("local")
LATE_LISTEN_S = 1.5  # long enough for an uncapped doubling backoff to reach 0.8-1.6 s


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_a_link_that_never_connected_redials_a_late_listener_quickly():
    assert links_module.RECONNECT_BACKOFF_UNMET_MAX_S <= 0.25
    port = _unused_port()
    received: list[tuple[float, object]] = []
    got = trio.Event()

    async def serve(stream):
        session = await handshake(stream, make_hello("meshstream", "late", "peer", f"127.0.0.1:{port}"), CONFIG, None)
        connection = Connection(stream, session, CONFIG, "test server")

        def on_message(message):
            received.append((trio.current_time(), message))
            got.set()

        await connection.run(on_message)

    async with trio.open_nursery() as nursery:
        links = PeerLinks(nursery, CONFIG, lambda: make_hello("meshstream", "early", "peer", "127.0.0.1:1"), None,
                          lambda src, message: None, rng=random.Random(7))
        message = WhoAreYou()
        assert links.send(f"127.0.0.1:{port}", message)
        await trio.sleep(LATE_LISTEN_S)
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        listening_at = trio.current_time()
        nursery.start_soon(trio.serve_listeners, serve, listeners)
        with trio.fail_after(5):
            await got.wait()
        delay = received[0][0] - listening_at
        # Capped at 0.25 s with +-50% jitter: the next dial comes within ~0.4 s (doubling
        # uncapped it would be 0.8-2.4 s after a 1.5 s wait).
        assert delay < 0.6, f"first message {delay:.2f} s after the peer listened"
        assert received[0][1] == message
        nursery.cancel_scope.cancel()



async def test_a_peer_that_dials_in_is_redialled_at_once_not_after_the_backoff(monkeypatch):
    """A link whose peer died waits out its backoff (up to ~3 s after a long death); when the
    peer is back and dials in, `wake` ends the wait: what was queued meanwhile arrives now."""
    monkeypatch.setattr(links_module, "RECONNECT_BACKOFF_MIN_S", 60.0)  # without a wake: no redial in this test
    port = _unused_port()
    address = f"127.0.0.1:{port}"
    received: list[object] = []
    arrived = trio.Event()

    async def serve(stream):
        session = await handshake(stream, make_hello("meshstream", "back", "peer", address), CONFIG, None)

        def on_message(message):
            received.append(message)
            arrived.set()

        await Connection(stream, session, CONFIG, "test server").run(on_message)

    async with trio.open_nursery() as nursery:
        links = PeerLinks(nursery, CONFIG, lambda: make_hello("meshstream", "here", "peer", "127.0.0.1:1"), None,
                          lambda src, message: None, rng=random.Random(7))
        async with trio.open_nursery() as first_life:
            first_life.start_soon(trio.serve_listeners, serve, await trio.open_tcp_listeners(port, host="127.0.0.1"))
            assert links.send(address, WhoAreYou())
            with trio.fail_after(5):
                await arrived.wait()
            first_life.cancel_scope.cancel()  # the peer dies: the link loses it and waits 30-90 s
        arrived = trio.Event()
        with trio.fail_after(5):
            while links.connected_peers():
                await trio.sleep(0.01)
        nursery.start_soon(trio.serve_listeners, serve, await trio.open_tcp_listeners(port, host="127.0.0.1"))
        queued = WhoAreYou()
        assert links.send(address, queued)
        await trio.sleep(0.3)
        assert len(received) == 1, "the link redialled before the wake: the test shows nothing"
        links.wake(address)
        with trio.fail_after(2):
            await arrived.wait()
        assert received == [WhoAreYou(), queued]
        nursery.cancel_scope.cancel()
