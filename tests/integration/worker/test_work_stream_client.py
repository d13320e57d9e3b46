"""The worker's end of the Work stream, over real gRPC against scripted replicas: answers matched
by id whatever their order, errors raised as the unary call would raise them, a broken stream
failing what is in flight and replaced for the next request, and unary calls to a replica that
has no Work stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from pipeorch.settings import WorkerSettings
from pipeorch.v1 import pipeorch_pb2 as pb
from pipeorch.v1 import pipeorch_pb2_grpc as pb_grpc
from pipeorch_worker.agent import WorkerAgent
from pipeorch_worker.stream import WorkStream

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def serving(servicer: pb_grpc.WorkerServiceServicer) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    pb_grpc.add_WorkerServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def fail(message: str) -> pb.FailTaskRequest:
    return pb.FailTaskRequest(worker_id="w1", message=message)


class AnswersBackwards(pb_grpc.WorkerServiceServicer):
    """Answers the first two requests of each stream in reverse order, the third with an error;
    the first stream then breaks."""

    def __init__(self) -> None:
        self.streams = 0

    async def Work(self, requests: AsyncIterator[pb.WorkRequest], context) -> None:
        self.streams += 1
        first, second = await context.read(), await context.read()
        for request in (second, first):
            reply = pb.FailTaskResponse(reason=request.fail.message)
            await context.write(pb.WorkResponse(id=request.id, fail=reply))
        third = await context.read()
        await context.write(
            pb.WorkResponse(
                id=third.id,
                error_code=grpc.StatusCode.NOT_FOUND.value[0],
                error_message="worker 'w1' is not registered",
            )
        )
        if self.streams == 1:
            await context.read()
            await context.abort(grpc.StatusCode.UNAVAILABLE, "replica going away")
        while await context.read() is not grpc.aio.EOF:
            pass


async def test_answers_match_requests_by_id_and_a_broken_stream_fails_what_is_in_flight():
    servicer = AnswersBackwards()
    server, address = await serving(servicer)
    channel = grpc.aio.insecure_channel(address)
    try:
        stream = WorkStream(pb_grpc.WorkerServiceStub(channel))
        answers = await asyncio.gather(
            stream.request(5, fail=fail("one")), stream.request(5, fail=fail("two"))
        )
        assert [a.fail.reason for a in answers] == ["one", "two"]

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stream.request(5, fail=fail("three"))
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        assert refused.value.details() == "worker 'w1' is not registered"
        assert not stream.broken  # an error answer leaves the stream open

        with pytest.raises(grpc.aio.AioRpcError) as broken:
            await stream.request(5, fail=fail("four"))
        assert broken.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "replica going away" in (broken.value.details() or "")
        assert stream.broken
        with pytest.raises(grpc.aio.AioRpcError):
            await stream.request(5, fail=fail("five"))  # broken for good
        assert servicer.streams == 1
        await stream.close()
    finally:
        await channel.close()
        await server.stop(None)


class UnaryOnly(pb_grpc.WorkerServiceServicer):
    """A replica from before the Work stream: the generated base answers it UNIMPLEMENTED."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def AcquireTask(self, request: pb.AcquireTaskRequest, context) -> pb.AcquireTaskResponse:
        self.calls.append("AcquireTask")
        task = pb.TaskAssignment(task_id="p.a", attempt=1, pipeline="p", step="a", run="m:f")
        return pb.AcquireTaskResponse(task=task)

    async def CompleteTasks(self, request: pb.CompleteTasksRequest, context):
        self.calls.append("CompleteTasks")
        accepted = pb.CompleteTaskResponse(accepted=True)
        return pb.CompleteTasksResponse(results=[accepted for _ in request.completions])


async def test_a_replica_without_the_stream_gets_unary_calls(tmp_path):
    servicer = UnaryOnly()
    server, address = await serving(servicer)
    settings = WorkerSettings(
        worker_id="w1", control_plane=[address], state_dir=tmp_path, acquire_wait=0.1
    )
    agent = WorkerAgent(settings)
    try:
        first, second = await agent.acquire(), await agent.acquire()
        assert [a.task_id for a in first + second] == ["p.a", "p.a"]
        done = pb.CompleteTaskRequest(worker_id="w1", task=pb.TaskRef(task_id="p.a", attempt=1))
        (answer,) = await agent._complete_batch([done])
        assert answer.accepted
        # The stream was tried once; after its UNIMPLEMENTED, only unary calls.
        assert servicer.calls == ["AcquireTask", "AcquireTask", "CompleteTasks"]
        assert agent._unary_only == {address}
    finally:
        await agent.close()
        await server.stop(None)
