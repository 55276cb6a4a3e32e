"""Event stores: the `EventStore` protocol, an in-memory store and the segment log."""
