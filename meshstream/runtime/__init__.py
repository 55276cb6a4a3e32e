"""The trio runtime: TCP transport, the driver that runs the sans-IO node, and a peer process.

This package is the only place (besides the CLI and client faces) where trio, sockets, the
clock and the disk meet the core. `peer.run_peer` starts one peer; `driver.Driver` feeds a
`Node` and carries out its effects; `transport` frames, authenticates and limits
connections; `links` keeps outgoing peer connections alive.
"""
