"""gRPC servicers: parse the request, call the core through the Raft node, map errors to codes.

Any replica serves every RPC. Writes are proposed through Raft (a follower forwards them to the
leader) and answered once applied on this replica; without a quorum the answer is UNAVAILABLE
and names the last leader this replica knew of.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from pipeorch.controlplane.metrics import Metrics
from pipeorch.core import state as core
from pipeorch.core.workers import Worker, WorkerStatus, check_worker_id, validate_registration
from pipeorch.errors import InvalidInput, NotFound, PipeorchError, Unavailable
from pipeorch.raft.node import RaftNode
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
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}
_STATUS_PB = {
    WorkerStatus.ONLINE: pb.WORKER_STATUS_ONLINE,
    WorkerStatus.OFFLINE: pb.WORKER_STATUS_OFFLINE,
}


def rpc(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Translate the project's errors into gRPC status codes with their messages."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Req, context: Context) -> Resp:
        try:
            return await handler(self, request, context)
        except PipeorchError as e:
            code = next(
                (c for kind, c in _CODES.items() if isinstance(e, kind)), grpc.StatusCode.INTERNAL
            )
            await context.abort(code, str(e))
            raise AssertionError("unreachable: abort raises") from e

    return wrapper


def worker_pb(worker: Worker) -> pb.WorkerInfo:
    return pb.WorkerInfo(
        worker_id=worker.worker_id,
        region=worker.region,
        address=worker.address,
        status=_STATUS_PB[worker.status],
        heartbeat_interval_seconds=worker.heartbeat_interval,
        registered_at=worker.registered_at,
        last_heartbeat=worker.last_heartbeat,
        labels=worker.labels,
    )


class WorkerService(pb_grpc.WorkerServiceServicer):
    def __init__(self, node: RaftNode, metrics: Metrics, node_id: str) -> None:
        self._node = node
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
        )
        result = await self._node.awrite(core.register_worker_cmd(registration, time.time()))
        _raise_if_rejected(result)
        verb = "re-registered" if result.reregistered else "registered"
        log.info("worker %s %s in %s", registration.worker_id, verb, registration.region)
        return pb.RegisterResponse(
            worker=worker_pb(result.worker),
            served_by=self._node_id,
            leader=self._node.last_leader() or "",
            reregistered=result.reregistered,
        )

    @rpc
    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: Context
    ) -> pb.HeartbeatResponse:
        check_worker_id(request.worker_id)
        result = await self._node.awrite(core.heartbeat_cmd(request.worker_id, time.time()))
        if isinstance(result, core.Rejected):
            raise NotFound(f"{result.reason}: register first")
        if result.came_back:
            region = self._node.read(lambda s: s.workers[request.worker_id].region)
            self._metrics.workers_back_online.labels(region).inc()
            log.info("worker %s is back online", request.worker_id)
        return pb.HeartbeatResponse(
            status=_STATUS_PB[result.status],
            served_by=self._node_id,
            leader=self._node.last_leader() or "",
        )


class ControlService(pb_grpc.ControlServiceServicer):
    def __init__(self, node: RaftNode) -> None:
        self._node = node

    @rpc
    async def ClusterState(
        self, request: pb.ClusterStateRequest, context: Context
    ) -> pb.ClusterStateResponse:
        status = self._node.status()
        workers = self._node.read(lambda s: [worker_pb(w) for _, w in sorted(s.workers.items())])
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


def _raise_if_rejected(result: object) -> None:
    if isinstance(result, core.Rejected):
        raise InvalidInput("request", result.reason)


def add_services(server: grpc.aio.Server, node: RaftNode, metrics: Metrics, node_id: str) -> None:
    # AcquireTask, CompleteTask, FailTask and the pipeline RPCs keep the generated base's
    # UNIMPLEMENTED answer until the task state machine lands; the stubs mark them abstract.
    worker_service = WorkerService(node, metrics, node_id)  # type: ignore[abstract]
    control_service = ControlService(node)  # type: ignore[abstract]
    pb_grpc.add_WorkerServiceServicer_to_server(worker_service, server)
    pb_grpc.add_ControlServiceServicer_to_server(control_service, server)
