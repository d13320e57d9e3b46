"""Three RaftNodes in this process over real loopback sockets, for the raft tests."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pipeorch.local.cluster import LOOPBACK_TIMING, free_ports
from pipeorch.raft.node import RaftNode
from pipeorch.settings import ControlPlaneSettings, RaftTiming


def three_nodes(data: Path, loop: asyncio.AbstractEventLoop | None = None) -> dict[str, RaftNode]:
    """cp-0..cp-2 at loopback timing; with ``loop``, ticked on it (as a replica runs them)."""
    members = three_members()
    return {node_id: raft_node(members, node_id, data, loop=loop) for node_id in members}


def three_members() -> dict[str, str]:
    """cp-0..cp-2 on free loopback ports."""
    return {f"cp-{i}": f"127.0.0.1:{p}" for i, p in enumerate(free_ports(3))}


def raft_node(
    members: dict[str, str],
    node_id: str,
    data: Path,
    loop: asyncio.AbstractEventLoop | None = None,
    **settings: Any,
) -> RaftNode:
    """One member at loopback timing, its data under ``data/node_id``; ``settings`` are more
    ControlPlaneSettings fields (a password)."""
    return RaftNode(
        ControlPlaneSettings(
            node_id=node_id,
            members=members,
            data_dir=data / node_id,
            raft=RaftTiming(**LOOPBACK_TIMING),
            **settings,
        ),
        loop=loop,
    )


def the_leader(nodes: dict[str, RaftNode]) -> RaftNode | None:
    """The one node that leads and has caught up, if there is one."""
    leaders = [n for n in nodes.values() if n.is_leader()]
    return leaders[0] if len(leaders) == 1 and leaders[0].is_caught_up() else None
