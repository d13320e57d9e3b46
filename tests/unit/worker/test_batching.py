"""The completion batcher: a lone request goes at once; under load, requests go together."""

from __future__ import annotations

import asyncio

import pytest

from pipeorch_worker.batching import Batcher

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Link:
    """A send function whose calls the test releases one by one."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.release = asyncio.Queue[Exception | None]()

    async def send(self, batch: list[int]) -> list[str]:
        self.calls.append(batch)
        error = await self.release.get()
        if error is not None:
            raise error
        return [f"ok {n}" for n in batch]


async def test_a_lone_request_is_sent_at_once_and_later_ones_wait_for_the_next_call():
    link = Link()
    batcher = Batcher(link.send)
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert link.calls == [[1]]  # no waiting for company
    later = [asyncio.create_task(batcher.submit(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0)
    assert link.calls == [[1]]  # one call in flight at a time
    link.release.put_nowait(None)
    assert await first == "ok 1"
    link.release.put_nowait(None)
    assert await asyncio.gather(*later) == ["ok 2", "ok 3", "ok 4"]
    assert link.calls == [[1], [2, 3, 4]]


async def test_a_failed_call_fails_each_of_its_requests_and_the_next_batch_still_goes():
    link = Link()
    batcher = Batcher(link.send)
    doomed = [asyncio.create_task(batcher.submit(n)) for n in (1, 2)]
    await asyncio.sleep(0)
    after = asyncio.create_task(batcher.submit(3))
    link.release.put_nowait(ConnectionError("replica gone"))
    for task in doomed:
        with pytest.raises(ConnectionError, match="replica gone"):
            await task
    link.release.put_nowait(None)
    assert await after == "ok 3"


async def test_batches_are_capped():
    link = Link()
    batcher = Batcher(link.send, max_batch=2)
    tasks = [asyncio.create_task(batcher.submit(n)) for n in range(5)]
    for _ in range(3):
        link.release.put_nowait(None)
    assert await asyncio.gather(*tasks) == [f"ok {n}" for n in range(5)]
    assert link.calls == [[0, 1], [2, 3], [4]]
