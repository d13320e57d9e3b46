"""One control-plane replica as a process: Raft node + gRPC + HTTP + leader-only loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

import grpc
import uvicorn

from pipeorch.controlplane.grpc_api import add_services
from pipeorch.controlplane.http_api import create_app
from pipeorch.controlplane.leases import LeaseKeeper
from pipeorch.controlplane.liveness import LivenessMonitor
from pipeorch.controlplane.metrics import Metrics
from pipeorch.controlplane.service import ChangeFeed, ControlPlane
from pipeorch.core.placement import Topology
from pipeorch.errors import ConfigError
from pipeorch.raft.node import RaftNode
from pipeorch.settings import ControlPlaneSettings

log = logging.getLogger(__name__)


async def serve(settings: ControlPlaneSettings) -> None:
    """Run until SIGTERM or SIGINT, then stop the servers and the Raft node cleanly."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # uvicorn captures these while it serves and re-raises them when it returns; this
        # handler then sees them too, so every part shuts down, not only HTTP.
        signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stopping.set))

    metrics = Metrics()
    # Told of every Raft state change, on this loop (the operator follows leadership).
    state_listeners: list[Callable[[str], None]] = []

    def state_changed(state: str) -> None:
        for listener in state_listeners:
            listener(state)

    node = RaftNode(
        settings, observe_commit=metrics.observe_commit, on_state_change=state_changed, loop=loop
    )
    metrics.watch(node)
    feed = ChangeFeed(loop)
    node.on_apply(feed.notify_threadsafe)
    topology = Topology.from_matrix(settings.latency_ms, settings.bandwidth_mbps)
    control = ControlPlane(node, feed, settings.task_lease, topology, settings.scheduler_tick)
    leases = LeaseKeeper(node, settings.scheduler_tick)
    leader_only = [
        asyncio.create_task(LivenessMonitor(node, metrics, settings.liveness_check_period).run())
    ]
    if settings.kubernetes.enabled:
        # Imported only when enabled: kopf and the kubernetes client cost memory and start-up.
        from pipeorch.k8s.leader import LeaderOperator

        # Settled: the mirror cancels the runs whose Pipelines it does not find, so it must not
        # start on a new leader's state before that state holds every run.
        operator = LeaderOperator(settings.kubernetes, control, node.is_settled_leader)
        node.on_apply(operator.on_apply)
        state_listeners.append(lambda _state: operator.wake_threadsafe())
        leader_only.append(asyncio.create_task(operator.supervise()))

    grpc_server = grpc.aio.server()
    add_services(grpc_server, control, metrics, settings.node_id)
    try:
        grpc_server.add_insecure_port(settings.grpc_listen)
    except RuntimeError as e:  # grpc raises when the address cannot be bound
        raise ConfigError(f"cannot listen for gRPC on {settings.grpc_listen}: {e}") from e
    await grpc_server.start()

    host, port = settings.http_listen.rsplit(":", 1)
    http = uvicorn.Server(
        uvicorn.Config(
            create_app(control, metrics, settings.region, settings.store_endpoint),
            host=host,
            port=int(port),
            log_config=None,
            lifespan="off",
            access_log=False,
        )
    )
    scheduling = asyncio.create_task(leases.run())
    http_task = asyncio.create_task(http.serve())
    log.info(
        "control plane %s up: raft %s, grpc %s, http %s",
        settings.node_id,
        settings.raft_address,
        settings.grpc_listen,
        settings.http_listen,
    )
    stop_wait = asyncio.create_task(stopping.wait())
    await asyncio.wait({http_task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)

    log.info("control plane %s stopping", settings.node_id)
    http.should_exit = True
    for task in leader_only:
        task.cancel()
    scheduling.cancel()
    stop_wait.cancel()
    await grpc_server.stop(grace=1.0)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(http_task, scheduling, *leader_only, return_exceptions=True)
    node.destroy()
