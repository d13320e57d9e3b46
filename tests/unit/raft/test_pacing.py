"""Quorum first: which AppendEntries go out at once, which wait, and how they are joined."""

from __future__ import annotations

from typing import Any

import pytest

from pipeorch.raft.pacing import MAX_JOINED_ENTRIES, FollowerPacing, join_appends

HOLD = 0.01


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def append(first: int, count: int, commit: int, term: int = 2) -> dict[str, Any]:
    """An AppendEntries carrying entries first .. first+count-1, as pysyncobj builds it."""
    entries = [(b"cmd%d" % i, i, term) for i in range(first, first + count)]
    return {
        "type": "append_entries",
        "term": term,
        "commit_index": commit,
        "entries": entries,
        "prevLogIdx": first - 1,
        "prevLogTerm": term,
    }


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pacing(clock: Clock) -> FollowerPacing:
    p = FollowerPacing(HOLD, clock)
    assert p.choose(["a", "b"], needed=1) == ["a"]
    return p


def test_the_quorum_gets_entries_at_once_and_the_spare_after_the_hold(
    pacing: FollowerPacing, clock: Clock
) -> None:
    first, second = append(5, 1, 4), append(6, 1, 5)
    assert pacing.route("a", first, holdable=True) == [first]
    assert pacing.route("b", first, holdable=True) == []
    assert pacing.route("b", second, holdable=True) == []
    assert pacing.due(True, ["a", "b"]) == {}

    clock.now += HOLD
    (sent,) = pacing.due(True, ["a", "b"])["b"]
    # One message, the two entries in order, the newer commit index.
    assert [e[1] for e in sent["entries"]] == [5, 6]
    assert (sent["prevLogIdx"], sent["commit_index"]) == (4, 5)
    assert pacing.due(True, ["a", "b"]) == {}
    assert (pacing.held_messages, pacing.sent_batches) == (2, 1)


def test_what_the_caller_needs_sent_goes_after_what_was_held(pacing: FollowerPacing) -> None:
    held, urgent = append(5, 1, 4), append(6, 1, 5)
    pacing.route("b", held, holdable=True)
    # Order is kept: a later message never overtakes a held one.
    out = pacing.route("b", urgent, holdable=False)
    assert [m["entries"][0][1] for m in out] == [5, 6]


def test_other_messages_are_never_held(pacing: FollowerPacing) -> None:
    chunk = {**append(5, 1, 4), "transmission": "start"}
    vote = {"type": "request_vote", "term": 3}
    assert pacing.route("b", chunk, holdable=True) == [chunk]
    assert pacing.route("b", vote, holdable=True) == [vote]


def test_with_every_follower_needed_nothing_waits(clock: Clock) -> None:
    pacing = FollowerPacing(HOLD, clock)
    assert sorted(pacing.choose(["a", "b"], needed=2)) == ["a", "b"]
    message = append(5, 1, 4)
    assert pacing.route("b", message, holdable=True) == [message]
    # One of two connected, one needed: it is the quorum, whatever it measured.
    assert pacing.choose(["b"], needed=1) == ["b"]


def test_five_replicas_send_to_two_followers_at_once(clock: Clock) -> None:
    pacing = FollowerPacing(HOLD, clock)
    quorum = pacing.choose(["a", "b", "c", "d"], needed=2)
    assert len(quorum) == 2
    message = append(5, 1, 4)
    at_once = [n for n in "abcd" if pacing.route(n, message, holdable=True)]
    assert sorted(at_once) == sorted(quorum)


def measure(pacing: FollowerPacing, clock: Clock, node: str, index: int, took: float) -> None:
    pacing.sent(node, append(index, 1, index - 1))
    clock.now += took
    pacing.answered(node, index + 1)


def test_a_disconnected_quorum_follower_is_replaced_at_once(
    pacing: FollowerPacing, clock: Clock
) -> None:
    pacing.route("b", append(5, 1, 4), holdable=True)
    assert pacing.choose(["b"], needed=1) == ["b"]
    # What was held for b goes out at the next tick, now that it is the quorum.
    assert [m["entries"][0][1] for m in pacing.due(True, ["b"])["b"]] == [5]


def test_a_stalled_quorum_follower_is_replaced_by_a_faster_spare(
    pacing: FollowerPacing, clock: Clock
) -> None:
    measure(pacing, clock, "a", 5, 0.0004)
    measure(pacing, clock, "b", 5, 0.0005)
    # Jitter does not swap them.
    pacing.sent("a", append(6, 1, 5))
    clock.now += 0.002
    assert pacing.choose(["a", "b"], needed=1) == ["a"]
    # A stall longer than the spare's latency by a quarter plus half a hold does.
    clock.now += HOLD
    assert pacing.choose(["a", "b"], needed=1) == ["b"]
    # Once a answers again it stays a spare until b itself stalls.
    pacing.answered("a", 7)
    assert pacing.choose(["a", "b"], needed=1) == ["b"]


def test_a_far_quorum_follower_gives_way_to_a_nearer_one(clock: Clock) -> None:
    # Regions 75 ms and 50 ms away: commits should wait for the nearer.
    pacing = FollowerPacing(HOLD, clock)
    assert pacing.choose(["far", "near"], needed=1) == ["far"]
    for index in range(5, 25):
        measure(pacing, clock, "far", index, 0.075)
        measure(pacing, clock, "near", index, 0.050)
    assert pacing.choose(["far", "near"], needed=1) == ["near"]


def test_a_deposed_leader_drops_what_it_held(pacing: FollowerPacing, clock: Clock) -> None:
    pacing.route("b", append(5, 1, 4), holdable=True)
    assert pacing.due(False, ["a", "b"]) == {}
    clock.now += HOLD
    assert pacing.due(True, ["a", "b"]) == {}


def test_what_was_held_for_a_disconnected_follower_is_dropped(
    pacing: FollowerPacing, clock: Clock
) -> None:
    pacing.route("b", append(5, 1, 4), holdable=True)
    pacing.sent("b", append(5, 1, 4))
    assert pacing.due(True, ["a"]) == {}
    clock.now += HOLD
    # Back: nothing stale is sent; the leader resends from the follower's answer.
    assert pacing.due(True, ["a", "b"]) == {}
    pacing.answered("b", 6)  # no unanswered entry left to time: no sample
    assert pacing._follower("b").latency is None


def test_joining_keeps_every_entry_in_order() -> None:
    heartbeat = {**append(5, 0, 4), "prevLogIdx": 4, "prevLogTerm": 2}
    messages = [append(5, 2, 4), append(7, 1, 5), append(8, 3, 6)]
    (joined,) = join_appends(messages)
    assert [e[1] for e in joined["entries"]] == [5, 6, 7, 8, 9, 10]
    assert (joined["prevLogIdx"], joined["commit_index"]) == (4, 6)
    # A heartbeat is replaced by the next message that starts where it does.
    (joined,) = join_appends([heartbeat, append(5, 1, 5)])
    assert [e[1] for e in joined["entries"]] == [5]
    assert joined["commit_index"] == 5
    # And one that follows the last entry carries its commit index on.
    (joined,) = join_appends([append(5, 1, 4), {**append(6, 0, 5), "prevLogIdx": 5}])
    assert [e[1] for e in joined["entries"]] == [5]
    assert joined["commit_index"] == 5


def test_messages_that_do_not_continue_each_other_stay_apart() -> None:
    gap = [append(5, 1, 4), append(7, 1, 4)]
    new_term = [append(5, 1, 4), append(6, 1, 4, term=3)]
    resent = [append(5, 2, 4), append(5, 2, 4)]  # the leader went back (a mismatch answer)
    for messages in (gap, new_term, resent):
        assert join_appends(messages) == messages
    many = [append(i, 1, 0) for i in range(1, MAX_JOINED_ENTRIES + 2)]
    assert [len(m["entries"]) for m in join_appends(many)] == [MAX_JOINED_ENTRIES, 1]
