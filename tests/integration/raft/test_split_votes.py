"""A split vote on real sockets: the leader gone, both survivors stand in the same term and
each votes for itself. Each then waits for its votes a candidate's timeout, far shorter than the
follower's election timeout that pysyncobj would wait and set by its place among the members,
so the first to retry is elected at once."""

from __future__ import annotations

from pysyncobj.monotonic import monotonic as monotonic_time

from .conftest import Group

# Group's timing: election timeouts of 20 to 21 s; a candidate waits (1 + rank) * 20/4, plus up
# to 20/8 at random.
STEP = 5.0


def test_after_a_split_vote_the_first_ranked_candidate_retries_first_and_wins(group: Group) -> None:
    group.elect_first()
    ids = sorted(o._SyncObj__selfNode.id for o in group.objs)
    group.leader.destroy()
    survivors = group.ticking = group.followers
    term = survivors[0]._SyncObj__raftCurrentTerm
    for obj in survivors:  # both time out at once
        obj._SyncObj__raftElectionDeadline = 0
    for obj in survivors:
        obj.doTick(0.001)
    # Each asks the other for its vote in the same term, and each refuses: it voted for itself.
    exchanged = monotonic_time() + 0.3
    while monotonic_time() < exchanged:
        for obj in survivors:
            obj.doTick(0.001)
    now = monotonic_time()
    waits = {}
    for obj in survivors:
        assert obj._SyncObj__raftCurrentTerm == term + 1
        assert obj._SyncObj__votesCount == 1
        assert not obj._isLeader()
        rank = ids.index(obj._SyncObj__selfNode.id)
        waits[rank] = obj._SyncObj__raftElectionDeadline - now
        assert STEP * (1 + rank) - 0.3 <= waits[rank] <= STEP * (1.5 + rank)

    # The lower rank retries first and the other, still waiting, votes for it: one more term.
    first = min(waits)
    group.tick_until(lambda: any(o._isLeader() for o in survivors), timeout=STEP * 2.5 + 5)
    (leader,) = [o for o in survivors if o._isLeader()]
    assert ids.index(leader._SyncObj__selfNode.id) == first
    assert leader._SyncObj__raftCurrentTerm == term + 2
