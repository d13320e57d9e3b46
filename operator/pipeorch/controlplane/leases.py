"""Leader-only loop: requeue tasks whose lease expired.

There is no central assignment loop: a worker asking for work (AcquireTask, or a completion
that takes the next task) gets its share of the placement plan, assigned and started in one
commit. This loop only takes back what workers stopped renewing.
"""

from __future__ import annotations

import asyncio
import logging
import time

from pipeorch.core import state as core
from pipeorch.errors import Unavailable
from pipeorch.raft.node import RaftNode

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Runs on every replica, acts only while this replica leads."""

    def __init__(self, node: RaftNode, tick: float) -> None:
        self._node = node
        self._tick = tick

    async def run(self) -> None:
        # Leases expire with time, not with changes: a round per tick (at once after a round
        # that requeued something).
        while True:
            try:
                busy = await self.step(time.time())
            except Unavailable as e:
                log.debug("lease round skipped: %s", e)
                busy = False
            except Exception:
                # A bug here must not stop lease expiry for good: log it loudly and go on.
                log.exception("lease round failed")
                busy = False
            if not busy:
                await asyncio.sleep(self._tick)

    async def step(self, now: float) -> bool:
        """One round; True when it requeued something (so the next round runs at once)."""
        if not self._node.is_leader():
            return False
        expired = self._node.read(lambda s: s.runs.expired_leases(now))
        if not expired:
            return False
        requeued = await self._node.awrite(core.expire_leases_cmd(expired, now))
        for ref in requeued:
            log.warning("task %s lease expired: requeued", ref)
        return bool(requeued)
