"""GroupCommitter batching logic, driven by a hand-cranked propose function."""

from __future__ import annotations

import time

from pipeorch.errors import Unavailable
from pipeorch.raft.commit import (
    ENTRY_CHUNK_BYTES,
    MAX_BATCH_BYTES,
    MAX_BATCH_COMMANDS,
    MAX_COMMAND_BYTES,
    GroupCommitter,
)


class Crank:
    def __init__(self) -> None:
        self.proposals: list[tuple[list, object]] = []

    def __call__(self, commands, callback) -> None:
        self.proposals.append((commands, callback))

    def commit(self, index: int = 0, error: int = 0) -> None:
        commands, callback = self.proposals.pop(index)
        callback([f"done:{c[1][0]}" for c in commands] if error == 0 else None, error)


def committer(crank: Crank, max_inflight: int = 1, stuck_after: float = 60.0) -> GroupCommitter:
    return GroupCommitter(
        crank,
        max_inflight=max_inflight,
        stuck_after=stuck_after,
        describe_failure=lambda code: Unavailable(f"failed {code}"),
    )


def submit(gc: GroupCommitter, command, size: int = 40):
    return gc.submit(command, size)


def cmd(n: int):
    return ("noop/1", (n,))


def test_lone_write_is_proposed_at_once_and_later_writes_travel_together():
    crank = Crank()
    gc = committer(crank)
    first = submit(gc, cmd(1))
    assert [c for c, _ in crank.proposals] == [[cmd(1)]]
    later = [submit(gc, cmd(n)) for n in (2, 3, 4)]
    assert len(crank.proposals) == 1  # waiting for room
    crank.commit()
    assert first.result(0) == "done:1"
    assert [c for c, _ in crank.proposals] == [[cmd(2), cmd(3), cmd(4)]]
    crank.commit()
    assert [f.result(0) for f in later] == ["done:2", "done:3", "done:4"]


def test_failure_fails_every_command_of_the_batch_with_the_reason():
    crank = Crank()
    gc = committer(crank)
    futures = [submit(gc, cmd(1))]
    futures.append(submit(gc, cmd(2)))
    crank.commit(error=5)
    assert isinstance(futures[0].exception(0), Unavailable)
    crank.commit(error=2)
    assert "failed 2" in str(futures[1].exception(0))


def test_lost_batch_stops_blocking_after_stuck_after():
    crank = Crank()
    gc = committer(crank, stuck_after=0.005)
    submit(gc, cmd(1))  # its callback never comes
    time.sleep(0.02)
    submit(gc, cmd(2))
    assert len(crank.proposals) == 2


def test_late_callback_after_settlement_is_ignored():
    crank = Crank()
    gc = committer(crank)
    future = submit(gc, cmd(1))
    _, callback = crank.proposals[0]
    callback(["a"], 0)
    callback(None, 5)  # a duplicate report must not flip the result
    assert future.result(0) == "a"


def test_batches_respect_the_command_and_byte_limits():
    crank = Crank()
    gc = committer(crank)
    submit(gc, cmd(0))  # occupies the only in-flight slot
    for n in range(1, MAX_BATCH_COMMANDS + 11):
        submit(gc, cmd(n))
    crank.commit()
    assert len(crank.proposals[0][0]) == MAX_BATCH_COMMANDS
    crank.commit()
    assert len(crank.proposals[0][0]) == 10
    crank.commit()

    big = MAX_BATCH_BYTES // 3
    submit(gc, cmd(-1))
    for n in range(4):
        submit(gc, cmd(100 + n), size=big)
    crank.commit()
    assert [c[1][0] for c in crank.proposals[0][0]] == [100, 101, 102]
    crank.commit()
    assert [c[1][0] for c in crank.proposals[0][0]] == [103]


def test_no_batch_can_reach_pysyncobj_chunked_transfer():
    # The largest batch: MAX_BATCH_BYTES of commands plus one command that crossed the limit,
    # plus pickling overhead per command; it must stay well below the chunking threshold.
    largest = MAX_BATCH_BYTES + MAX_COMMAND_BYTES + 64 * MAX_BATCH_COMMANDS
    assert largest * 2 < ENTRY_CHUNK_BYTES


def test_a_group_travels_whole_in_one_batch_with_one_future_for_its_results():
    crank = Crank()
    gc = committer(crank)
    first = submit(gc, cmd(0))  # occupies the only in-flight slot
    group = gc.submit_all([cmd(1), cmd(2), cmd(3)], 120)
    after = submit(gc, cmd(4))
    crank.commit()
    assert first.result(0) == "done:0"
    assert [c for c, _ in crank.proposals] == [[cmd(1), cmd(2), cmd(3), cmd(4)]]
    crank.commit()
    assert group.result(0) == ["done:1", "done:2", "done:3"]
    assert after.result(0) == "done:4"


def test_a_group_is_never_split_at_the_command_limit():
    crank = Crank()
    gc = committer(crank)
    submit(gc, cmd(0))
    singles = [submit(gc, cmd(n)) for n in range(1, MAX_BATCH_COMMANDS - 1)]
    group = gc.submit_all([cmd(-1), cmd(-2), cmd(-3)], 120)
    crank.commit()
    assert len(crank.proposals[0][0]) == MAX_BATCH_COMMANDS - 2  # the group did not fit
    crank.commit()
    assert [c for c, _ in crank.proposals] == [[cmd(-1), cmd(-2), cmd(-3)]]
    crank.commit()
    assert singles[-1].result(0) == f"done:{MAX_BATCH_COMMANDS - 2}"
    assert group.result(0) == ["done:-1", "done:-2", "done:-3"]


def test_a_failed_batch_fails_its_groups():
    crank = Crank()
    gc = committer(crank)
    group = gc.submit_all([cmd(1), cmd(2)], 80)
    crank.commit(error=3)
    assert "failed 3" in str(group.exception(0))
