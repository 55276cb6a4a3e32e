"""Frame authentication with a cluster key: keyed-BLAKE3 tags, per-connection keys, counters.

When a mesh has a cluster key, every frame carries a 16-byte tag after its payload:

    tag = blake3(counter (8 bytes BE) || length prefix (4 bytes) || payload, key=K)[:16]

The counter is never sent: each side counts the frames of each direction (0, 1, 2, ...), so a
replayed, dropped, reordered or injected frame changes the counter the receiver expects and
its tag no longer verifies. The two directions have separate counters *and* separate keys,
so a frame cannot be reflected back to the side that sent it either.

Keys (all 32 bytes; `cluster_key` is itself 32 bytes, see `derive_cluster_key`):

    hello_key(nonce)          = blake3(HELLO_LABEL || nonce, key=cluster_key)
    session_key(src, dst)     = blake3(SESSION_LABEL || src_nonce || dst_nonce, key=cluster_key)

- Frame 0 of each direction is the sender's `Hello`, tagged under `hello_key(its nonce)`.
  The receiver decodes the Hello (it must be one), takes the nonce from it and checks the
  tag: a peer without the cluster key is refused at its first frame, before anything it
  sent is acted on.
- Every later frame from A to B is tagged under `session_key(A's nonce, B's nonce)`. Both
  nonces are fresh random bytes per connection, so frames recorded on one connection are
  worthless on any other.
- A Hello carrying *our own* nonce is refused: it can only be our Hello reflected back, and
  accepting it would make both directions share one key.

What a Hello alone proves: that someone with the cluster key once sent it. A recorded Hello
replayed on a new connection verifies, but the replayer cannot tag any frame after it
(that needs the session key, which depends on our fresh nonce). `confirmed` turns True at
the first verified post-Hello frame: only then is the peer proven live and in possession
of the key. Drivers should not treat a connection as the named peer's before that (or
before the peer has sent something the driver acts on, which requires the same proof).

The MAC authenticates; it does not encrypt. Confidentiality is out of scope.
"""

from __future__ import annotations

import hmac

import blake3

from meshstream.errors import LocalProtocolError, RemoteProtocolError

MAC_BYTES = 16  # 128-bit tags: forging one is 2^-128 per try
NONCE_BYTES = 16  # the Hello nonce length fixed by wire.messages.Hello
CLUSTER_KEY_BYTES = 32  # BLAKE3's key size
CLUSTER_SECRET_BYTES_MIN = 16  # a key file with less than 128 bits of secret is a mistake
COUNTER_MAX = 2**64 - 1  # 8-byte counter; a connection would need centuries to exhaust it

HELLO_LABEL = b"meshstream frame mac v1 hello\x00"
SESSION_LABEL = b"meshstream frame mac v1 session\x00"
_CLUSTER_KEY_CONTEXT = "meshstream 2024 cluster key v1"


def derive_cluster_key(secret: bytes) -> bytes:
    """The 32-byte cluster key from the contents of a key file (any length >= 16 bytes).

    Surrounding whitespace is ignored so that `echo secret > file` and an editor's trailing
    newline give the same key. Raises LocalProtocolError when the secret is too short.
    """
    if not isinstance(secret, (bytes, bytearray)):
        raise LocalProtocolError("a cluster secret must be bytes")
    secret = bytes(secret).strip()
    if len(secret) < CLUSTER_SECRET_BYTES_MIN:
        raise LocalProtocolError(f"a cluster secret needs at least {CLUSTER_SECRET_BYTES_MIN} bytes, got {len(secret)}")
    return blake3.blake3(secret, derive_key_context=_CLUSTER_KEY_CONTEXT).digest()


def hello_key(cluster_key: bytes, nonce: bytes) -> bytes:
    return blake3.blake3(HELLO_LABEL + nonce, key=cluster_key).digest()


def session_key(cluster_key: bytes, sender_nonce: bytes, receiver_nonce: bytes) -> bytes:
    return blake3.blake3(SESSION_LABEL + sender_nonce + receiver_nonce, key=cluster_key).digest()


def compute_tag(key: bytes, counter: int, *chunks: bytes | bytearray | memoryview) -> bytes:
    """The 16-byte tag of a frame (its length prefix and payload, given as `chunks` so
    callers need not join them) as frame number `counter` of its direction."""
    hasher = blake3.blake3(counter.to_bytes(8, "big"), key=key)
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.digest(length=MAC_BYTES)


class FrameMac:
    """The MAC state of one connection, shared by its FrameEncoder and FrameDecoder.

    `local_nonce` is the nonce of the Hello this side sends. Sending side: `seal_hello`,
    then `seal` for every later frame (only after the peer's Hello arrived). Receiving side:
    `open_hello` for frame 0, `open` for the rest. Raises RemoteProtocolError for a bad tag
    and LocalProtocolError when called out of order.
    """

    __slots__ = ("_cluster_key", "local_nonce", "peer_nonce", "_send_key", "_receive_key",
                 "_send_counter", "_receive_counter", "confirmed")

    def __init__(self, cluster_key: bytes, local_nonce: bytes) -> None:
        if not isinstance(cluster_key, bytes) or len(cluster_key) != CLUSTER_KEY_BYTES:
            raise LocalProtocolError(f"a cluster key must be {CLUSTER_KEY_BYTES} bytes (see derive_cluster_key)")
        if not isinstance(local_nonce, bytes) or len(local_nonce) != NONCE_BYTES:
            raise LocalProtocolError(f"a Hello nonce must be {NONCE_BYTES} bytes")
        self._cluster_key = cluster_key
        self.local_nonce = local_nonce
        self.peer_nonce: bytes | None = None
        self._send_key: bytes | None = None
        self._receive_key: bytes | None = None
        self._send_counter = 0
        self._receive_counter = 0
        self.confirmed = False  # a post-Hello frame verified: the peer is live and keyed

    @property
    def hello_sent(self) -> bool:
        return self._send_counter > 0

    @property
    def expecting_hello(self) -> bool:
        return self._receive_counter == 0

    # -- sending --
    def seal_hello(self, nonce: bytes, *frame: bytes | bytearray | memoryview) -> bytes:
        """Tag our Hello (frame 0 of our direction); `nonce` must be our local nonce."""
        if self.hello_sent:
            raise LocalProtocolError("a connection sends exactly one Hello, first")
        if nonce != self.local_nonce:
            raise LocalProtocolError("the Hello's nonce must be the FrameMac's local nonce")
        self._send_counter = 1
        return compute_tag(hello_key(self._cluster_key, nonce), 0, *frame)

    def seal(self, *frame: bytes | bytearray | memoryview) -> bytes:
        """Tag the next non-Hello frame of our direction."""
        if not self.hello_sent:
            raise LocalProtocolError("send our Hello before any other frame")
        if self._send_key is None:
            raise LocalProtocolError("wait for the peer's Hello: the session key needs its nonce")
        counter = self._send_counter
        assert counter < COUNTER_MAX
        self._send_counter = counter + 1
        return compute_tag(self._send_key, counter, *frame)

    # -- receiving --
    def open_hello(self, nonce: bytes, tag: bytes, *frame: bytes | bytearray | memoryview) -> None:
        """Verify the peer's Hello (frame 0 of its direction) and derive the session keys."""
        assert self.expecting_hello
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
            raise RemoteProtocolError("Hello nonce must be 16 bytes")
        expected = compute_tag(hello_key(self._cluster_key, nonce), 0, *frame)
        if not hmac.compare_digest(expected, tag):
            raise RemoteProtocolError("Hello MAC does not verify: the peer lacks the cluster key")
        if nonce == self.local_nonce:
            raise RemoteProtocolError("Hello carries our own nonce: a reflected Hello")
        self.peer_nonce = nonce
        self._send_key = session_key(self._cluster_key, self.local_nonce, nonce)
        self._receive_key = session_key(self._cluster_key, nonce, self.local_nonce)
        self._receive_counter = 1

    def open(self, tag: bytes, *frame: bytes | bytearray | memoryview) -> None:
        """Verify the next non-Hello frame from the peer; RemoteProtocolError if it fails."""
        assert self._receive_key is not None, "open_hello first"
        counter = self._receive_counter
        expected = compute_tag(self._receive_key, counter, *frame)
        if not hmac.compare_digest(expected, tag):
            raise RemoteProtocolError(f"frame {counter} MAC does not verify (forged, replayed or reordered)")
        self._receive_counter = counter + 1
        self.confirmed = True
