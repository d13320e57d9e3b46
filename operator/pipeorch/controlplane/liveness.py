"""Leader-only loop that marks workers offline after missed heartbeats."""

from __future__ import annotations

import asyncio
import logging
import time

from pipeorch.controlplane.metrics import Metrics
from pipeorch.core import state as core
from pipeorch.errors import Unavailable
from pipeorch.raft.node import RaftNode

log = logging.getLogger(__name__)


class LivenessMonitor:
    """Every ``period`` seconds, on the leader, commit ``mark_offline`` for silent workers.

    A new leader first waits one full offline window: heartbeats could not commit while there
    was no leader, and a worker must not be declared lost for the control plane's own election.
    """

    def __init__(self, node: RaftNode, metrics: Metrics, period: float) -> None:
        self._node = node
        self._metrics = metrics
        self._period = period
        self._leader_since: float | None = None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._period)
            try:
                await self.check(time.time())
            except Unavailable as e:
                log.debug("liveness check skipped: %s", e)
            except Exception:
                log.exception("liveness check failed")

    async def check(self, now: float) -> list[str]:
        if not self._node.is_leader():
            self._leader_since = None
            return []
        if self._leader_since is None:
            self._leader_since = now
        candidates = self._node.read(lambda s: self._expired(s, now))
        if not candidates:
            return []
        marked: list[str] = await self._node.awrite(core.mark_offline_cmd(candidates, now))
        for worker_id in marked:
            region = self._node.read(lambda s: s.workers[worker_id].region)  # noqa: B023
            self._metrics.workers_marked_offline.labels(region).inc()
            log.warning("worker %s marked offline: no heartbeat for 3 intervals", worker_id)
        return marked

    def _expired(self, state: core.State, now: float) -> tuple[str, ...]:
        assert self._leader_since is not None
        return tuple(
            worker_id
            for worker_id in state.expired_workers(now)
            if now - self._leader_since >= state.workers[worker_id].offline_after
        )
