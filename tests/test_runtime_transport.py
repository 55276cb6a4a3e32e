"""Transport unit tests over trio memory streams: handshake, MAC, limits, batching."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from meshstream.config import Config
from meshstream.errors import RemoteProtocolError
from meshstream.runtime.transport import Connection, ConnectionClosed, handshake, make_hello
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
