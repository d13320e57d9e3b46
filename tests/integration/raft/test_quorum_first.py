"""Quorum first on real sockets: a write commits through the follower the majority needs; the
spare follower gets the same entries joined, later; losing or stalling the quorum follower does
not stop commits (see ``raft/pacing.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pipeorch.raft.pacing import FollowerPacing

from .conftest import Group

#: Long enough that nothing is released by time during a test, unless the test shortens it.
LONG_HOLD = 60.0


def settled(quorum_first: bool = True) -> Group:
    """A group whose leader's first entry has reached both followers, the appends it sends
    recorded in ``group.appends`` as (follower, entry indexes)."""
    group = Group(quorum_first=quorum_first)
    group.elect_first()
    group.tick_until(lambda: group.followers_applied(group.leader._SyncObj__getCurrentLogIndex()))
    leader = group.leader
    if leader.pacing is not None:
        leader.pacing.hold = LONG_HOLD
    group.appends = []  # type: ignore[attr-defined]
    send = leader._library_send

    def record(node: Any, message: dict[str, Any]) -> None:
        if message.get("type") == "append_entries":
            indexes = [e[1] for e in message.get("entries", [])]
            group.appends.append((str(node), indexes))  # type: ignore[attr-defined]
        send(node, message)

    leader._library_send = record
    return group


@pytest.fixture
def group() -> Iterator[Group]:
    with settled() as g:
        yield g


def roles(group: Group) -> tuple[FollowerPacing, dict[str, Any], str, str]:
    """The leader's pacing, the followers by address, and which is the quorum and the spare."""
    pacing = group.leader.pacing
    assert pacing is not None
    followers = {str(f._SyncObj__selfNode): f for f in group.followers}
    (quorum,) = (str(n) for n in pacing.quorum)
    (spare,) = (a for a in followers if a != quorum)
    return pacing, followers, quorum, spare


def last_index(obj: Any) -> int:
    return int(obj._SyncObj__getCurrentLogIndex())


def test_writes_commit_through_the_quorum_and_reach_the_spare_joined(group: Group) -> None:
    pacing, followers, quorum, spare = roles(group)

    written = [group.write(token) for token in ("a", "b", "c")]
    # Each committed with the quorum follower alone; the spare has none of them yet.
    assert last_index(followers[quorum]) == written[-1]
    assert last_index(followers[spare]) < written[0]
    assert [a for a in group.appends if a[0] == spare] == []  # type: ignore[attr-defined]

    pacing.hold = 0.0
    group.tick_until(lambda: followers[spare].raftLastApplied >= written[-1])
    # The three writes' entries reached it in one message, in order.
    to_spare = [a for a in group.appends if a[0] == spare and a[1]]  # type: ignore[attr-defined]
    assert to_spare == [(spare, written)]
    assert group.machines[1].state.digest() == group.machines[2].state.digest()


def test_without_quorum_first_every_follower_gets_each_entry_at_once() -> None:
    with settled(quorum_first=False) as group:
        index = group.write("a")
        assert sorted(i for _, i in group.appends) == [[index], [index]]  # type: ignore[attr-defined]
        assert all(last_index(f) == index for f in group.followers)


def test_losing_the_quorum_follower_moves_the_quorum_to_the_spare(group: Group) -> None:
    pacing, followers, quorum, spare = roles(group)
    held = group.write("before")

    followers[quorum].destroy()
    group.ticking = [group.leader, followers[spare]]
    group.tick_until(lambda: [str(n) for n in pacing.quorum] == [spare])
    # What was held for the spare went first, then the new write: it commits with the spare.
    index = group.write("after")
    assert followers[spare].raftLastApplied >= held
    assert last_index(followers[spare]) == index


def test_a_stalled_quorum_follower_gives_way_and_writes_still_commit(group: Group) -> None:
    pacing, followers, quorum, spare = roles(group)
    leader = group.leader
    # The spare answers something once, so that its latency is known.
    pacing.hold = 0.0
    group.write("measure")
    group.tick_until(lambda: followers[spare].raftLastApplied >= last_index(leader))

    # The quorum follower stops working but keeps its connection: no disconnect to notice.
    pacing.hold = 0.2
    group.ticking = [leader, followers[spare]]
    index = group.write("stalled")
    assert [str(n) for n in pacing.quorum] == [spare]
    assert last_index(followers[spare]) >= index
    assert last_index(followers[quorum]) < index
