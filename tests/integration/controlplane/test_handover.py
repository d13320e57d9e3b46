"""A submission hands its first steps to the waiting acquires of the workers it started them
on, and wakes only those: on a real (one-member) Raft node ticked by this test's loop."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipeorch.controlplane.service import ChangeFeed, ControlPlane
from pipeorch.core import state as core
from pipeorch.core.placement import Topology
from pipeorch.core.workers import Registration
from pipeorch.local.cluster import free_ports
from pipeorch.raft.node import RaftNode

from ..conftest import noop_manifest, raft_node

pytestmark = pytest.mark.anyio
WORKERS = ("aws-w0", "aws-w1")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[RaftNode]:
    (port,) = free_ports(1)
    raft = raft_node({"cp-0": f"127.0.0.1:{port}"}, "cp-0", tmp_path, asyncio.get_running_loop())
    try:
        deadline = time.monotonic() + 20
        while not (raft.is_leader() and raft.is_caught_up()):
            assert time.monotonic() < deadline, "the one member did not lead"
            await asyncio.sleep(0.01)
        yield raft
    finally:
        raft.destroy()


async def test_a_submission_wakes_only_the_acquires_it_handed_steps_to(node: RaftNode) -> None:
    feed = ChangeFeed(asyncio.get_running_loop())
    node.on_apply(feed.notify_threadsafe)
    # An hour's tick: an acquire that is not woken stays parked for the whole test.
    control = ControlPlane(node, feed, 30.0, Topology.from_matrix({"aws": {}}), tick=3600.0)
    for worker_id in WORKERS:
        registration = Registration(worker_id, "aws", "", 30.0, {}, slots=1)
        await node.awrite(core.register_worker_cmd(registration, time.time()))
    looks: Counter[str] = Counter()  # each time a parked acquire looks for work to plan
    plan_for = control._plan_for

    def counted(state: core.State, worker_id: str, *args: Any, **kwargs: Any) -> Any:
        looks[worker_id] += 1
        return plan_for(state, worker_id, *args, **kwargs)

    control._plan_for = counted  # type: ignore[method-assign]
    acquires = {w: asyncio.create_task(control.acquire(w, 3600.0)) for w in WORKERS}
    deadline = time.monotonic() + 10
    while len(control.waiting) < len(WORKERS):
        assert time.monotonic() < deadline, "the acquires did not park"
        await asyncio.sleep(0.01)
    before = dict(looks)

    await control.submit(noop_manifest("one", ["only"]))
    done, _ = await asyncio.wait(acquires.values(), timeout=10, return_when=asyncio.FIRST_COMPLETED)
    (handed,) = [w for w, task in acquires.items() if task in done]
    (work,) = acquires[handed].result()
    assert work.task_id == "one.only"
    (other,) = set(WORKERS) - {handed}
    await asyncio.sleep(0.05)  # turns of the loop in which a woken acquire would look again
    assert not acquires[other].done()
    assert looks[other] == before[other], "the other worker's acquire was woken for nothing"
    assert other in control.waiting
    acquires[other].cancel()
