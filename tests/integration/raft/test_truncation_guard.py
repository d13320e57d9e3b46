"""The follower-truncation bug of pysyncobj 0.3.17, provoked deterministically.

One replica with ``autoTick=False`` is handed AppendEntries as if from a partner that leads term
1: first entries 2..6 (committed), then a stale message from the same leader and term with
prevLogIdx 2 and only entry 3. The unguarded library deletes entries 4..6, which it had already
acknowledged and applied; the guarded one keeps them and acknowledges exactly up to entry 3.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pysyncobj import SyncObj, SyncObjConf
from pysyncobj.node import TCPNode
from pysyncobj.pickle import dumps

from pipeorch.core.state import noop_cmd
from pipeorch.local.cluster import free_ports
from pipeorch.raft.guard import GuardedSyncObj
from pipeorch.raft.node import _Machine


def _entry(index: int, term: int = 1) -> tuple[bytes, int, int]:
    # A regular command: type byte 0, then pickle of (method id, args); id 0 is apply_batch.
    return (b"\x00" + dumps((0, ([noop_cmd(str(index))],))), index, term)


class Follower:
    def __init__(self, cls: type[SyncObj]) -> None:
        me, leader, other = (f"127.0.0.1:{p}" for p in free_ports(3))
        self.machine = _Machine()
        self.obj = cls(me, [leader, other], SyncObjConf(autoTick=False), consumers=[self.machine])
        self.leader = TCPNode(leader)
        self.sent: list[dict] = []
        self.obj._SyncObj__transport.send = lambda node, message: self.sent.append(message)

    def append(self, prev: int, entries: list, commit: int) -> None:
        prev_term = self.obj._SyncObj__getEntries(prev, 1)[0][2]
        self.obj._SyncObj__onMessageReceived(
            self.leader,
            {
                "type": "append_entries",
                "term": 1,
                "prevLogIdx": prev,
                "prevLogTerm": prev_term,
                "entries": entries,
                "commit_index": commit,
            },
        )
        self.obj.doTick(0)

    @property
    def last_index(self) -> int:
        return self.obj._SyncObj__getCurrentLogIndex()


UNPATCHED = pytest.param(
    SyncObj,
    id="pysyncobj-0.3.17",
    marks=pytest.mark.xfail(
        strict=True,
        reason="pysyncobj 0.3.17 deletes acknowledged, applied entries on a stale "
        "AppendEntries: the bug GuardedSyncObj exists for (strict: a fixed release XPASSes "
        "and fails here, so the guard gets reconsidered)",
    ),
)


@pytest.fixture(params=[pytest.param(GuardedSyncObj, id="guarded"), UNPATCHED])
def follower(request) -> Iterator[Follower]:
    f = Follower(request.param)
    yield f
    f.obj.destroy()


def test_stale_append_entries_never_truncates_applied_entries(follower: Follower) -> None:
    follower.append(prev=1, entries=[_entry(i) for i in range(2, 7)], commit=6)
    assert (follower.last_index, follower.obj.raftLastApplied) == (6, 6)

    follower.append(prev=2, entries=[_entry(3)], commit=6)  # stale: same leader, same term

    assert follower.last_index == 6, "acknowledged, applied entries 4..6 were deleted"
    assert follower.obj.raftCommitIndex == 6
    assert follower.sent[-1] == {
        "type": "next_node_idx",
        "next_node_idx": 4,
        "reset": False,
        "success": True,
    }
    assert follower.obj.applied_truncations == 0
    assert follower.obj.stale_appends_neutralised == 1


def test_guard_appends_the_new_tail_of_an_overlapping_message() -> None:
    follower = Follower(GuardedSyncObj)
    try:
        follower.append(prev=1, entries=[_entry(i) for i in range(2, 5)], commit=4)
        follower.append(prev=2, entries=[_entry(i) for i in range(3, 8)], commit=7)
        assert follower.last_index == 7
        assert follower.obj.raftLastApplied == 7
        assert follower.sent[-1]["next_node_idx"] == 8
        assert follower.obj.applied_truncations == 0
    finally:
        follower.obj.destroy()


def test_guard_still_deletes_a_genuinely_conflicting_uncommitted_suffix() -> None:
    follower = Follower(GuardedSyncObj)
    try:
        follower.append(prev=1, entries=[_entry(i) for i in range(2, 6)], commit=3)
        # A new leader (term 2) overwrites the uncommitted entries 4..5 with its own.
        prev_term = follower.obj._SyncObj__getEntries(3, 1)[0][2]
        follower.obj._SyncObj__onMessageReceived(
            follower.leader,
            {
                "type": "append_entries",
                "term": 2,
                "prevLogIdx": 3,
                "prevLogTerm": prev_term,
                "entries": [_entry(4, term=2)],
                "commit_index": 4,
            },
        )
        follower.obj.doTick(0)
        assert follower.last_index == 4
        assert follower.obj._SyncObj__getEntries(4, 1)[0][2] == 2
        assert follower.obj.applied_truncations == 0
    finally:
        follower.obj.destroy()


@pytest.fixture(
    params=[
        pytest.param(GuardedSyncObj, id="guarded"),
        pytest.param(
            SyncObj,
            id="pysyncobj-0.3.17",
            marks=pytest.mark.xfail(
                strict=True,
                raises=TypeError,
                reason="pysyncobj 0.3.17 raises inside its tick on a stray final chunk "
                "(it can send two)",
            ),
        ),
    ]
)
def chunk_follower(request) -> Iterator[Follower]:
    f = Follower(request.param)
    yield f
    f.obj.destroy()


def test_a_stray_final_chunk_is_dropped_not_fatal(chunk_follower: Follower) -> None:
    # pysyncobj marks the last chunk of a large entry by the command's length, not the pickled
    # entry's, so it can send two "finish" chunks; the second arrives with nothing started.
    follower = chunk_follower
    follower.append(prev=1, entries=[_entry(2)], commit=2)
    follower.obj._SyncObj__onMessageReceived(
        follower.leader,
        {
            "type": "append_entries",
            "transmission": "finish",
            "data": b"tail-of-an-entry",
            "term": 1,
            "prevLogIdx": 2,
            "prevLogTerm": 1,
            "commit_index": 2,
        },
    )
    follower.obj.doTick(0)
    assert follower.last_index == 2
