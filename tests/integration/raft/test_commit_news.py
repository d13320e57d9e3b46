"""The leader tells followers of a new commit index with the next entry, or after a tick period
when none follows, not with a message of its own after every apply.

Three GuardedSyncObj over real loopback sockets, ticked by hand (``autoTick=False``), heartbeats
and elections far slower than the test so that every AppendEntries the leader sends is one
that the writes caused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pysyncobj import SyncObjConf

from pipeorch.core.state import noop_cmd
from pipeorch.local.cluster import free_ports
from pipeorch.raft.guard import GuardedSyncObj
from pipeorch.raft.node import _Machine

NEWS_AFTER = 0.3  # autoTickPeriod: how long the leader waits for an entry to carry the news


class Group:
    def __init__(self, news_after: float = NEWS_AFTER) -> None:
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
            )
            for me, machine in zip(addresses, self.machines, strict=True)
        ]
        self.leader, *self.followers = self.objs

    def tick_until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "not reached in time"
            for obj in self.objs:
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


@pytest.fixture
def group() -> Iterator[Group]:
    g = Group()
    yield g
    for obj in g.objs:
        obj.destroy()


def test_commit_index_travels_with_the_next_entry_or_after_a_tick_period(group: Group) -> None:
    group.elect_first()
    # Settled: the new leader's first entry committed, and every follower knows it.
    group.tick_until(lambda: group.followers_applied(group.leader._SyncObj__getCurrentLogIndex()))
    sent: list[dict[str, Any]] = []
    transport = group.leader._SyncObj__transport
    library_send = transport.send

    def record(node: Any, message: dict[str, Any]) -> None:
        if message.get("type") == "append_entries":
            sent.append(message)
        library_send(node, message)

    transport.send = record

    first = group.write("a")
    # One AppendEntries per follower, carrying the entry; none afterwards only to say that it
    # committed, so the followers do not know yet.
    assert [len(m["entries"]) for m in sent] == [1, 1]
    assert all(f.raftCommitIndex < first for f in group.followers)

    del sent[:]
    second = group.write("b")
    assert [(len(m["entries"]), m["commit_index"]) for m in sent] == [(1, first), (1, first)]
    group.tick_until(lambda: group.followers_applied(first))

    # Nothing follows the second write: the news goes out on its own, a tick period later.
    del sent[:]
    quiet_from = time.monotonic()
    group.tick_until(lambda: group.followers_applied(second))
    assert time.monotonic() - quiet_from >= NEWS_AFTER * 0.9
    assert [(len(m["entries"]), m["commit_index"]) for m in sent] == [(0, second), (0, second)]


def test_a_write_a_follower_forwarded_is_answered_without_waiting_for_news() -> None:
    # The follower answers its caller once it knows the entry committed: the leader tells it
    # at once instead of a tick period later (here far longer than the test may take).
    group = Group(news_after=60.0)
    try:
        group.elect_first()
        done: list[Any] = []
        group.machines[1].apply_batch([noop_cmd("via f")], callback=lambda r, e: done.append(r))
        # Well before the next heartbeat (5 s), which would carry the news otherwise.
        group.tick_until(lambda: bool(done), timeout=2.0)
        assert done == [["via f"]]
    finally:
        for obj in group.objs:
            obj.destroy()


def test_a_new_leader_is_settled_once_the_first_entry_of_its_term_is_applied(group: Group) -> None:
    group.elect_first()
    # Leading, but its term's no-op is not committed yet: earlier entries may be unapplied.
    assert group.leader._isLeader()
    assert not group.leader.is_settled_leader()
    opened = group.leader._SyncObj__getCurrentLogIndex()
    group.tick_until(lambda: group.leader.raftLastApplied >= opened)
    assert group.leader.is_settled_leader()
    assert not any(f.is_settled_leader() for f in group.followers)
