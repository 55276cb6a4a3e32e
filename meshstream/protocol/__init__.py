"""The sans-IO core: membership, anti-entropy, replication and the node that joins them.

Nothing here reads a clock, sleeps, touches a socket or calls global randomness: the node
is given `now` and a seeded `random.Random` and returns effects (see `effects`).
"""
