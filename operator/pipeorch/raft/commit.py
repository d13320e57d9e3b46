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


#: Hard limits that keep every log entry far below pysyncobj's chunked-transfer threshold
#: (``appendEntriesBatchSizeBytes``). pysyncobj 0.3.17 splits a larger entry into chunks but
#: picks the last chunk by the command's length instead of the pickled entry's, so a follower
#: can receive two "finish" chunks and fail to apply the entry, forever.
MAX_COMMAND_BYTES = 1024 * 1024
MAX_BATCH_BYTES = 4 * 1024 * 1024
MAX_BATCH_COMMANDS = 1024
#: pysyncobj's ``appendEntriesBatchSizeBytes``: entries at least this large are chunked.
ENTRY_CHUNK_BYTES = 16 * 1024 * 1024


@dataclass(eq=False)
class _Group:
    """Commands that travel in one batch and share one future: a list of their results, or
    (``single``) the one command's result."""

    commands: list[Command]
    size: int
    future: Future[Any]
    single: bool


@dataclass(eq=False)
class _Batch:
    groups: list[_Group]
    commands: list[Command]
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
        self._pending: list[_Group] = []
        self._inflight: set[_Batch] = set()

    def submit(self, command: Command, size: int) -> Future[Any]:
        """Queue ``command`` (``size`` bytes when pickled) for the next batch."""
        return self._queue(_Group([command], size, Future(), single=True))

    def submit_all(self, commands: list[Command], size: int) -> Future[list[Any]]:
        """Queue ``commands`` (``size`` bytes in all) to travel in one batch, in order, with one
        future for their list of results: a caller with many writes at once pays for one
        future and one wake-up, not one each. The group is never split across batches."""
        return self._queue(_Group(list(commands), size, Future(), single=False))

    def _queue(self, group: _Group) -> Future[Any]:
        with self._lock:
            self._pending.append(group)
            self._flush_locked()
        return group.future

    def pending_count(self) -> int:
        with self._lock:
            return sum(len(g.commands) for g in self._pending) + sum(
                len(b.commands) for b in self._inflight
            )

    def _flush_locked(self) -> None:
        now = time.monotonic()
        for batch in [b for b in self._inflight if now - b.proposed_at > self._stuck_after]:
            self._inflight.discard(batch)  # its callers time out on their own
        while self._pending and len(self._inflight) < self._max_inflight:
            taken = self._take_batch()
            batch = _Batch(taken, [c for g in taken for c in g.commands])
            self._inflight.add(batch)
            self._propose(batch.commands, self._settler(batch))

    def _take_batch(self) -> list[_Group]:
        """The longest prefix of pending groups within the command and byte limits (at least
        one group, whose commands ``RaftNode`` has already checked against the limits)."""
        total_bytes = total_commands = 0
        end = 0
        for end, group in enumerate(self._pending, start=1):
            total_bytes += group.size
            total_commands += len(group.commands)
            if (total_bytes > MAX_BATCH_BYTES or total_commands > MAX_BATCH_COMMANDS) and end > 1:
                end -= 1
                break
        taken = self._pending[:end]
        del self._pending[:end]
        return taken

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
            start = 0
            for group in batch.groups:
                end = start + len(group.commands)
                if not group.future.done():
                    group.future.set_result(results[start] if group.single else results[start:end])
                start = end
        else:
            failure = self._describe_failure(error)
            for group in batch.groups:
                if not group.future.done():
                    group.future.set_exception(failure)
