"""meshstream: a peer-to-peer event streaming mesh.

Peers store and forward named event streams; membership, shard placement and master
election are a deterministic fold of a replicated topology stream. See README.md.
"""

__version__ = "0.1.0"
