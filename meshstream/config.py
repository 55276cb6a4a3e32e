"""The one configuration object of a peer, with validation and named presets.

`Config` is frozen; build variants with `dataclasses.replace` or `Config.preset(name, **over)`.
Presets: `lan` (real networks: second-scale probes), `local` (peers on one machine:
fast probes, used by the demo and integration tests) and `sim` (the simulator: lan timings,
so simulated detection times mean something for a real deployment).

Every limit carries its unit last in its name. Each default has its reason beside it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from meshstream.errors import ConfigError

MIB = 1024 * 1024
# Full replication (replication_factor = N) is how the epidemic benches run; beyond about a
# thousand replicas every write would fan out to more peers than a mesh of ours holds.
REPLICATION_FACTOR_MAX = 1024


@dataclass(frozen=True, slots=True)
class Config:
    # -- mesh shape (fixed when a mesh is created; recorded in the topology stream) --
    shards: int = 64  # enough that 500 peers each master a few; cheap digests at 1 peer
    replication_factor: int = 3  # survives one failure with a quorum left

    # -- event limits --
    event_bytes_max: int = 1 * MIB  # one event's data; larger payloads belong in blob stores
    metadata_entries_max: int = 32  # metadata is for routing hints, not payloads
    metadata_value_bytes_max: int = 1024
    append_batch_events_max: int = 1000  # one client request; one fsync covers a batch

    # -- wire --
    frame_bytes_max: int = 16 * MIB  # a catch-up batch of large events, never a whole store
    handshake_timeout_s: float = 5.0  # a client that cannot say Hello in 5 s is stalled
    connections_max: int = 1024  # per peer, peers and clients together
    send_queue_frames_max: int = 1024  # per connection; beyond this a slow reader is dropped

    # -- membership (SWIM) --
    probe_interval_s: float = 1.0  # SWIM's protocol period T'
    probe_timeout_s: float = 0.5  # direct ping round trip allowance, then ping-req
    indirect_probes: int = 3  # k in SWIM: 3 keeps false positives low at 10% loss
    suspicion_multiplier: float = 4.0  # suspicion lasts mult * log10(N+1) * probe_interval_s
    gossip_retransmit_multiplier: int = 4  # piggyback each update lambda * log(N+1) times
    piggyback_updates_max: int = 8  # topology events carried per probe message

    # -- anti-entropy and replication --
    gossip_interval_s: float = 0.2  # one push-pull round per interval with a random partner
    anti_entropy_batch_events_max: int = 512  # events per repair message
    anti_entropy_batch_bytes_max: int = 4 * MIB  # bytes per repair message
    append_timeout_s: float = 5.0  # a write not acknowledged by then fails (indefinite)
    forward_timeout_s: float = 2.0  # a forwarded append with no answer is retried elsewhere
    appends_in_flight_max: int = 10_000  # per peer; more is refused with a definite error
    scrub_records_per_s: int = 10_000  # background scrub rate: a few % of a disk's speed
    scrub_pass_s_min: float = 60.0  # a small store is not rescanned more often than this

    # -- store --
    segment_bytes_max: int = 64 * MIB  # segment file size before rolling to a new one
    group_commit_events_max: int = 1000  # events per fsync batch

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"config {field.name} must be a number, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"config {field.name} must be positive, got {value!r}")
            if field.type in ("int", int) and not isinstance(value, int):
                raise ConfigError(f"config {field.name} must be a whole number, got {value!r}")
        if self.shards > 65536:
            raise ConfigError(f"config shards must be at most 65536, got {self.shards}")
        if self.replication_factor > REPLICATION_FACTOR_MAX:
            raise ConfigError(
                f"config replication_factor must be at most {REPLICATION_FACTOR_MAX}, got {self.replication_factor}"
            )
        if self.probe_timeout_s >= self.probe_interval_s:
            raise ConfigError("config probe_timeout_s must be shorter than probe_interval_s")
        if self.frame_bytes_max < self.event_bytes_max + 64 * 1024:
            raise ConfigError("config frame_bytes_max must exceed event_bytes_max by at least 64 KiB")

    @classmethod
    def preset(cls, name: str, **overrides: object) -> "Config":
        """A named preset (`lan`, `local`, `sim`) with `overrides` applied.

        Raises ConfigError for an unknown preset or field, or an invalid value.
        """
        try:
            base = PRESETS[name]
        except KeyError:
            raise ConfigError(f"unknown config preset {name!r}; choose from {sorted(PRESETS)}") from None
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        return dataclasses.replace(base, **overrides)

    def suspicion_timeout_s(self, members: int) -> float:
        """How long a suspect stays suspect before it is declared failed (grows with log N)."""
        return self.suspicion_multiplier * max(1.0, math.log10(members + 1)) * self.probe_interval_s

    def retransmit_limit(self, members: int) -> int:
        """How many times an update is piggybacked: lambda * ceil(log10(N + 1))."""
        return self.gossip_retransmit_multiplier * max(1, math.ceil(math.log10(members + 1)))


PRESETS: dict[str, Config] = {
    "lan": Config(),
    "local": Config(
        probe_interval_s=0.2,  # one machine: round trips are 0.1 ms, detect within ~1-2 s
        probe_timeout_s=0.1,
        gossip_interval_s=0.05,
        suspicion_multiplier=3.0,
        shards=16,
    ),
    "sim": Config(),
}
