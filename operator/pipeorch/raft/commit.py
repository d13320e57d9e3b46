"""Group commit: one log entry per batch of commands, a batch proposed as soon as there is room.

pysyncobj's batching mode waits for the next heartbeat tick before sending a command (about
100 ms for a lone write); its unbatched mode sends each command at once but pays a round of
messages per command. Grouping in front of the unbatched mode gets both: a lone write is proposed
immediately and commits in one round trip to the nearest follower, and the writes that arrive
while ``max_inflight`` batches are on the wire travel together in the next one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from pipeorch.core.state import Command
from pipeorch.errors import Unavailable

Callback = Callable[[Any, int], None]
Propose = Callable[[list[Command], Callback], None]


@dataclass(eq=False)
class _Batch:
    commands: list[Command]
    futures: list[Future[Any]]
    proposed_at: float = field(default_factory=time.monotonic)
    settled: bool = False


class GroupCommitter:
    """Turns ``submit(command)`` calls into batches proposed through ``propose``.

    ``propose(commands, callback)`` must eventually call ``callback(results, error_code)``
    (error code 0 is success, results is one result per command) or may never call it, when the
    library lost the request; such a batch stops counting against ``max_inflight`` after
    ``stuck_after`` seconds so that one lost message cannot stall every later write.
    """

    def __init__(
        self,
        propose: Propose,
        *,
        max_inflight: int,
        stuck_after: float,
        describe_failure: Callable[[int], Unavailable],
        observe_commit: Callable[[float, int], None] = lambda seconds, size: None,
    ) -> None:
        self._propose = propose
        self._max_inflight = max_inflight
        self._stuck_after = stuck_after
        self._describe_failure = describe_failure
        self._observe_commit = observe_commit
        self._lock = threading.RLock()
        self._pending: list[tuple[Command, Future[Any]]] = []
        self._inflight: set[_Batch] = set()

    def submit(self, command: Command) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            self._pending.append((command, future))
            self._flush_locked()
        return future

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending) + sum(len(b.commands) for b in self._inflight)

    def _flush_locked(self) -> None:
        now = time.monotonic()
        for batch in [b for b in self._inflight if now - b.proposed_at > self._stuck_after]:
            self._inflight.discard(batch)  # its callers time out on their own
        while self._pending and len(self._inflight) < self._max_inflight:
            commands = [command for command, _ in self._pending]
            futures = [future for _, future in self._pending]
            self._pending.clear()
            batch = _Batch(commands, futures)
            self._inflight.add(batch)
            self._propose(commands, self._settler(batch))

    def _settler(self, batch: _Batch) -> Callback:
        def settle(results: Any, error: int) -> None:
            self._settle(batch, results, error)

        return settle

    def _settle(self, batch: _Batch, results: Any, error: int) -> None:
        with self._lock:
            if batch.settled:
                return
            batch.settled = True
            self._inflight.discard(batch)
            if error == 0:
                self._observe_commit(time.monotonic() - batch.proposed_at, len(batch.commands))
            self._flush_locked()
        if error == 0:
            for future, result in zip(batch.futures, results, strict=True):
                if not future.done():
                    future.set_result(result)
        else:
            failure = self._describe_failure(error)
            for future in batch.futures:
                if not future.done():
                    future.set_exception(failure)
