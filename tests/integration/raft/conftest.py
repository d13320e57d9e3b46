"""Three RaftNodes in this process over real loopback sockets, for the raft tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pysyncobj import SyncObjConf

from pipeorch.core.state import noop_cmd
from pipeorch.local.cluster import free_ports
from pipeorch.raft.guard import GuardedSyncObj
from pipeorch.raft.node import RaftNode, _Machine

from ..conftest import raft_node


def three_nodes(data: Path, loop: asyncio.AbstractEventLoop | None = None) -> dict[str, RaftNode]:
    """cp-0..cp-2 at loopback timing; with ``loop``, ticked on it (as a replica runs them)."""
    members = three_members()
    return {node_id: raft_node(members, node_id, data, loop=loop) for node_id in members}


def three_members() -> dict[str, str]:
    """cp-0..cp-2 on free loopback ports."""
    return {f"cp-{i}": f"127.0.0.1:{p}" for i, p in enumerate(free_ports(3))}


def the_leader(nodes: dict[str, RaftNode]) -> RaftNode | None:
    """The one node that leads and has caught up, if there is one."""
    leaders = [n for n in nodes.values() if n.is_leader()]
    return leaders[0] if len(leaders) == 1 and leaders[0].is_caught_up() else None


NEWS_AFTER = 0.3  # autoTickPeriod: how long the leader waits for an entry to carry the news


class Group:
    """Three GuardedSyncObj over real loopback sockets, ticked by hand (``autoTick=False``),
    heartbeats and elections far slower than the test so that every AppendEntries the leader
    sends is one that the writes caused. The first one is made leader."""

    def __init__(self, news_after: float = NEWS_AFTER, quorum_first: bool = True) -> None:
        addresses = [f"127.0.0.1:{p}" for p in free_ports(3)]
        conf = dict(
            autoTick=False,
            appendEntriesUseBatch=False,  # as RaftNode: each write is sent at once
            autoTickPeriod=news_after,
            appendEntriesPeriod=5.0,
            raftMinTimeout=20.0,
            raftMaxTimeout=21.0,
            connectionTimeout=60.0,
            connectionRetryTime=0.05,
        )
        self.machines = [_Machine() for _ in addresses]
        self.objs = [
            GuardedSyncObj(
                me,
                [a for a in addresses if a != me],
                SyncObjConf(**conf),
                consumers=[machine],
                quorum_first=quorum_first,
            )
            for me, machine in zip(addresses, self.machines, strict=True)
        ]
        self.leader, *self.followers = self.objs
        #: The ones ``tick_until`` ticks: leave one out to stall it (its links stay up).
        self.ticking = list(self.objs)

    def tick_until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "not reached in time"
            for obj in self.ticking:
                obj.doTick(0.001)

    def elect_first(self) -> None:
        self.tick_until(lambda: all(len(o._SyncObj__connectedNodes) == 2 for o in self.objs))
        self.leader._SyncObj__raftElectionDeadline = 0
        self.tick_until(self.leader._isLeader)

    def write(self, token: str) -> int:
        """Commit one write on the leader; its log index."""
        done: list[Any] = []
        self.machines[0].apply_batch([noop_cmd(token)], callback=lambda r, e: done.append(e))
        self.tick_until(lambda: bool(done))
        assert done == [0]
        return int(self.leader.raftCommitIndex)

    def followers_applied(self, index: int) -> bool:
        return all(f.raftLastApplied >= index for f in self.followers)

    def __enter__(self) -> Group:
        return self

    def __exit__(self, *exc: object) -> None:
        for obj in self.objs:
            obj.destroy()


@pytest.fixture
def group() -> Iterator[Group]:
    """A Group whose objects are destroyed after the test."""
    with Group() as g:
        yield g
