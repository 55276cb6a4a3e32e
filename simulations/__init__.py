"""The deterministic simulator: runs the sans-IO core (meshstream.protocol.node.Node) on a
seeded discrete-event loop with a modelled network and disk, drives client workloads,
injects faults from a TOML scenario, checks invariants and prints a report.

Modules: `loop` (the event heap and journal), `network` (a networkx graph of links with
latency, loss, bandwidth and partitions), `disk` (fsync latency and crash loss over a
MemoryStore), `scenario` (the validated scenario file, DESIGN section 6), `workload`
(writer and reader clients), `cluster` (peers, effects, faults), `checkers` (the
`expect` invariants), `report` (timeline, summary, JSON) and `runner` (the CLI entry
point `main(argv)`). Nothing here imports trio or the runtime, reads a clock or uses
global randomness: every random choice comes from one `random.Random(seed)`.
"""
