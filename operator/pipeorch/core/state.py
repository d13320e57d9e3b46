"""The replicated state machine, as pure data and pure transitions.

The Raft adapter replicates *commands*: ``(name, args)`` tuples whose ``name`` includes a version
(``worker.register/1``). Applying a command is deterministic: the same commands in the same order
give the same state, and the same digest, on every replica. Commands never raise: a command that
cannot apply returns a ``Rejected`` result, because an exception inside the replicated apply loop
would stop the replica from making progress.

A new command is added under a new name; an existing name's behaviour never changes, so an old
journal replays exactly as it was first applied.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeorch.core.workers import Registration, Worker, WorkerStatus

#: Bumped when the shape of ``State.to_dict`` changes; ``from_dict`` migrates older shapes.
STATE_FORMAT = 1

Command = tuple[str, tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A command that was replicated but did not change the state, and why."""

    reason: str


@dataclass(frozen=True, slots=True)
class RegisterResult:
    worker: Worker
    reregistered: bool


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    status: WorkerStatus
    #: True when this heartbeat brought an offline worker back online.
    came_back: bool


@dataclass(slots=True)
class State:
    """Everything the control plane must not lose. Room for pipelines, tasks and leases."""

    workers: dict[str, Worker] = field(default_factory=dict)
    #: Number of command batches applied; equal on replicas that applied the same log prefix.
    revision: int = 0

    # ---- commands ------------------------------------------------------------------------

    def register_worker(self, reg: Registration, now: float) -> RegisterResult:
        existing = self.workers.get(reg.worker_id)
        worker = Worker(
            worker_id=reg.worker_id,
            region=reg.region,
            address=reg.address,
            heartbeat_interval=reg.heartbeat_interval,
            registered_at=existing.registered_at if existing else now,
            last_heartbeat=now,
            status=WorkerStatus.ONLINE,
            labels=dict(reg.labels),
        )
        self.workers[reg.worker_id] = worker
        return RegisterResult(worker=worker, reregistered=existing is not None)

    def heartbeat(self, worker_id: str, now: float) -> HeartbeatResult | Rejected:
        worker = self.workers.get(worker_id)
        if worker is None:
            return Rejected(f"worker {worker_id!r} is not registered")
        came_back = worker.status is WorkerStatus.OFFLINE
        worker.last_heartbeat = max(worker.last_heartbeat, now)
        worker.status = WorkerStatus.ONLINE
        return HeartbeatResult(status=worker.status, came_back=came_back)

    def mark_offline(self, worker_ids: tuple[str, ...], now: float) -> list[str]:
        """Mark the listed workers offline if, at ``now``, they really missed their heartbeats.

        The leader proposes the list from its own view; the check is repeated here so that a
        heartbeat committed in between wins and the command stays idempotent.
        """
        marked = []
        for worker_id in worker_ids:
            worker = self.workers.get(worker_id)
            if worker is not None and worker.is_expired(now):
                worker.status = WorkerStatus.OFFLINE
                marked.append(worker_id)
        return marked

    # ---- queries -------------------------------------------------------------------------

    def expired_workers(self, now: float) -> tuple[str, ...]:
        return tuple(sorted(w.worker_id for w in self.workers.values() if w.is_expired(now)))

    def workers_by_region(self) -> dict[str, dict[str, list[Worker]]]:
        """``{region: {status: [workers]}}``, sorted, for /cluster and the CLI."""
        out: dict[str, dict[str, list[Worker]]] = {}
        for worker in sorted(self.workers.values(), key=lambda w: (w.region, w.worker_id)):
            out.setdefault(worker.region, {}).setdefault(worker.status.value, []).append(worker)
        return out

    # ---- persistence and comparison ------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "revision": self.revision,
            "workers": {k: w.to_dict() for k, w in sorted(self.workers.items())},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> State:
        return cls(
            workers={k: Worker.from_dict(v) for k, v in data.get("workers", {}).items()},
            revision=int(data.get("revision", 0)),
        )

    def digest(self) -> str:
        """A hash of the whole state; replicas at the same revision must agree on it."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# ---- command encoding and dispatch ---------------------------------------------------------


def register_worker_cmd(reg: Registration, now: float) -> Command:
    return (
        "worker.register/1",
        (reg.worker_id, reg.region, reg.address, reg.heartbeat_interval, reg.labels, now),
    )


def heartbeat_cmd(worker_id: str, now: float) -> Command:
    return ("worker.heartbeat/1", (worker_id, now))


def mark_offline_cmd(worker_ids: tuple[str, ...], now: float) -> Command:
    return ("worker.mark_offline/1", (tuple(worker_ids), now))


def noop_cmd(token: str) -> Command:
    """A command that changes nothing: a write barrier, and a probe of commit latency."""
    return ("noop/1", (token,))


def _register(state: State, args: tuple[Any, ...]) -> RegisterResult:
    worker_id, region, address, interval, labels, now = args
    return state.register_worker(Registration(worker_id, region, address, interval, labels), now)


def _heartbeat(state: State, args: tuple[Any, ...]) -> HeartbeatResult | Rejected:
    return state.heartbeat(*args)


def _mark_offline(state: State, args: tuple[Any, ...]) -> list[str]:
    return state.mark_offline(*args)


def _noop(state: State, args: tuple[Any, ...]) -> str:
    return str(args[0])


_HANDLERS: dict[str, Callable[[State, tuple[Any, ...]], Any]] = {
    "worker.register/1": _register,
    "worker.heartbeat/1": _heartbeat,
    "worker.mark_offline/1": _mark_offline,
    "noop/1": _noop,
}


def apply_batch(state: State, commands: list[Command]) -> list[Any]:
    """Apply commands in order; one result per command. Never raises."""
    state.revision += 1
    return [apply_command(state, command) for command in commands]


def apply_command(state: State, command: Command) -> Any:
    name, args = command
    handler = _HANDLERS.get(name)
    if handler is None:
        # A newer replica wrote a command this code does not know; refusing it on every
        # replica alike keeps the replicas equal.
        return Rejected(f"unknown command {name!r} (replica code is older than the log)")
    try:
        return handler(state, args)
    except Exception as e:
        return Rejected(f"{name} failed: {type(e).__name__}: {e}")
