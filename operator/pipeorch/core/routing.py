"""Which replica a client sends its calls to: the Raft leader, once it is known.

Any replica answers every call, but a follower forwards each write to the leader and answers
only once the commit has come back to it, which costs an extra hop and that follower's CPU on
every write. Clients (workers, the CLI) therefore ask each replica for its role and put the
leader first; the others stay behind it, in their configured order, for failover.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ReplicaRole:
    """What one replica said of itself (a brief ClusterState)."""

    node_id: str
    state: str
    term: int


def find_leader(roles: Mapping[str, ReplicaRole]) -> str | None:
    """The address that answered as leader; the highest term wins, should a cut-off old leader
    still think it leads. None when no replica answered as leader."""
    leaders = [a for a, r in roles.items() if r.state == "leader"]
    return max(leaders, key=lambda a: roles[a].term) if leaders else None


def leader_first(addresses: list[str], roles: Mapping[str, ReplicaRole]) -> list[str]:
    """``addresses`` with the leader first and the rest in their configured order."""
    leader = find_leader(roles)
    if leader is None or leader not in addresses:
        return list(addresses)
    return [leader] + [a for a in addresses if a != leader]
