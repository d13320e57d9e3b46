"""ChangeFeed: waiters wake on every notice, whichever thread sends it."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pipeorch.controlplane.service import ChangeFeed

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_notice_on_the_loop_thread_takes_effect_at_once() -> None:
    feed = ChangeFeed(asyncio.get_running_loop())
    seen = feed.version
    waiter = asyncio.create_task(feed.wait(seen, 5))
    await asyncio.sleep(0)
    feed.notify_threadsafe()
    assert feed.version == seen + 1  # no trip through the loop's self-pipe
    await asyncio.wait_for(waiter, 1)


async def test_a_notice_from_another_thread_wakes_the_waiter_through_the_loop() -> None:
    feed = ChangeFeed(asyncio.get_running_loop())
    seen = feed.version
    waiter = asyncio.create_task(feed.wait(seen, 5))
    await asyncio.sleep(0)
    sender = threading.Thread(target=feed.notify_threadsafe)
    sender.start()
    sender.join()
    assert feed.version == seen  # handed to the loop, not applied on the sender's thread
    await asyncio.wait_for(waiter, 1)
    assert feed.version == seen + 1


async def test_a_wait_ends_after_its_timeout_without_news() -> None:
    feed = ChangeFeed(asyncio.get_running_loop())
    await asyncio.wait_for(feed.wait(feed.version, 0.05), 1)


async def test_a_keyed_notice_wakes_only_the_waiters_of_its_key() -> None:
    feed = ChangeFeed(asyncio.get_running_loop())
    seen = feed.version
    mine = asyncio.create_task(feed.wait(seen, 5, key="aws-w0"))
    other = asyncio.create_task(feed.wait(seen, 5, key="aws-w1"))
    await asyncio.sleep(0)
    feed.notify_keys(["aws-w0", "gcp-w9"])  # a key nobody waits for is ignored
    await asyncio.wait_for(mine, 1)
    await asyncio.sleep(0.01)
    assert not other.done()
    feed.notify_threadsafe()  # a notice for all still reaches a keyed waiter
    await asyncio.wait_for(other, 1)
