"""A live node fed well-formed but arbitrary messages keeps serving.

The fuzz tests of the decoders stop at the codec: everything they let through is
well-typed. This test goes one layer up. Hypothesis draws registered peer messages (kinds
20-79) and client requests with random field values; they are delivered to a node of a
formed three-node mesh, from a member and from a stranger. The only error a node may raise
is RemoteProtocolError (the runtime then closes that one connection); afterwards the mesh
keeps running and the node still answers requests.
"""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from meshstream.errors import RemoteProtocolError
from meshstream.wire import schema
from meshstream.wire.messages import StatusReply, StatusRequest
from tests.node_harness import Harness
from tests.test_wire_schema import instances_of

NAMES = ["n1", "n2", "n3"]
SEED = 5
PEER_KINDS = [cls for kind, cls in sorted(schema.MESSAGE_KINDS.items()) if 20 <= kind < 80]
CLIENT_KINDS = [cls for kind, cls in sorted(schema.MESSAGE_KINDS.items()) if kind in (2, 4, 6, 8)]

peer_messages = st.tuples(st.sampled_from(["n2", "n3", "stranger"]), st.one_of([instances_of(c) for c in PEER_KINDS]))
client_messages = st.tuples(st.just(None), st.one_of([instances_of(c) for c in CLIENT_KINDS]))


def deliver(harness: Harness, src: str | None, message: object) -> None:
    peer = harness.peers["n1"]
    assert peer.node is not None
    try:
        if src is None:
            effects = peer.node.client_request(7, message, harness.now)
        else:
            effects = peer.node.receive(src, message, harness.now)
    except RemoteProtocolError:
        return  # refused: the runtime closes that connection and serves the rest
    harness._run(peer, effects)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(peer_messages | client_messages, min_size=1, max_size=12))
def test_arbitrary_messages_never_crash_a_node(messages) -> None:
    harness = Harness(SEED)
    harness.form_mesh(NAMES)
    for src, message in messages:
        deliver(harness, src, message)
        harness.run_for(0.05)  # whatever it provoked reaches the other peers too
    harness.run_for(1.0)
    request_id = 2**63 - 7  # no drawn client request uses it
    harness.client("n1", StatusRequest(request_id))
    reply = harness.await_reply("n1", request_id)
    assert isinstance(reply, StatusReply), f"seed={SEED}: {reply}"
