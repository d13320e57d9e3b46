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
        self._pending: list[tuple[Command, int, Future[Any]]] = []
        self._inflight: set[_Batch] = set()

    def submit(self, command: Command, size: int) -> Future[Any]:
        """Queue ``command`` (``size`` bytes when pickled) for the next batch."""
        future: Future[Any] = Future()
        with self._lock:
            self._pending.append((command, size, future))
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
            taken = self._take_batch()
            batch = _Batch([c for c, _, _ in taken], [f for _, _, f in taken])
            self._inflight.add(batch)
            self._propose(batch.commands, self._settler(batch))

    def _take_batch(self) -> list[tuple[Command, int, Future[Any]]]:
        """The longest prefix of pending commands within the count and byte limits (at least
        one command, which ``RaftNode`` has already checked against MAX_COMMAND_BYTES)."""
        total = 0
        end = 0
        for end, (_, size, _) in enumerate(self._pending[:MAX_BATCH_COMMANDS], start=1):
            total += size
            if total > MAX_BATCH_BYTES and end > 1:
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
            for future, result in zip(batch.futures, results, strict=True):
                if not future.done():
                    future.set_result(result)
        else:
            failure = self._describe_failure(error)
            for future in batch.futures:
                if not future.done():
                    future.set_exception(failure)
