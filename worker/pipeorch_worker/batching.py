"""Completions sent together: whatever finished while the previous call was in flight.

Like a group commit: a lone completion goes at once (a chain pays no wait), and under load
each call carries many, so the per-call cost of gRPC is paid once per batch, not per step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class Batcher(Generic[Req, Resp]):
    def __init__(
        self, send: Callable[[list[Req]], Awaitable[list[Resp]]], max_batch: int = 256
    ) -> None:
        self._send = send
        self._max_batch = max_batch
        self._pending: list[tuple[Req, asyncio.Future[Resp]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def submit(self, request: Req) -> Resp:
        """Send ``request`` with the next batch; its own answer, or the batch's error."""
        future: asyncio.Future[Resp] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                answers = await self._send([request for request, _ in batch])
            except Exception as e:  # every caller decides itself whether to retry
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            for (_, future), answer in zip(batch, answers, strict=True):
                if not future.done():  # its caller may have been cancelled meanwhile
                    future.set_result(answer)
