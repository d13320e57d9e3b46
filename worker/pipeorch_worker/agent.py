"""The worker agent: register under a stable id, heartbeat, fail over between replicas."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import grpc

from pipeorch.settings import WorkerSettings
from pipeorch.v1 import pipeorch_pb2 as pb
from pipeorch.v1 import pipeorch_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from pipeorch.v1.pipeorch_pb2_grpc import WorkerServiceAsyncStub

log = logging.getLogger(__name__)
Resp = TypeVar("Resp")

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


class WorkerAgent:
    def __init__(self, settings: WorkerSettings, address: str = "") -> None:
        self._settings = settings
        worker_id = settings.worker_id or stable_worker_id(settings.state_dir, settings.region)
        self.status = AgentStatus(worker_id=worker_id, region=settings.region)
        self._address = address
        self._replicas = list(settings.control_plane)
        self._current = 0
        self._channels: dict[str, grpc.aio.Channel] = {}

    @property
    def worker_id(self) -> str:
        return self.status.worker_id

    # ---- calls with failover --------------------------------------------------------------

    def _stub(self, replica: str) -> WorkerServiceAsyncStub:
        channel = self._channels.get(replica)
        if channel is None:
            channel = self._channels[replica] = grpc.aio.insecure_channel(replica)
        return pb_grpc.WorkerServiceStub(channel)

    async def _call(self, call: Callable[[WorkerServiceAsyncStub, float], Awaitable[Resp]]) -> Resp:
        """Try the current replica, then each other one once; stay on the one that answered."""
        errors = []
        for offset in range(len(self._replicas)):
            index = (self._current + offset) % len(self._replicas)
            replica = self._replicas[index]
            try:
                response = await call(self._stub(replica), self._settings.rpc_timeout)
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
        )
        response = await self._call(lambda stub, t: stub.Register(request, timeout=t))
        self.status.registered = self.status.online = True
        self.status.last_heartbeat_ok = time.time()
        verb = "re-registered" if response.reregistered else "registered"
        log.info("worker %s %s via %s", self.worker_id, verb, response.served_by)
        return response

    async def heartbeat(self) -> pb.HeartbeatResponse:
        request = pb.HeartbeatRequest(worker_id=self.worker_id)
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
        return response

    # ---- main loop ------------------------------------------------------------------------

    async def run(self) -> None:
        await self._until_ok(self.register)
        interval = self._settings.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            await self._until_ok(self.heartbeat, attempts=1)

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
        for channel in self._channels.values():
            await channel.close(grace=None)
