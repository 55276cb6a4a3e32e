"""Transport unit tests over trio memory streams: handshake, MAC, limits, batching."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from meshstream.config import Config
from meshstream.errors import RemoteProtocolError
from meshstream.runtime.transport import Connection, ConnectionClosed, Flusher, handshake, make_hello
from meshstream.wire.mac import derive_cluster_key
from meshstream.wire.messages import StatusRequest, StatusReply

CONFIG = Config.preset("local", handshake_timeout_s=0.5)
KEY = derive_cluster_key(b"a cluster secret of enough length")
OTHER_KEY = derive_cluster_key(b"another cluster secret, different")


async def _pair(key_a, key_b, mesh_b="meshstream"):
    left, right = trio.testing.memory_stream_pair()
    results = {}

    async def side(name, stream, key, mesh, role):
        try:
            results[name] = await handshake(stream, make_hello(mesh, name if role == "peer" else "", role,
                                                               "127.0.0.1:1"), CONFIG, key)
        except (RemoteProtocolError, ConnectionClosed) as exc:
            results[name] = exc
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(side, "a", left, key_a, "meshstream", "peer")
        nursery.start_soon(side, "b", right, key_b, mesh_b, "client")
    return left, right, results


async def test_handshake_exchanges_hellos():
    _, _, results = await _pair(None, None)
    assert results["a"].remote.role == "client"
    assert results["b"].remote.peer == "a"


async def test_handshake_with_matching_keys():
    _, _, results = await _pair(KEY, KEY)
    assert results["a"].remote.role == "client" and results["b"].remote.peer == "a"


async def test_wrong_key_is_refused():
    _, _, results = await _pair(KEY, OTHER_KEY)
    assert isinstance(results["a"], RemoteProtocolError) or isinstance(results["b"], RemoteProtocolError)
    assert isinstance(results["a"], (RemoteProtocolError, ConnectionClosed))


async def test_missing_key_is_refused():
    _, _, results = await _pair(KEY, None)
    assert isinstance(results["a"], (RemoteProtocolError, ConnectionClosed))


async def test_foreign_mesh_is_refused():
    _, _, results = await _pair(None, None, mesh_b="other")
    assert isinstance(results["a"], RemoteProtocolError)
    assert "mesh" in str(results["a"])


async def test_stalled_handshake_times_out(autojump_clock):
    left, _right = trio.testing.memory_stream_pair()
    with pytest.raises(RemoteProtocolError, match="no Hello"):
        await handshake(left, make_hello("meshstream", "a", "peer", "x:1"), CONFIG, None)


async def test_connection_round_trip_and_batching():
    for key in (None, KEY):
        left, right, results = await _pair(key, key)
        a = Connection(left, results["a"], CONFIG, "a")
        b = Connection(right, results["b"], CONFIG, "b")
        received = []
        done = trio.Event()

        def on_b(message):
            received.append(message)
            if len(received) == 300:
                done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.run, lambda m: None)
            nursery.start_soon(b.run, on_b)
            for index in range(300):
                assert a.send_nowait(StatusReply(index, "{}"))
            with trio.fail_after(5):
                await done.wait()
            a.close()
            b.close()
        assert [m.request_id for m in received] == list(range(300))


async def test_garbage_closes_with_protocol_error():
    left, right, results = await _pair(None, None)
    b = Connection(right, results["b"], CONFIG, "b")
    await left.send_all(b"\xff\xff\xff\xff garbage")
    with pytest.raises(RemoteProtocolError, match="frame length"):
        with trio.fail_after(5):
            await b.run(lambda m: None)


async def test_truncated_frame_is_reported():
    left, right, results = await _pair(None, None)
    b = Connection(right, results["b"], CONFIG, "b")
    await left.send_all(b"\x00\x00\x00\x10abc")
    await left.aclose()
    with pytest.raises(RemoteProtocolError, match="inside a frame"):
        with trio.fail_after(5):
            await b.run(lambda m: None)


async def test_full_send_queue_drops_the_connection():
    config = Config.preset("local", send_queue_frames_max=4)
    left, right, results = await _pair(None, None)
    a = Connection(left, results["a"], config, "a")
    sent = [a.send_nowait(StatusRequest(i)) for i in range(6)]  # writer not running: nothing drains
    assert sent[:4] == [True] * 4 and sent[4] is False and a.closed


async def _socket_pair():
    """Two handshaken connections' streams and sessions over a real loopback socket."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        accepted = []
        nursery.start_soon(lambda: _accept_one(listeners[0], accepted))
        left = await trio.open_tcp_stream("127.0.0.1", port)
    right = accepted[0]
    await listeners[0].aclose()
    results = {}

    async def side(name, stream, role):
        results[name] = await handshake(stream, make_hello("meshstream", name if role == "peer" else "", role,
                                                           "127.0.0.1:1"), CONFIG, None)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(side, "a", left, "peer")
        nursery.start_soon(side, "b", right, "client")
    return left, right, results


async def _accept_one(listener, accepted):
    accepted.append(await listener.accept())


async def test_direct_sends_keep_order_when_the_socket_takes_only_part():
    import socket

    left, right, results = await _socket_pair()
    assert left.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert right.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    left.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # direct sends fall short
    a = Connection(left, results["a"], CONFIG, "a")
    b = Connection(right, results["b"], CONFIG, "b")
    received = []
    done = trio.Event()
    bodies = [str(index) * (1 + index * 97 % 5000) for index in range(200)]

    def on_b(message):
        received.append(message)
        if len(received) == len(bodies):
            done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.run, lambda m: None)
        nursery.start_soon(b.run, on_b)
        for index, body in enumerate(bodies):  # no yield: each send goes straight to the socket
            assert a.send_nowait(StatusReply(index, body))
        assert a.sending  # the kernel did not take ~500 kB at once: the writer finishes
        with trio.fail_after(10):
            await done.wait()
        a.close()
        b.close()
    assert [(m.request_id, m.status_json) for m in received] == list(enumerate(bodies))


async def test_a_flusher_holds_sends_until_it_flushes():
    left, right, results = await _socket_pair()
    flusher = Flusher()
    a = Connection(left, results["a"], CONFIG, "a", flusher=flusher)
    b = Connection(right, results["b"], CONFIG, "b")
    received = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.run, lambda m: None)
        nursery.start_soon(b.run, received.append)
        await trio.testing.wait_all_tasks_blocked()  # running (a backlog at start is sent at once)
        for index in range(3):
            assert a.send_nowait(StatusReply(index, "{}"))
        assert flusher.pending == [a]  # registered once
        await trio.sleep(0.05)
        assert received == []
        flusher.flush()
        assert flusher.pending == [] and not a.sending  # three small frames: one direct send
        with trio.fail_after(5):
            while len(received) < 3:
                await trio.sleep(0.001)
        a.close()
        b.close()
    assert [m.request_id for m in received] == [0, 1, 2]
