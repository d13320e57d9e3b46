"""gRPC servicers: parse the request, call the service, map errors to status codes.

Any replica serves every RPC. Writes are proposed through Raft (a follower forwards them to the
leader) and answered once applied on this replica; without a quorum the answer is UNAVAILABLE
and names the last leader this replica knew of.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc

from pipeorch.controlplane import views
from pipeorch.controlplane.metrics import Metrics
from pipeorch.controlplane.service import Completion, ControlPlane
from pipeorch.core import state as core
from pipeorch.core.runs import Outcome
from pipeorch.core.workers import check_worker_id, validate_registration
from pipeorch.errors import Conflict, InvalidInput, NotFound, PipeorchError, Unavailable
from pipeorch.v1 import pipeorch_pb2 as pb
from pipeorch.v1 import pipeorch_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, Context], Awaitable[Resp]]

_CODES: dict[type[PipeorchError], grpc.StatusCode] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Conflict: grpc.StatusCode.ALREADY_EXISTS,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}
#: The longest an AcquireTask long-poll is held.
MAX_ACQUIRE_WAIT = 30.0
#: Tasks one AcquireTask or completion may take at once.
MAX_TAKE_NEXT = 64
#: Completions one CompleteTasks call may carry.
MAX_BATCH = 256


def status_code(error: PipeorchError) -> grpc.StatusCode:
    return next(
        (code for kind, code in _CODES.items() if isinstance(error, kind)),
        grpc.StatusCode.INTERNAL,
    )


def rpc(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Translate the project's errors into gRPC status codes with their messages."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Req, context: Context) -> Resp:
        try:
            return await handler(self, request, context)
        except PipeorchError as e:
            await context.abort(status_code(e), str(e))
            raise AssertionError("unreachable: abort raises") from e

    return wrapper


def _time(field: str, value: float) -> float:
    """A time a worker reports (unix seconds; 0 when it has none). It is kept in the replicated
    state and shown as JSON, where NaN or infinity would break every reader."""
    if not math.isfinite(value) or value < 0:
        raise InvalidInput(field, f"must be unix seconds (or 0), not {value!r}")
    return value


def _ref(request_task: pb.TaskRef) -> tuple[str, int]:
    if not request_task.task_id:
        raise InvalidInput("task.task_id", "is required")
    if request_task.attempt < 1:
        raise InvalidInput("task.attempt", "must be at least 1")
    return request_task.task_id, request_task.attempt


class WorkerService(pb_grpc.WorkerServiceServicer):
    def __init__(self, control: ControlPlane, metrics: Metrics, node_id: str) -> None:
        self._control = control
        self._node = control.node
        self._metrics = metrics
        self._node_id = node_id

    @rpc
    async def Register(self, request: pb.RegisterRequest, context: Context) -> pb.RegisterResponse:
        registration = validate_registration(
            request.worker_id,
            request.region,
            request.address,
            request.heartbeat_interval_seconds,
            dict(request.labels),
            request.slots,
        )
        result = await self._node.awrite(core.register_worker_cmd(registration, time.time()))
        verb = "re-registered" if result.reregistered else "registered"
        log.info("worker %s %s in %s", registration.worker_id, verb, registration.region)
        return pb.RegisterResponse(
            worker=views.worker_pb(result.worker),
            served_by=self._node_id,
            leader=self._node.last_leader() or "",
            reregistered=result.reregistered,
        )

    @rpc
    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: Context
    ) -> pb.HeartbeatResponse:
        check_worker_id(request.worker_id)
        running = {ref.task_id: ref.attempt for ref in request.running}
        cmd = core.heartbeat_cmd(request.worker_id, time.time(), running, self._control.task_lease)
        result = await self._node.awrite(cmd)
        if isinstance(result, core.Rejected):
            raise NotFound(f"{result.reason}: register first")
        if result.came_back:
            region = self._node.read(lambda s: s.workers[request.worker_id].region)
            self._metrics.workers_back_online.labels(region).inc()
            log.info("worker %s is back online", request.worker_id)
        return pb.HeartbeatResponse(
            status=views.STATUS_PB[result.status],
            served_by=self._node_id,
            leader=self._node.last_leader() or "",
        )

    @rpc
    async def AcquireTask(
        self, request: pb.AcquireTaskRequest, context: Context
    ) -> pb.AcquireTaskResponse:
        return await self._acquire(request)

    @rpc
    async def CompleteTask(
        self, request: pb.CompleteTaskRequest, context: Context
    ) -> pb.CompleteTaskResponse:
        (answer,) = await self._complete([request])
        return answer

    @rpc
    async def CompleteTasks(
        self, request: pb.CompleteTasksRequest, context: Context
    ) -> pb.CompleteTasksResponse:
        return await self._complete_all(request)

    @rpc
    async def FailTask(self, request: pb.FailTaskRequest, context: Context) -> pb.FailTaskResponse:
        return await self._fail(request)

    async def Work(  # type: ignore[override]  # grpc.aio also takes a handler that writes
        self, requests: AsyncIterator[pb.WorkRequest], context: Context
    ) -> None:
        """Serve one worker's stream: each request runs on its own (an acquire long-polls while
        completions go on) and is answered under its id when it finishes. When the worker
        closes its side, what it asked is answered before the stream ends; when the stream
        breaks, what is still running is cancelled, as a unary call's handler would be."""
        write = asyncio.Lock()
        running: set[asyncio.Task[None]] = set()

        async def answer(request: pb.WorkRequest) -> None:
            response = await self._work_response(request)
            async with write:
                await context.write(response)

        try:
            while (request := await context.read()) is not grpc.aio.EOF:  # type: ignore[attr-defined]
                task = asyncio.create_task(answer(request))
                running.add(task)
                task.add_done_callback(running.discard)
            if running:
                await asyncio.wait(running)
        finally:
            for task in running:
                task.cancel()

    async def _work_response(self, request: pb.WorkRequest) -> pb.WorkResponse:
        kind = request.WhichOneof("request")
        try:
            if kind == "acquire":
                return pb.WorkResponse(id=request.id, acquire=await self._acquire(request.acquire))
            if kind == "complete":
                completed = await self._complete_all(request.complete)
                return pb.WorkResponse(id=request.id, complete=completed)
            if kind == "fail":
                return pb.WorkResponse(id=request.id, fail=await self._fail(request.fail))
            raise InvalidInput("request", "must be one of acquire, complete, fail")
        except PipeorchError as e:
            code, message = status_code(e), str(e)
        except Exception as e:  # a unary call would end with it too; the stream goes on
            log.exception("work request %d (%s) failed", request.id, kind)
            code, message = grpc.StatusCode.INTERNAL, f"internal error: {e!r}"
        return pb.WorkResponse(id=request.id, error_code=code.value[0], error_message=message)

    async def _acquire(self, request: pb.AcquireTaskRequest) -> pb.AcquireTaskResponse:
        check_worker_id(request.worker_id)
        if not self._node.read(lambda s: request.worker_id in s.workers):
            raise NotFound(f"worker {request.worker_id!r} is not registered: register first")
        wait = min(max(request.wait_seconds, 0.0), MAX_ACQUIRE_WAIT)
        count = min(max(request.max_tasks, 1), MAX_TAKE_NEXT)
        work = await self._control.acquire(request.worker_id, wait, count)
        if not work:
            return pb.AcquireTaskResponse()
        first, *more = (views.assignment_pb(w) for w in work)
        return pb.AcquireTaskResponse(task=first, more_tasks=more)

    async def _complete_all(self, request: pb.CompleteTasksRequest) -> pb.CompleteTasksResponse:
        if len(request.completions) > MAX_BATCH:
            raise InvalidInput("completions", f"at most {MAX_BATCH} per call")
        return pb.CompleteTasksResponse(results=await self._complete(request.completions))

    async def _complete(
        self, requests: Sequence[pb.CompleteTaskRequest]
    ) -> list[pb.CompleteTaskResponse]:
        """All checked before any is applied; then committed together, in one entry."""
        reports = []
        for request in requests:
            check_worker_id(request.worker_id)
            ref, attempt = _ref(request.task)
            step = ref.rsplit(".", 1)[-1]
            reports.append(
                Completion(
                    request.worker_id,
                    ref,
                    attempt,
                    [views.artifact_from_pb(o, step) for o in request.outputs],
                    request.log_key,
                    request.log_tail,
                    min(request.take_next, MAX_TAKE_NEXT),
                    _time("received_at", request.received_at),
                )
            )
        answers = []
        for outcome, work in await self._control.complete(reports):
            self._metrics.count_report("complete", outcome.accepted)
            answers.append(
                pb.CompleteTaskResponse(
                    accepted=outcome.accepted,
                    reason=outcome.reason,
                    next_tasks=[views.assignment_pb(w) for w in work],
                )
            )
        return answers

    async def _fail(self, request: pb.FailTaskRequest) -> pb.FailTaskResponse:
        check_worker_id(request.worker_id)
        ref, attempt = _ref(request.task)
        failure = views.FAILURE_FROM_PB.get(request.failure_class)
        if failure is None:
            raise InvalidInput("failure_class", "must be APPLICATION or INFRASTRUCTURE")
        outcome: Outcome = await self._control.fail(
            request.worker_id,
            ref,
            attempt,
            failure,
            request.message,
            request.log_key,
            request.log_tail,
        )
        self._metrics.count_report("fail", outcome.accepted)
        return pb.FailTaskResponse(
            accepted=outcome.accepted, reason=outcome.reason, will_retry=outcome.will_retry
        )


class ControlService(pb_grpc.ControlServiceServicer):
    def __init__(self, control: ControlPlane) -> None:
        self._control = control
        self._node = control.node

    @rpc
    async def SubmitPipeline(
        self, request: pb.SubmitPipelineRequest, context: Context
    ) -> pb.SubmitPipelineResponse:
        name, created = await self._control.submit(request.manifest, request.submission_key)
        # A wait of 0 answers at once, with the pipeline as submitted.
        status = await self._control.watch(
            name, views.status_pb, request.wait_seconds, until_finished=True
        )
        return pb.SubmitPipelineResponse(pipeline=status, created=created)

    @rpc
    async def GetPipeline(
        self, request: pb.GetPipelineRequest, context: Context
    ) -> pb.PipelineStatus:
        return await self._control.watch(
            request.name,
            views.status_pb,
            request.wait_seconds,
            request.after_revision,
            request.until_finished,
        )

    @rpc
    async def ListPipelines(
        self, request: pb.ListPipelinesRequest, context: Context
    ) -> pb.ListPipelinesResponse:
        return pb.ListPipelinesResponse(pipelines=self._control.render_all(views.status_pb))

    @rpc
    async def ListTasks(
        self, request: pb.ListTasksRequest, context: Context
    ) -> pb.ListTasksResponse:
        if request.pipeline:
            return pb.ListTasksResponse(
                tasks=self._control.render(request.pipeline, views.tasks_pb)
            )
        each = self._control.render_all(views.tasks_pb)
        return pb.ListTasksResponse(tasks=[task for tasks in each for task in tasks])

    @rpc
    async def CancelPipeline(
        self, request: pb.CancelPipelineRequest, context: Context
    ) -> pb.CancelPipelineResponse:
        await self._control.cancel(request.name)
        status = self._control.render(request.name, views.status_pb)
        return pb.CancelPipelineResponse(pipeline=status)

    @rpc
    async def ClusterState(
        self, request: pb.ClusterStateRequest, context: Context
    ) -> pb.ClusterStateResponse:
        if request.brief:
            brief = self._node.status()
            return pb.ClusterStateResponse(
                node_id=brief.node_id,
                raft_state=brief.state,
                leader=brief.leader_id or "",
                term=brief.term,
            )
        status = self._node.status(with_digest=True)
        workers = self._node.read(
            lambda s: [views.worker_pb(w) for _, w in sorted(s.workers.items())]
        )
        return pb.ClusterStateResponse(
            node_id=status.node_id,
            raft_state=status.state,
            leader=status.leader_id or "",
            term=status.term,
            commit_index=status.commit_index,
            applied_index=status.applied_index,
            peers=[
                pb.RaftPeer(
                    node_id=p.node_id,
                    address=p.address,
                    connected=p.connected,
                    match_index=p.match_index,
                )
                for p in status.peers
            ],
            workers=workers,
            state_digest=status.digest,
        )


def add_services(
    server: grpc.aio.Server, control: ControlPlane, metrics: Metrics, node_id: str
) -> None:
    pb_grpc.add_WorkerServiceServicer_to_server(WorkerService(control, metrics, node_id), server)
    pb_grpc.add_ControlServiceServicer_to_server(ControlService(control), server)
