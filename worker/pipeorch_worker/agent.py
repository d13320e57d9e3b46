"""The worker agent: register under a stable id, heartbeat, fail over between replicas."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import grpc

from pipeorch.core.routing import ReplicaRole, find_leader
from pipeorch.settings import WorkerSettings
from pipeorch.v1 import pipeorch_pb2 as pb
from pipeorch.v1 import pipeorch_pb2_grpc as pb_grpc
from pipeorch_worker.batching import Batcher
from pipeorch_worker.runner import (
    APPLICATION,
    Attempt,
    AttemptResult,
    InputArtifact,
    StepRunner,
)
from pipeorch_worker.store import StorageUnavailable
from pipeorch_worker.stream import WorkStream

if TYPE_CHECKING:
    from pipeorch.v1.pipeorch_pb2_grpc import WorkerServiceAsyncStub

log = logging.getLogger(__name__)
Resp = TypeVar("Resp")

#: Seconds between two searches for the Raft leader (see ``_go_to_leader``).
LEADER_SEARCH_INTERVAL = 5.0

#: Codes after which the same call is worth trying on another replica.
_FAILOVER_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class NoReplicaAnswered(Exception):
    """Every configured control-plane replica failed the call."""


def stable_worker_id(state_dir: Path, region: str) -> str:
    """The id kept in ``state_dir``; created (``<region>-<random>``) on the first start."""
    path = state_dir / "worker-id"
    if path.exists():
        return path.read_text().strip()
    state_dir.mkdir(parents=True, exist_ok=True)
    prefix = re.sub(r"[^a-z0-9-]", "-", region.lower()).strip("-")[:40] or "worker"
    worker_id = f"{prefix}-{secrets.token_hex(4)}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(worker_id + "\n")
    tmp.replace(path)
    return worker_id


@dataclass
class AgentStatus:
    """What /healthz reports."""

    worker_id: str
    region: str
    replica: str | None = None
    registered: bool = False
    online: bool = False
    last_heartbeat_ok: float | None = None
    failovers: int = 0
    errors: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    completed: int = 0
    failed: int = 0


class WorkerAgent:
    def __init__(
        self, settings: WorkerSettings, address: str = "", runner: StepRunner | None = None
    ) -> None:
        self._settings = settings
        self._runner = runner
        self._running: dict[str, Attempt] = {}
        worker_id = settings.worker_id or stable_worker_id(settings.state_dir, settings.region)
        self.status = AgentStatus(worker_id=worker_id, region=settings.region)
        self._address = address
        self._replicas = list(settings.control_plane)
        self._current = 0
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._streams: dict[str, WorkStream] = {}
        #: Replicas that answered the Work stream with UNIMPLEMENTED: unary calls to them.
        self._unary_only: set[str] = set()
        self._completions = Batcher(self._complete_batch)
        self._leader_search_at = -LEADER_SEARCH_INTERVAL
        self._batches_supported = True

    @property
    def runner(self) -> StepRunner | None:
        return self._runner

    @property
    def worker_id(self) -> str:
        return self.status.worker_id

    # ---- calls with failover --------------------------------------------------------------

    def _channel(self, replica: str) -> grpc.aio.Channel:
        channel = self._channels.get(replica)
        if channel is None:
            channel = self._channels[replica] = grpc.aio.insecure_channel(replica)
        return channel

    def _stub(self, replica: str) -> WorkerServiceAsyncStub:
        return pb_grpc.WorkerServiceStub(self._channel(replica))

    async def _go_to_leader(self) -> None:
        """Talk to the Raft leader from now on, if one of our replicas answers as leader: a
        follower would forward every acquire and completion to it (see pipeorch.core.routing).
        Searched at most every LEADER_SEARCH_INTERVAL seconds."""
        now = time.monotonic()
        if len(self._replicas) < 2 or now - self._leader_search_at < LEADER_SEARCH_INTERVAL:
            return
        self._leader_search_at = now
        roles: dict[str, ReplicaRole] = {}

        async def ask(replica: str) -> None:
            stub = pb_grpc.ControlServiceStub(self._channel(replica))
            request = pb.ClusterStateRequest(brief=True)
            try:
                answer = await stub.ClusterState(request, timeout=self._settings.rpc_timeout)
            except grpc.aio.AioRpcError:
                return  # down or cut off: not where the writes should go anyway
            roles[replica] = ReplicaRole(answer.node_id, answer.raft_state, answer.term)

        await asyncio.gather(*(ask(r) for r in self._replicas))
        leader = find_leader(roles)
        if leader is not None and leader != self._replicas[self._current]:
            self._current = self._replicas.index(leader)
            self.status.replica = leader
            log.info("worker %s now talks to %s, the Raft leader", self.worker_id, leader)

    async def _call(self, call: Callable[[WorkerServiceAsyncStub, float], Awaitable[Resp]]) -> Resp:
        """A unary call, with failover (see ``_via``)."""
        return await self._via(lambda replica, timeout: call(self._stub(replica), timeout))

    async def _work_call(
        self,
        field: str,
        request: object,
        unary: Callable[[WorkerServiceAsyncStub, float], Awaitable[Resp]],
        extra_timeout: float = 0.0,
    ) -> Resp:
        """``request`` sent on the replica's Work stream as ``WorkRequest.<field>``, or as the
        ``unary`` call to a replica without the stream; with failover (see ``_via``)."""

        async def on(replica: str, timeout: float) -> Resp:
            timeout += extra_timeout
            if replica not in self._unary_only:
                try:
                    answer = await self._work_stream(replica).request(timeout, **{field: request})
                    response: Resp = getattr(answer, field)
                    return response
                except grpc.aio.AioRpcError as e:
                    if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                        raise
                    log.info("replica %s has no Work stream: unary calls to it", replica)
                    self._unary_only.add(replica)
            return await unary(self._stub(replica), timeout)

        return await self._via(on)

    def _work_stream(self, replica: str) -> WorkStream:
        stream = self._streams.get(replica)
        if stream is None or stream.broken:
            stream = self._streams[replica] = WorkStream(self._stub(replica))
        return stream

    async def _via(self, call: Callable[[str, float], Awaitable[Resp]]) -> Resp:
        """Try the current replica, then each other one once; stay on the one that answered."""
        errors = []
        for offset in range(len(self._replicas)):
            index = (self._current + offset) % len(self._replicas)
            replica = self._replicas[index]
            try:
                response = await call(replica, self._settings.rpc_timeout)
            except grpc.aio.AioRpcError as e:
                if e.code() not in _FAILOVER_CODES:
                    raise
                errors.append(f"{replica}: {e.code().name}: {e.details()}")
                continue
            if index != self._current:
                self.status.failovers += 1
                log.info("worker %s now talks to %s", self.worker_id, replica)
            self._current = index
            self.status.replica = replica
            return response
        self.status.errors = errors[-3:]
        raise NoReplicaAnswered("; ".join(errors))

    async def register(self) -> pb.RegisterResponse:
        request = pb.RegisterRequest(
            worker_id=self.worker_id,
            region=self._settings.region,
            address=self._address,
            heartbeat_interval_seconds=self._settings.heartbeat_interval,
            slots=self._settings.slots if self._runner else 0,
        )
        response = await self._call(lambda stub, t: stub.Register(request, timeout=t))
        self.status.registered = self.status.online = True
        self.status.last_heartbeat_ok = time.time()
        verb = "re-registered" if response.reregistered else "registered"
        log.info("worker %s %s via %s", self.worker_id, verb, response.served_by)
        if response.served_by != response.leader:
            await self._go_to_leader()
        return response

    async def heartbeat(self) -> pb.HeartbeatResponse:
        request = pb.HeartbeatRequest(
            worker_id=self.worker_id,
            running=[
                pb.TaskRef(task_id=a.task_id, attempt=a.attempt) for a in self._running.values()
            ],
        )
        try:
            response = await self._call(lambda stub, t: stub.Heartbeat(request, timeout=t))
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise
            log.warning("control plane does not know worker %s; registering", self.worker_id)
            await self.register()
            return pb.HeartbeatResponse(status=pb.WORKER_STATUS_ONLINE)
        self.status.online = response.status == pb.WORKER_STATUS_ONLINE
        self.status.last_heartbeat_ok = time.time()
        if response.leader and response.served_by != response.leader:
            await self._go_to_leader()
        return response

    # ---- main loop ------------------------------------------------------------------------

    async def run(self) -> None:
        await self._until_ok(self.register)
        loops = [self._heartbeats()]
        if self._runner is not None:
            await self._store_ready(self._runner)
            loops.append(self._work())
        else:
            log.warning(
                "worker %s has no artifact store configured: it takes no tasks", self.worker_id
            )
        await asyncio.gather(*loops)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self._settings.heartbeat_interval)
            await self._until_ok(self.heartbeat, attempts=1)

    # ---- running tasks --------------------------------------------------------------------

    async def _store_ready(self, runner: StepRunner) -> None:
        """Take no task before the object store answers (and has the bucket)."""
        while True:
            try:
                await runner.prepare()
                return
            except StorageUnavailable as e:
                log.warning("worker %s waits for the object store: %s", self.worker_id, e)
                await asyncio.sleep(1.0)

    async def _work(self) -> None:
        """One long poll for the whole worker, asking for as many tasks as it has idle slots;
        each task runs in a slot of its own, which the report may hand the next task."""
        slots: set[asyncio.Task[None]] = set()
        freed = asyncio.Event()

        def slot_done(slot: asyncio.Task[None]) -> None:
            slots.discard(slot)
            freed.set()
            if not slot.cancelled() and slot.exception() is not None:
                log.error("worker %s: a slot failed", self.worker_id, exc_info=slot.exception())

        try:
            while True:
                idle = self._settings.slots - len(slots)
                if idle == 0:
                    freed.clear()
                    await freed.wait()
                    continue
                try:
                    attempts = await self.acquire(idle)
                except (NoReplicaAnswered, grpc.aio.AioRpcError) as e:
                    log.warning("worker %s: acquire failed: %s", self.worker_id, e)
                    await asyncio.sleep(min(self._settings.heartbeat_interval, 1.0))
                    continue
                for attempt in attempts:
                    if attempt.task_id in self._running:
                        continue  # already running here (a retried call answered twice)
                    slot = asyncio.create_task(self._slot(attempt))
                    slots.add(slot)
                    slot.add_done_callback(slot_done)
        finally:
            for slot in list(slots):
                slot.cancel()

    async def _slot(self, attempt: Attempt | None) -> None:
        """Run the attempt, report it, and go on with any task the report handed over."""
        assert self._runner is not None
        while attempt is not None:
            self._running[attempt.task_id] = attempt
            self.status.running = sorted(self._running)
            log.info(
                "worker %s runs %s (attempt %d)", self.worker_id, attempt.task_id, attempt.attempt
            )
            try:
                result = await self._runner.run(attempt)
                handed = await self._report(attempt, result)
            finally:
                self._running.pop(attempt.task_id, None)
                self.status.running = sorted(self._running)
            attempt = handed

    async def acquire(self, count: int = 1) -> list[Attempt]:
        """Up to ``count`` tasks, waiting up to ``acquire_wait`` for the first."""
        wait = self._settings.acquire_wait
        request = pb.AcquireTaskRequest(
            worker_id=self.worker_id, wait_seconds=wait, max_tasks=count
        )
        try:
            response: pb.AcquireTaskResponse = await self._work_call(
                "acquire",
                request,
                lambda stub, t: stub.AcquireTask(request, timeout=t),
                extra_timeout=wait,
            )
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise
            await self.register()
            return []
        if not response.HasField("task"):
            return []
        return [attempt_from_pb(t) for t in (response.task, *response.more_tasks)]

    async def _report(self, attempt: Attempt, result: AttemptResult) -> Attempt | None:
        """Report the outcome until a replica takes it: a lost report would rerun the step.
        A completion asks for the slot's next task, which comes back already started.

        Reports are idempotent (they name the attempt), so repeating one is always safe."""
        ref = pb.TaskRef(task_id=attempt.task_id, attempt=attempt.attempt)
        if result.ok:
            request: pb.CompleteTaskRequest | pb.FailTaskRequest = pb.CompleteTaskRequest(
                worker_id=self.worker_id,
                task=ref,
                outputs=[
                    pb.ArtifactRef(
                        name=o.name,
                        key=o.key,
                        size_bytes=o.size,
                        sha256=o.sha256,
                        region=self._store_region,
                    )
                    for o in result.outputs
                ],
                log_key=result.log_key,
                log_tail=result.log_tail,
                started_at=result.started_at,
                finished_at=result.finished_at,
                take_next=1,
                received_at=attempt.received_at,
            )
        else:
            request = pb.FailTaskRequest(
                worker_id=self.worker_id,
                task=ref,
                failure_class=(
                    pb.FAILURE_CLASS_APPLICATION
                    if result.failure_class == APPLICATION
                    else pb.FAILURE_CLASS_INFRASTRUCTURE
                ),
                message=result.message,
                exit_code=result.exit_code,
                log_key=result.log_key,
                log_tail=result.log_tail,
            )
        while True:
            try:
                accepted, reason, handed = await self._send(request)
                break
            except NoReplicaAnswered as e:
                log.warning(
                    "worker %s: report of %s pending: %s", self.worker_id, attempt.task_id, e
                )
                await asyncio.sleep(min(self._settings.heartbeat_interval, 1.0))
        if result.ok:
            self.status.completed += 1
        else:
            self.status.failed += 1
        verdict = "accepted" if accepted else f"ignored ({reason})"
        outcome = "succeeded" if result.ok else f"failed ({result.message})"
        log.info("worker %s: %s %s; report %s", self.worker_id, attempt.task_id, outcome, verdict)
        return attempt_from_pb(handed[0]) if handed else None

    async def _send(
        self, request: pb.CompleteTaskRequest | pb.FailTaskRequest
    ) -> tuple[bool, str, list[pb.TaskAssignment]]:
        if isinstance(request, pb.CompleteTaskRequest):
            completed = await self._completions.submit(request)
            return completed.accepted, completed.reason, list(completed.next_tasks)
        failed: pb.FailTaskResponse = await self._work_call(
            "fail", request, lambda stub, t: stub.FailTask(request, timeout=t)
        )
        return failed.accepted, failed.reason, []

    async def _complete_batch(
        self, batch: list[pb.CompleteTaskRequest]
    ) -> list[pb.CompleteTaskResponse]:
        if self._batches_supported:
            request = pb.CompleteTasksRequest(completions=batch)
            try:
                response: pb.CompleteTasksResponse = await self._work_call(
                    "complete", request, lambda stub, t: stub.CompleteTasks(request, timeout=t)
                )
                return list(response.results)
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                log.info("control plane predates CompleteTasks: completing one by one")
                self._batches_supported = False
        return [
            await self._call(lambda stub, t, r=r: stub.CompleteTask(r, timeout=t))  # type: ignore[misc]
            for r in batch
        ]

    @property
    def _store_region(self) -> str:
        return self._settings.store_region or self._settings.region

    async def _until_ok(self, step: Callable[[], Awaitable[object]], attempts: int = 0) -> None:
        """Run ``step``; on failure log and retry (forever when ``attempts`` is 0)."""
        tried = 0
        while True:
            tried += 1
            try:
                await step()
                return
            except (NoReplicaAnswered, grpc.aio.AioRpcError) as e:
                if isinstance(e, grpc.aio.AioRpcError) and e.code() not in _FAILOVER_CODES:
                    raise  # the control plane refused the request itself: retrying cannot help
                log.warning("worker %s: %s", self.worker_id, e)
                if attempts and tried >= attempts:
                    return
                await asyncio.sleep(min(self._settings.heartbeat_interval, 1.0))

    async def close(self) -> None:
        for stream in self._streams.values():
            await stream.close()
        for channel in self._channels.values():
            await channel.close(grace=None)


def attempt_from_pb(task: pb.TaskAssignment) -> Attempt:
    return Attempt(
        task_id=task.task_id,
        attempt=task.attempt,
        pipeline=task.pipeline,
        step=task.step,
        run=task.run,
        command=list(task.command),
        params=json.loads(task.params_json or "{}"),
        params_json=task.params_json or "{}",
        inputs=[
            InputArtifact(step=a.step, name=a.name, key=a.key, size=a.size_bytes, sha256=a.sha256)
            for a in task.inputs
        ],
        outputs=list(task.outputs),
        timeout=task.timeout_seconds or 3600.0,
        output_prefix=task.output_prefix,
        received_at=time.time(),
    )
