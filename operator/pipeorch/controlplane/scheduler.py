"""Leader-only loop: assign ready tasks to workers, and requeue tasks whose lease expired."""

from __future__ import annotations

import logging
import time

from pipeorch.controlplane.service import ChangeFeed
from pipeorch.core import state as core
from pipeorch.core.placement import Assignment, Topology, plan
from pipeorch.errors import Unavailable
from pipeorch.raft.node import RaftNode

log = logging.getLogger(__name__)


class Scheduler:
    """Runs on every replica, acts only while this replica leads.

    It plans from the state applied here and commits the plan; the apply re-checks every
    assignment (task still ready, worker still online), so a plan made from a moment-old view
    can never double-book a task.
    """

    def __init__(
        self,
        node: RaftNode,
        feed: ChangeFeed,
        topology: Topology,
        lease: float,
        tick: float,
        promised: set[str] | None = None,
    ) -> None:
        self._promised = promised if promised is not None else set()
        self._node = node
        self._feed = feed
        self._topology = topology
        self._lease = lease
        self._tick = tick

    async def run(self) -> None:
        while True:
            seen = self._feed.version
            try:
                busy = await self.step(time.time())
            except Unavailable as e:
                log.debug("scheduling round skipped: %s", e)
                busy = False
            except Exception:
                # A bug here must not stop scheduling for good: log it loudly and go on.
                log.exception("scheduling round failed")
                busy = False
            if not busy:
                # Wake on the next applied change, or after a tick for backoffs and leases.
                await self._feed.wait(seen, self._tick)

    async def step(self, now: float) -> bool:
        """One round; True when it committed something (so the next round runs at once)."""
        if not self._node.is_leader():
            return False
        expired = self._node.read(lambda s: s.runs.expired_leases(now))
        if expired:
            requeued = await self._node.awrite(core.expire_leases_cmd(expired, now))
            for ref in requeued:
                log.warning("task %s lease expired: requeued", ref)
        assignments: list[Assignment] = self._node.read(
            lambda s: plan(s.runs, s.workers.values(), self._topology, now, promised=self._promised)
        )
        if not assignments:
            return bool(expired)
        rows = [
            (a.task_id, a.worker_id, a.region, a.estimated_transfer_seconds) for a in assignments
        ]
        results = await self._node.awrite(core.assign_tasks_cmd(rows, now, self._lease))
        for assignment, ok in zip(assignments, results, strict=True):
            if ok:
                log.debug(
                    "task %s -> %s (%s)",
                    assignment.task_id,
                    assignment.worker_id,
                    assignment.region,
                )
        return True
