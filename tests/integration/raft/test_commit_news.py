"""The leader tells followers of a new commit index with the next entry, or after a tick period
when none follows, not with a message of its own after every apply.

Three GuardedSyncObj over real loopback sockets, ticked by hand (``autoTick=False``), heartbeats
and elections far slower than the test so that every AppendEntries the leader sends is one
that the writes caused.
"""

from __future__ import annotations

import time
from typing import Any

from pipeorch.core.state import noop_cmd

from .conftest import NEWS_AFTER, Group


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
    with Group(news_after=60.0) as group:
        group.elect_first()
        done: list[Any] = []
        group.machines[1].apply_batch([noop_cmd("via f")], callback=lambda r, e: done.append(r))
        # Well before the next heartbeat (5 s), which would carry the news otherwise.
        group.tick_until(lambda: bool(done), timeout=2.0)
        assert done == [["via f"]]


def test_a_new_leader_is_settled_once_the_first_entry_of_its_term_is_applied(group: Group) -> None:
    group.elect_first()
    # Leading, but its term's no-op is not committed yet: earlier entries may be unapplied.
    assert group.leader._isLeader()
    assert not group.leader.is_settled_leader()
    opened = group.leader._SyncObj__getCurrentLogIndex()
    group.tick_until(lambda: group.leader.raftLastApplied >= opened)
    assert group.leader.is_settled_leader()
    assert not any(f.is_settled_leader() for f in group.followers)
