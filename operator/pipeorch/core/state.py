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

from pipeorch.core.placement import Topology, plan_for
from pipeorch.core.runs import Artifact, FailureClass, Outcome, Run, Runs
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
    """Everything the control plane must not lose: workers, pipeline runs and their tasks."""

    workers: dict[str, Worker] = field(default_factory=dict)
    runs: Runs = field(default_factory=Runs)
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
            slots=reg.slots,
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
            "runs": self.runs.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> State:
        return cls(
            workers={k: Worker.from_dict(v) for k, v in data.get("workers", {}).items()},
            revision=int(data.get("revision", 0)),
            runs=Runs.from_dict(data.get("runs", {})),
        )

    def digest(self) -> str:
        """A hash of the whole state; replicas at the same revision must agree on it."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# ---- command encoding and dispatch ---------------------------------------------------------


def register_worker_cmd(reg: Registration, now: float) -> Command:
    return (
        "worker.register/2",
        (
            reg.worker_id,
            reg.region,
            reg.address,
            reg.heartbeat_interval,
            reg.labels,
            reg.slots,
            now,
        ),
    )


def heartbeat_cmd(
    worker_id: str, now: float, running: dict[str, int] | None = None, lease: float = 0.0
) -> Command:
    """A heartbeat that also renews the leases of the attempts the worker names."""
    return ("worker.heartbeat/2", (worker_id, now, dict(running or {}), lease))


def mark_offline_cmd(worker_ids: tuple[str, ...], now: float) -> Command:
    """Mark silent workers offline and send their tasks back to Ready."""
    return ("worker.mark_offline/2", (tuple(worker_ids), now))


def submit_pipeline_cmd(name: str, key: str, spec_json: str, now: float) -> Command:
    return ("pipeline.submit/1", (name, key, spec_json, now))


def submit_and_start_cmd(
    name: str,
    key: str,
    spec_json: str,
    now: float,
    *,
    replace: bool,
    waiting: list[tuple[str, int]],
    topology: tuple[Any, ...],
    lease: float,
) -> Command:
    """Submit (``replace``: or replace) a pipeline, and in the same entry start on each worker
    ``waiting`` for work (worker id, idle slots) its share of the placement plan: a worker whose
    AcquireTask is parked gets the new pipeline's first steps without another commit.
    ``topology`` is ``Topology.to_plain()``, so every replica places alike."""
    args = (name, key, spec_json, now, replace, list(waiting), topology, lease)
    return ("pipeline.submit_start/1", args)


def cancel_pipeline_cmd(name: str, now: float) -> Command:
    return ("pipeline.cancel/1", (name, now))


def assign_and_start_cmd(
    worker_id: str, tasks: list[tuple[str, str, float]], now: float, lease: float
) -> Command:
    """Schedule ``tasks`` (task id, region, estimated transfer seconds) on a worker that asked
    for work, and mark them Running: one commit from Ready to Running."""
    return ("task.assign_start/1", (worker_id, list(tasks), now, lease))


def complete_and_continue_cmd(
    task_ref: str,
    attempt: int,
    worker_id: str,
    outputs: list[dict[str, Any]],
    log_key: str,
    log_tail: str,
    now: float,
    follow_ups: list[tuple[str, str, float]],
    lease: float,
    received_at: float = 0.0,
) -> Command:
    """Complete a task and start ``follow_ups`` (task id, region, estimated transfer seconds)
    on the same worker, in one entry: a step of a chain then costs one commit, not three.
    ``received_at``: when the worker received the attempt, by its clock (0: unknown)."""
    args = (task_ref, attempt, worker_id, outputs, log_key, log_tail, now, follow_ups, lease)
    return ("task.complete/3", (*args, received_at))


def fail_task_cmd(
    task_ref: str,
    attempt: int,
    worker_id: str,
    failure: str,
    message: str,
    log_key: str,
    log_tail: str,
    now: float,
) -> Command:
    return (
        "task.fail/1",
        (task_ref, attempt, worker_id, failure, message, log_key, log_tail, now),
    )


def start_task_cmd(
    task_ref: str, attempt: int, worker_id: str, now: float, lease: float
) -> Command:
    """The worker took the task: Scheduled -> Running."""
    return ("task.start/1", (task_ref, attempt, worker_id, now, lease))


def expire_leases_cmd(task_refs: tuple[str, ...], now: float) -> Command:
    return ("task.expire/1", (tuple(task_refs), now))


def noop_cmd(token: str) -> Command:
    """A command that changes nothing: a write barrier, and a probe of commit latency."""
    return ("noop/1", (token,))


def _register_v1(state: State, args: tuple[Any, ...]) -> RegisterResult:
    worker_id, region, address, interval, labels, now = args
    return state.register_worker(Registration(worker_id, region, address, interval, labels), now)


def _register(state: State, args: tuple[Any, ...]) -> RegisterResult:
    worker_id, region, address, interval, labels, slots, now = args
    reg = Registration(worker_id, region, address, interval, labels, slots)
    return state.register_worker(reg, now)


def _heartbeat_v1(state: State, args: tuple[Any, ...]) -> HeartbeatResult | Rejected:
    return state.heartbeat(*args)


def _heartbeat(state: State, args: tuple[Any, ...]) -> HeartbeatResult | Rejected:
    worker_id, now, running, lease = args
    result = state.heartbeat(worker_id, now)
    if not isinstance(result, Rejected) and running:
        state.runs.renew(worker_id, running, now, lease)
    return result


def _mark_offline_v1(state: State, args: tuple[Any, ...]) -> list[str]:
    return state.mark_offline(*args)


def _mark_offline(state: State, args: tuple[Any, ...]) -> list[str]:
    worker_ids, now = args
    marked = state.mark_offline(worker_ids, now)
    for worker_id in marked:
        state.runs.requeue_worker(worker_id, now)
    return marked


def _submit(state: State, args: tuple[Any, ...]) -> tuple[Run, bool]:
    return state.runs.submit(*args)


def _replace(state: State, args: tuple[Any, ...]) -> tuple[Run, bool]:
    return state.runs.replace(*args)


def _submit_start(state: State, args: tuple[Any, ...]) -> tuple[Run, bool, dict[str, list[str]]]:
    """The submission, then each waiting worker's share of the plan, started (worker id ->
    task ids). Placement runs here, on every replica: it is a function of the state, the
    command's arguments and nothing else."""
    name, key, spec_json, now, replace, waiting, topology, lease = args
    submit = state.runs.replace if replace else state.runs.submit
    run, created = submit(name, key, spec_json, now)
    started: dict[str, list[str]] = {}
    if not created or not waiting:
        return run, created, started
    places = Topology.from_plain(topology)
    for worker_id, count in waiting:
        planned = plan_for(worker_id, state.runs, state.workers.values(), places, now, count)
        tasks = [(a.task_id, a.region, a.estimated_transfer_seconds) for a in planned]
        refs = _assign_start(state, (worker_id, tasks, now, lease))
        if refs:
            started[worker_id] = refs
    return run, created, started


def _cancel(state: State, args: tuple[Any, ...]) -> Run | Rejected:
    name, now = args
    run = state.runs.cancel(name, now)
    return Rejected(f"pipeline {name!r} does not exist") if run is None else run


def _assign(state: State, args: tuple[Any, ...]) -> list[bool]:
    assignments, now, lease = args
    results = []
    for ref, worker_id, region, estimate in assignments:
        worker = state.workers.get(worker_id)
        if worker is None or worker.status is not WorkerStatus.ONLINE:
            results.append(False)
            continue
        results.append(state.runs.assign(ref, worker_id, region, now, lease, estimate))
    return results


def _complete(state: State, args: tuple[Any, ...]) -> Outcome:
    return _record_completion(state, *args)


def _record_completion(
    state: State,
    ref: str,
    attempt: int,
    worker_id: str,
    outputs: list[dict[str, Any]],
    log_key: str,
    log_tail: str,
    now: float,
    received_at: float = 0.0,
) -> Outcome:
    artifacts = [Artifact.from_dict(o) for o in outputs]
    return state.runs.complete(
        ref, attempt, worker_id, artifacts, log_key, log_tail, now, received_at=received_at
    )


def _complete_and_continue_v2(state: State, args: tuple[Any, ...]) -> tuple[Outcome, list[str]]:
    return _complete_and_continue(state, (*args, 0.0))


def _complete_and_continue(state: State, args: tuple[Any, ...]) -> tuple[Outcome, list[str]]:
    """The completion, then each follow-up that is still assignable: Scheduled and at once
    Running on the worker that reported (which is online: it just spoke)."""
    ref, attempt, worker_id, outputs, log_key, log_tail, now, follow_ups, lease, received = args
    outcome = _record_completion(
        state, ref, attempt, worker_id, outputs, log_key, log_tail, now, received
    )
    if not outcome.accepted:
        return outcome, []
    return outcome, _assign_start(state, (worker_id, follow_ups, now, lease))


def _assign_start(state: State, args: tuple[Any, ...]) -> list[str]:
    """Each task that is still assignable: Scheduled and at once Running on the worker (if it
    is online). Returns the ids started."""
    worker_id, tasks, now, lease = args
    worker = state.workers.get(worker_id)
    if worker is None or worker.status is not WorkerStatus.ONLINE:
        return []
    started = []
    for ref, region, estimate in tasks:
        if state.runs.assign_and_start(ref, worker_id, region, now, lease, estimate):
            started.append(ref)
    return started


def _fail(state: State, args: tuple[Any, ...]) -> Outcome:
    ref, attempt, worker_id, failure, message, log_key, log_tail, now = args
    return state.runs.fail(
        ref, attempt, worker_id, FailureClass(failure), message, log_key, log_tail, now
    )


def _start(state: State, args: tuple[Any, ...]) -> bool:
    return state.runs.start(*args)


def _expire(state: State, args: tuple[Any, ...]) -> list[str]:
    return state.runs.expire_leases(*args)


def _noop(state: State, args: tuple[Any, ...]) -> str:
    return str(args[0])


_HANDLERS: dict[str, Callable[[State, tuple[Any, ...]], Any]] = {
    # Superseded versions stay: an old journal replays exactly as it first applied.
    "worker.register/1": _register_v1,
    "worker.register/2": _register,
    "worker.heartbeat/1": _heartbeat_v1,
    "worker.heartbeat/2": _heartbeat,
    "worker.mark_offline/1": _mark_offline_v1,
    "worker.mark_offline/2": _mark_offline,
    "pipeline.submit/1": _submit,
    "pipeline.replace/1": _replace,
    "pipeline.submit_start/1": _submit_start,
    "pipeline.cancel/1": _cancel,
    "task.assign/1": _assign,
    "task.start/1": _start,
    "task.complete/1": _complete,
    "task.complete/2": _complete_and_continue_v2,
    "task.complete/3": _complete_and_continue,
    "task.assign_start/1": _assign_start,
    "task.fail/1": _fail,
    "task.expire/1": _expire,
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
