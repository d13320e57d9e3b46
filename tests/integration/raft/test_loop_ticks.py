"""RaftNode driven by an asyncio event loop (``loop=``), as the control-plane replicas run it:
three nodes on one loop over real sockets, with no Raft thread of their own."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pipeorch.core.state import noop_cmd
from pipeorch.errors import ConfigError, Unavailable
from pipeorch.local.cluster import free_ports
from pipeorch.raft.node import RaftNode
from pipeorch.settings import ControlPlaneSettings

from .conftest import the_leader, three_nodes

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def tick_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if "_autoTickThread" in t.name]


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[dict[str, RaftNode]]:
    group = three_nodes(tmp_path, loop=asyncio.get_running_loop())
    try:
        yield group
    finally:
        for node in group.values():
            node.destroy()


async def leader_of(nodes: dict[str, RaftNode], timeout: float = 20.0) -> RaftNode:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (leader := the_leader(nodes)) is not None:
            return leader
        await asyncio.sleep(0.02)
    raise AssertionError("no leader elected")


async def test_writes_commit_and_apply_everywhere_on_the_loop_thread(nodes) -> None:
    assert tick_threads() == []  # pysyncobj started no thread of its own
    applied_on: set[int] = set()
    for node in nodes.values():
        node.on_apply(lambda: applied_on.add(threading.get_ident()))
    leader = await leader_of(nodes)

    results = await asyncio.gather(*(leader.awrite(noop_cmd(f"w{i}")) for i in range(200)))
    assert results == [f"w{i}" for i in range(200)]
    for i in range(20):  # one at a time: each a round of its own
        assert await leader.awrite(noop_cmd(f"s{i}")) == f"s{i}"

    target = leader.status().commit_index
    deadline = time.monotonic() + 10
    while any(n.status().applied_index < target for n in nodes.values()):
        assert time.monotonic() < deadline, "followers did not apply the writes"
        await asyncio.sleep(0.01)
    assert len({n.status(with_digest=True).digest for n in nodes.values()}) == 1
    assert applied_on == {threading.get_ident()}


async def test_a_future_resolved_on_any_thread_reaches_its_waiter_on_the_loop(
    nodes, caplog
) -> None:
    follow = next(iter(nodes.values()))._ticker.follow
    elsewhere: concurrent.futures.Future[str] = concurrent.futures.Future()
    waiter = follow(elsewhere)
    threading.Thread(target=elsewhere.set_result, args=("from a thread",)).start()
    assert await asyncio.wait_for(waiter, 5) == "from a thread"

    here: concurrent.futures.Future[str] = concurrent.futures.Future()
    waiter = follow(here)
    here.set_exception(Unavailable("no quorum"))
    with pytest.raises(Unavailable, match="no quorum"):
        await waiter

    abandoned: concurrent.futures.Future[str] = concurrent.futures.Future()
    waiter = follow(abandoned)
    waiter.cancel()  # the awaiting side timed out
    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        abandoned.set_result("late")
    assert caplog.records == []  # the relay did not fail on the waiter already done
    cancelled: concurrent.futures.Future[str] = concurrent.futures.Future()
    waiter = follow(cancelled)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter


async def test_on_applied_runs_before_the_writer_resumes(nodes) -> None:
    # What it is for: a coroutine that the callback wakes runs before the writer does (a
    # submission hands its first steps to waiting workers before its own answer is built).
    leader = await leader_of(nodes)
    woken = asyncio.Event()
    order: list[str] = []

    async def woken_by_the_callback() -> None:
        await woken.wait()
        order.append("woken")

    waiter = asyncio.create_task(woken_by_the_callback())
    await asyncio.sleep(0)
    seen: list[tuple[object, int]] = []

    def applied(result: object) -> None:
        seen.append((result, threading.get_ident()))
        woken.set()

    assert await leader.awrite(noop_cmd("handed"), on_applied=applied) == "handed"
    order.append("writer")
    await waiter
    assert order == ["woken", "writer"]
    assert seen == [("handed", threading.get_ident())]  # the result, on the loop's thread


async def test_on_applied_is_not_called_for_a_write_that_failed(nodes) -> None:
    leader = await leader_of(nodes)
    for node in nodes.values():
        if node is not leader:
            node.destroy()
    deadline = time.monotonic() + 10
    while leader.status().is_leader and any(p.connected for p in leader.status().peers):
        assert time.monotonic() < deadline, "the leader still sees its followers"
        await asyncio.sleep(0.02)
    called: list[object] = []
    with pytest.raises(Unavailable):
        await leader.awrite(noop_cmd("lost"), timeout=1.0, on_applied=called.append)
    assert called == []


async def test_a_coroutine_of_another_loop_can_write(nodes) -> None:
    # The operator runs kopf on a loop of its own, in a thread, and submits from there.
    leader = await leader_of(nodes)

    def on_another_loop() -> str:
        async def write() -> str:
            return str(await leader.awrite(noop_cmd("from the operator"), timeout=5))

        return asyncio.run(write())

    assert await asyncio.to_thread(on_another_loop) == "from the operator"


async def test_a_blocking_write_on_the_driving_loop_is_refused(nodes) -> None:
    leader = await leader_of(nodes)
    with pytest.raises(RuntimeError, match="use awrite"):
        leader.write(noop_cmd("x"))
    # From another thread it blocks only that thread, while the loop commits it.
    assert await asyncio.to_thread(leader.write, noop_cmd("y")) == "y"


async def test_a_new_leader_is_elected_when_the_leader_goes(nodes) -> None:
    leader = await leader_of(nodes)
    await leader.awrite(noop_cmd("before"))
    leader.destroy()
    rest = {k: n for k, n in nodes.items() if n is not leader}
    successor = await leader_of(rest)
    assert await successor.awrite(noop_cmd("after")) == "after"


async def test_a_raft_address_in_use_is_a_config_error_naming_it(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    address = f"127.0.0.1:{taken.getsockname()[1]}"
    other = f"127.0.0.1:{free_ports(1)[0]}"
    settings = ControlPlaneSettings(
        node_id="cp-0", members={"cp-0": address, "cp-1": other}, data_dir=tmp_path / "cp-0"
    )
    with pytest.raises(ConfigError, match=f"cannot listen for Raft on {address}"):
        RaftNode(settings, loop=asyncio.get_running_loop())
    taken.close()
