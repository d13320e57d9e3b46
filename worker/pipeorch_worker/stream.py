"""The worker's end of a Work stream: requests written on one open stream, answered by id.

A message on an open stream costs about half a unary call (no call set-up, no headers), and the
worker sends one per step: its completion, which brings back the slot's next task. Errors come
back as the ``grpc.aio.AioRpcError`` the unary call would have raised, so the agent's failover
and re-registration handle both paths alike.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Any

import grpc

from pipeorch.v1 import pipeorch_pb2 as pb

if TYPE_CHECKING:
    from pipeorch.v1.pipeorch_pb2_grpc import WorkerServiceAsyncStub


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, None)


_CODES = {code.value[0]: code for code in grpc.StatusCode}
_EOF = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc's type stubs


class WorkStream:
    """One replica's Work stream. Broken for good once it fails: every request in flight then
    fails with the stream's error, and the agent opens a new stream for the next one."""

    def __init__(self, stub: WorkerServiceAsyncStub) -> None:
        # Called without a request iterator, the call is written to with ``write``.
        self._call = stub.Work()  # type: ignore[call-arg]
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[pb.WorkResponse]] = {}
        # One write at a time: the call does not queue concurrent writes itself.
        self._write = asyncio.Lock()
        self.error: grpc.aio.AioRpcError | None = None
        self._reader = asyncio.create_task(self._read())

    @property
    def broken(self) -> bool:
        return self.error is not None

    async def request(self, timeout: float, **request: Any) -> pb.WorkResponse:
        """Send ``WorkRequest(**request)`` and wait up to ``timeout`` for its answer."""
        if self.error is not None:
            raise self.error
        request_id = next(self._ids)
        answer: asyncio.Future[pb.WorkResponse] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        try:
            async with asyncio.timeout(timeout):
                async with self._write:
                    await self._send(pb.WorkRequest(id=request_id, **request))
                response = await answer
        except TimeoutError as e:
            raise rpc_error(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer on the work stream in {timeout:g}s"
            ) from e
        finally:
            self._pending.pop(request_id, None)
        if response.error_code:
            raise rpc_error(_CODES[response.error_code], response.error_message)
        return response

    async def _send(self, request: pb.WorkRequest) -> None:
        try:
            await self._call.write(request)
        except (asyncio.InvalidStateError, grpc.aio.UsageError) as e:
            # The call ended meanwhile: its reader has (or will have) the reason.
            await asyncio.wait([self._reader])
            raise self.error or rpc_error(grpc.StatusCode.UNAVAILABLE, str(e)) from e

    async def _read(self) -> None:
        try:
            while (response := await self._call.read()) is not _EOF:
                assert isinstance(response, pb.WorkResponse)
                answer = self._pending.get(response.id)
                if answer is not None and not answer.done():  # else its caller gave up
                    answer.set_result(response)
            error = rpc_error(grpc.StatusCode.UNAVAILABLE, "the replica closed the work stream")
        except grpc.aio.AioRpcError as e:
            error = e
        except asyncio.CancelledError:
            error = rpc_error(grpc.StatusCode.CANCELLED, "the work stream was closed")
        self.error = error
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(error)

    async def close(self) -> None:
        self._call.cancel()
        await asyncio.wait([self._reader])
