"""Shared fixtures for tests that run real peer processes on 127.0.0.1.

`mesh` gives a `Mesh`: start named peers (`python -m meshstream run`) on free loopback
ports with data directories under the test's tmp_path, SIGKILL and restart them; every
process is killed at teardown whatever happened. `wait_until` (from meshstream.demo) waits
for a condition with a deadline: tests never sleep to synchronise.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import pytest

from meshstream.demo import PeerProcess


class Mesh:
    def __init__(self, root: str) -> None:
        self.root = root
        self.peers: dict[str, PeerProcess] = {}

    def start(self, name: str, join: Sequence[str] = (), extra_args: Sequence[str] = ()) -> PeerProcess:
        peer = self.peers.get(name)
        if peer is None:
            peer = PeerProcess(name, os.path.join(self.root, name, "data"), join=join, extra_args=extra_args)
            self.peers[name] = peer
        elif join:
            peer.join = list(join)
        peer.start()
        return peer

    def addresses(self, running_only: bool = True) -> list[str]:
        return [p.address for p in self.peers.values() if p.running or not running_only]

    def logs(self) -> str:
        return "\n".join(f"--- {name} ---\n{peer.log_tail(40)}" for name, peer in sorted(self.peers.items()))

    def close(self) -> None:
        for peer in self.peers.values():
            peer.kill()


@pytest.fixture
def mesh(tmp_path) -> Iterator[Mesh]:
    m = Mesh(str(tmp_path))
    try:
        yield m
    finally:
        m.close()


# Hypothesis explores new examples on every local run, but CI must judge a commit by the
# same examples every time: under CI=true the search is derandomized (seeded from each
# test), and every failure prints the blob that reproduces it.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True, database=None)
_hypothesis_settings.register_profile("dev", print_blob=True)
_hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")
