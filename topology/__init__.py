"""Pure topology logic: topology facts, their fold, shard placement, election and graphs.

Nothing here imports meshstream.protocol, the runtime or trio, reads a clock or uses
global randomness: the same facts give the same view on every peer and in the simulator.
"""

from topology.events import (
    MasterElected,
    MemberAlive,
    MemberFailed,
    MemberJoined,
    MemberLeft,
    MemberSuspect,
    MeshConfigured,
    TopologyFact,
    decode_fact,
    encode_fact,
    fact_key,
    fact_of,
    topology_event,
)
from topology.fold import Member, TopologyState, fold

__all__ = [
    "MasterElected",
    "Member",
    "MemberAlive",
    "MemberFailed",
    "MemberJoined",
    "MemberLeft",
    "MemberSuspect",
    "MeshConfigured",
    "TopologyFact",
    "TopologyState",
    "decode_fact",
    "encode_fact",
    "fact_key",
    "fact_of",
    "fold",
    "topology_event",
]
