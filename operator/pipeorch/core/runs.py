"""Pipeline runs and the task state machine, as pure, deterministic transitions.

Task phases::

    Pending --deps succeeded--> Ready --assign--> Scheduled --renew--> Running
    Running/Scheduled --complete--> Succeeded
    Running/Scheduled --fail (application)--> Retrying (backoff) --assign--> Scheduled ...
                                          \\-> Failed when the retry budget is spent
    Running/Scheduled --fail (infrastructure) / lease expired / worker offline--> Ready
    any non-terminal --pipeline cancelled--> Cancelled;  downstream of a Failed step --> Skipped

Every transition names the attempt it concerns: a completion or failure whose (task, attempt,
worker) is not the current one is stale, ignored and counted, never applied. Infrastructure
failures do not spend the step's retry budget; they are counted apart, and bounded by
``MAX_INFRA_FAILURES`` so that a permanently broken platform still ends the run.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pipeorch.core import dag
from pipeorch.core.spec import PipelineSpec, Step, load_spec

MAX_INFRA_FAILURES = 20
#: After an infrastructure failure a task is retried at once; after further ones it waits
#: 0.5 s, 1 s, 2 s ... up to 10 s, so an outage of the object store does not burn through
#: MAX_INFRA_FAILURES in a second.
INFRA_BACKOFF_SECONDS = 0.5
INFRA_BACKOFF_MAX = 10.0


def infra_delay(failures: int) -> float:
    if failures <= 1:
        return 0.0
    return float(min(INFRA_BACKOFF_MAX, INFRA_BACKOFF_SECONDS * 2 ** (failures - 2)))


class TaskPhase(StrEnum):
    PENDING = "Pending"
    READY = "Ready"
    SCHEDULED = "Scheduled"
    RUNNING = "Running"
    RETRYING = "Retrying"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    CANCELLED = "Cancelled"


class RunPhase(StrEnum):
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


class FailureClass(StrEnum):
    APPLICATION = "application"
    INFRASTRUCTURE = "infrastructure"


TERMINAL = frozenset(
    {TaskPhase.SUCCEEDED, TaskPhase.FAILED, TaskPhase.SKIPPED, TaskPhase.CANCELLED}
)
ACTIVE = frozenset({TaskPhase.SCHEDULED, TaskPhase.RUNNING})


@dataclass(slots=True)
class Artifact:
    name: str
    key: str
    size: int
    sha256: str
    step: str = ""
    region: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "size": self.size,
            "sha256": self.sha256,
            "step": self.step,
            "region": self.region,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Artifact:
        return cls(**data)


@dataclass(slots=True)
class Task:
    task_id: str
    pipeline: str
    step: str
    depends_on: list[str]
    phase: TaskPhase = TaskPhase.PENDING
    attempt: int = 0
    app_failures: int = 0
    infra_failures: int = 0
    worker_id: str = ""
    region: str = ""
    ready_at: float = 0.0
    not_before: float = 0.0
    scheduled_at: float = 0.0
    lease_expires_at: float = 0.0
    started_at: float = 0.0
    #: When the worker that completed the attempt received it, by the worker's clock (0 when
    #: it did not say): ``ready_at`` to this is what scheduling cost the task.
    received_at: float = 0.0
    finished_at: float = 0.0
    message: str = ""
    failure_class: str = ""
    outputs: list[Artifact] = field(default_factory=list)
    log_key: str = ""
    log_tail: str = ""
    estimated_transfer_seconds: float = 0.0

    def is_current(self, attempt: int, worker_id: str) -> bool:
        return self.phase in ACTIVE and self.attempt == attempt and self.worker_id == worker_id

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__slots__}
        data["phase"] = self.phase.value
        data["outputs"] = [a.to_dict() for a in self.outputs]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        data = dict(data)
        data["phase"] = TaskPhase(data["phase"])
        data["outputs"] = [Artifact.from_dict(a) for a in data.get("outputs", [])]
        return cls(**data)


@dataclass(slots=True)
class Run:
    """One submitted pipeline."""

    name: str
    submission_key: str
    spec_json: str
    submitted_at: float
    phase: RunPhase = RunPhase.RUNNING
    finished_at: float = 0.0
    message: str = ""
    steps: list[str] = field(default_factory=list)
    #: Bumped by every change to the run or one of its tasks, so a watcher can wait for news.
    revision: int = 0

    _spec: PipelineSpec | None = field(default=None, repr=False, compare=False)
    _steps: dict[str, Step] = field(default_factory=dict, repr=False, compare=False)

    @property
    def spec(self) -> PipelineSpec:
        if self._spec is None:
            self._spec = load_spec(self.spec_json)
            self._steps = {step.name: step for step in self._spec.steps}
        return self._spec

    def step_spec(self, name: str) -> Step:
        if not self._steps:
            self.spec  # noqa: B018 - parses the spec and indexes its steps
        return self._steps[name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "submission_key": self.submission_key,
            "spec_json": self.spec_json,
            "submitted_at": self.submitted_at,
            "phase": self.phase.value,
            "finished_at": self.finished_at,
            "message": self.message,
            "steps": list(self.steps),
            "revision": self.revision,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Run:
        data = dict(data)
        data["phase"] = RunPhase(data["phase"])
        return cls(**data)


def progress(tasks: Sequence[Task]) -> str:
    """``done/total``: the tasks that succeeded, of all."""
    done = sum(t.phase is TaskPhase.SUCCEEDED for t in tasks)
    return f"{done}/{len(tasks)}"


def started_at(tasks: Sequence[Task]) -> float:
    """When the first of the tasks started (0 before any did)."""
    started = [t.started_at for t in tasks if t.started_at]
    return min(started) if started else 0.0


def task_id(pipeline: str, step: str) -> str:
    """Deterministic, so resubmissions and the Kubernetes Task resources agree on it."""
    return f"{pipeline}.{step}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a completion or failure did."""

    accepted: bool
    reason: str = ""
    will_retry: bool = False


ASSIGNABLE = frozenset({TaskPhase.READY, TaskPhase.RETRYING})


@dataclass(slots=True)
class _Index:
    """Tasks by what the scheduler and the transitions ask for, so that neither scans every task
    ever submitted. Derived from the tasks (never serialized); kept current by ``_set_phase``."""

    #: (ready_at, task id) of every Ready or Retrying task, kept sorted: oldest first.
    queue: list[tuple[float, str]] = field(default_factory=list)
    active_by_worker: dict[str, set[str]] = field(default_factory=dict)
    active_by_run: dict[str, int] = field(default_factory=dict)
    active_by_run_region: dict[tuple[str, str], int] = field(default_factory=dict)
    open_by_run: dict[str, int] = field(default_factory=dict)
    dependents: dict[str, list[str]] = field(default_factory=dict)
    #: Tasks Scheduled on a worker and not yet Running.
    scheduled: int = 0

    def add(self, task: Task) -> None:
        self._count(task, +1)

    def remove(self, task: Task) -> None:
        self._count(task, -1)

    def _count(self, task: Task, delta: int) -> None:
        ref, phase = task.task_id, task.phase
        if phase in ASSIGNABLE:
            key = (task.ready_at, ref)
            if delta > 0:
                bisect.insort(self.queue, key)
            else:
                i = bisect.bisect_left(self.queue, key)
                if i < len(self.queue) and self.queue[i] == key:
                    del self.queue[i]
        elif phase in ACTIVE:
            if phase is TaskPhase.SCHEDULED:
                self.scheduled += delta
            refs = self.active_by_worker.setdefault(task.worker_id, set())
            (refs.add if delta > 0 else refs.discard)(ref)
            _bump(self.active_by_run, task.pipeline, delta)
            _bump(self.active_by_run_region, (task.pipeline, task.region), delta)
        if phase not in TERMINAL:
            _bump(self.open_by_run, task.pipeline, delta)


def _bump(counts: dict[Any, int], key: Any, delta: int) -> None:
    value = counts.get(key, 0) + delta
    if value:
        counts[key] = value
    else:
        counts.pop(key, None)


@dataclass(slots=True)
class Runs:
    runs: dict[str, Run] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    #: Completions and failures ignored because they named a stale or finished attempt.
    stale_reports: int = 0
    #: Failures by class (retries counted apart from the retry budget).
    failures: dict[str, int] = field(default_factory=lambda: {c.value: 0 for c in FailureClass})
    index: _Index = field(default_factory=_Index, repr=False, compare=False)

    # ---- submission and cancellation ----------------------------------------------------

    def submit(self, name: str, key: str, spec_json: str, now: float) -> tuple[Run, bool]:
        """Create the run and its tasks; the same name again creates nothing (False)."""
        existing = self.runs.get(name)
        if existing is not None:
            return existing, False
        run = Run(name=name, submission_key=key, spec_json=spec_json, submitted_at=now)
        spec = run.spec
        order = dag.topological_order({s.name: list(s.dependsOn) for s in spec.steps})
        run.steps = order
        self.runs[name] = run
        by_name = {step.name: step for step in spec.steps}
        for step_name in order:
            step = by_name[step_name]
            task = Task(
                task_id=task_id(name, step_name),
                pipeline=name,
                step=step_name,
                depends_on=list(step.dependsOn),
            )
            if not step.dependsOn:
                task.phase, task.ready_at = TaskPhase.READY, now
            self._add(task)
        return run, True

    def replace(self, name: str, key: str, spec_json: str, now: float) -> tuple[Run, bool]:
        """Submit, replacing a finished run of that name from another submission: a Pipeline
        object deleted and applied again runs again. A running one stays (False)."""
        existing = self.runs.get(name)
        if (
            existing is not None
            and existing.submission_key != key
            and existing.phase is not RunPhase.RUNNING
        ):
            self._remove_run(name)
        return self.submit(name, key, spec_json, now)

    def _remove_run(self, name: str) -> None:
        for task in self.tasks_of(name):
            self.index.remove(task)
            self.index.dependents.pop(task.task_id, None)
            del self.tasks[task.task_id]
        del self.runs[name]

    def cancel(self, name: str, now: float) -> Run | None:
        run = self.runs.get(name)
        if run is None:
            return None
        if run.phase is RunPhase.RUNNING:
            for task in self.tasks_of(name):
                if task.phase not in TERMINAL:
                    self._finish(task, TaskPhase.CANCELLED, now, "pipeline cancelled")
            run.phase, run.finished_at, run.message = RunPhase.CANCELLED, now, "cancelled"
            run.revision += 1
        return run

    # ---- scheduling ---------------------------------------------------------------------

    def assign(
        self, task_ref: str, worker_id: str, region: str, now: float, lease: float, estimate: float
    ) -> bool:
        """Ready (or Retrying past its backoff) -> Scheduled on ``worker_id``."""
        return self._assign(task_ref, TaskPhase.SCHEDULED, worker_id, region, now, lease, estimate)

    def assign_and_start(
        self, task_ref: str, worker_id: str, region: str, now: float, lease: float, estimate: float
    ) -> bool:
        """``assign`` and at once ``start``: Ready (or Retrying) -> Running in one move of the
        index, where the two steps would move it twice (a fan-out's every step takes it). The
        task ends exactly as the two would leave it, its revision moved by two."""
        return self._assign(task_ref, TaskPhase.RUNNING, worker_id, region, now, lease, estimate)

    def _assign(
        self,
        task_ref: str,
        phase: TaskPhase,
        worker_id: str,
        region: str,
        now: float,
        lease: float,
        estimate: float,
    ) -> bool:
        task = self.tasks.get(task_ref)
        if task is None or not self.is_assignable(task, now):
            return False
        self._set_phase(task, phase, worker_id=worker_id, region=region)
        task.attempt += 1
        task.scheduled_at, task.lease_expires_at = now, now + lease
        task.estimated_transfer_seconds = estimate
        task.message = ""
        if phase is TaskPhase.RUNNING:
            self.runs[task.pipeline].revision += 1  # the Scheduled step's, moved past at once
            task.started_at = now
        return True

    def is_assignable(self, task: Task, now: float) -> bool:
        return task.phase in ASSIGNABLE and task.not_before <= now

    def start(self, ref: str, attempt: int, worker_id: str, now: float, lease: float) -> bool:
        """The worker took its scheduled attempt: Scheduled -> Running. Only once."""
        task = self.tasks.get(ref)
        if task is None or task.phase is not TaskPhase.SCHEDULED:
            return False
        if not task.is_current(attempt, worker_id):
            return False
        self._set_phase(task, TaskPhase.RUNNING)
        task.started_at, task.lease_expires_at = now, now + lease
        return True

    def renew(self, worker_id: str, attempts: dict[str, int], now: float, lease: float) -> int:
        """Heartbeat of a worker naming its running attempts: Scheduled -> Running, lease on."""
        renewed = 0
        for ref, attempt in attempts.items():
            task = self.tasks.get(ref)
            if task is None or not task.is_current(attempt, worker_id):
                continue
            if task.phase is TaskPhase.SCHEDULED:
                self._set_phase(task, TaskPhase.RUNNING)
                task.started_at = now
            task.lease_expires_at = now + lease
            renewed += 1
        return renewed

    # ---- results ------------------------------------------------------------------------

    def complete(
        self,
        task_ref: str,
        attempt: int,
        worker_id: str,
        outputs: list[Artifact],
        log_key: str,
        log_tail: str,
        now: float,
        received_at: float = 0.0,
    ) -> Outcome:
        task = self._reported(task_ref, attempt, worker_id)
        if isinstance(task, Outcome):
            return task
        task.outputs, task.log_key, task.log_tail = outputs, log_key, log_tail
        task.received_at = received_at
        if not task.started_at:
            task.started_at = task.scheduled_at
        self._finish(task, TaskPhase.SUCCEEDED, now, "")
        self._unlock_dependents(task, now)
        self._settle_run(task.pipeline, now)
        return Outcome(accepted=True)

    def fail(
        self,
        task_ref: str,
        attempt: int,
        worker_id: str,
        failure: FailureClass,
        message: str,
        log_key: str,
        log_tail: str,
        now: float,
    ) -> Outcome:
        task = self._reported(task_ref, attempt, worker_id)
        if isinstance(task, Outcome):
            return task
        task.log_key, task.log_tail = log_key, log_tail
        return self._record_failure(task, failure, message, now)

    def expire_leases(self, task_refs: tuple[str, ...], now: float) -> list[str]:
        """Requeue the listed tasks whose lease really expired at ``now``."""
        expired = []
        for ref in task_refs:
            task = self.tasks.get(ref)
            if task is not None and task.phase in ACTIVE and task.lease_expires_at <= now:
                self._record_failure(
                    task,
                    FailureClass.INFRASTRUCTURE,
                    f"lease expired: worker {task.worker_id} stopped renewing it",
                    now,
                )
                expired.append(ref)
        return expired

    def requeue_worker(self, worker_id: str, now: float) -> list[str]:
        """The worker went offline: its tasks go back to Ready (infrastructure failure)."""
        lost = self.assigned_to(worker_id)
        for task in lost:
            self._record_failure(task, FailureClass.INFRASTRUCTURE, f"worker {worker_id} lost", now)
        return [t.task_id for t in lost]

    # ---- queries ------------------------------------------------------------------------

    def tasks_of(self, pipeline: str) -> list[Task]:
        run = self.runs.get(pipeline)
        if run is None:
            return []
        return [self.tasks[task_id(pipeline, step)] for step in run.steps]

    def expired_leases(self, now: float) -> tuple[str, ...]:
        refs = (ref for refs in self.index.active_by_worker.values() for ref in refs)
        return tuple(sorted(r for r in refs if self.tasks[r].lease_expires_at <= now))

    def assigned_to(self, worker_id: str) -> list[Task]:
        """The worker's Scheduled and Running tasks, by id."""
        return [self.tasks[r] for r in sorted(self.index.active_by_worker.get(worker_id, ()))]

    def has_work_to_hand(self) -> bool:
        """Whether a worker asking for work could get some: a task Ready or Retrying (past
        its backoff or not), or one Scheduled on a worker that has not taken it yet."""
        return bool(self.index.queue) or self.index.scheduled > 0

    def assignable(self, now: float) -> Iterator[Task]:
        """Ready tasks (and retries past their backoff), oldest first, lazily: a planner that
        fills its last free slot stops reading."""
        # Not a copy of the queue: planning only reads (a copy per plan cost O(ready tasks)).
        for _, ref in self.index.queue:
            task = self.tasks[ref]
            if task.not_before <= now:
                yield task

    def progress(self, pipeline: str) -> tuple[int, int]:
        tasks = self.tasks_of(pipeline)
        return sum(t.phase is TaskPhase.SUCCEEDED for t in tasks), len(tasks)

    # ---- internals ----------------------------------------------------------------------

    def _reported(self, ref: str, attempt: int, worker_id: str) -> Task | Outcome:
        """The task a report is about, or why the report is ignored (and counted)."""
        task = self.tasks.get(ref)
        if task is None:
            self.stale_reports += 1
            return Outcome(accepted=False, reason=f"unknown task {ref!r}")
        if not task.is_current(attempt, worker_id):
            self.stale_reports += 1
            return Outcome(
                accepted=False,
                reason=f"stale report: task {ref} is {task.phase.value} at attempt {task.attempt} "
                f"on {task.worker_id or 'no worker'}, not attempt {attempt} on {worker_id}",
            )
        return task

    def _record_failure(
        self, task: Task, failure: FailureClass, message: str, now: float
    ) -> Outcome:
        self.failures[failure.value] += 1
        task.failure_class, task.message = failure.value, message
        if failure is FailureClass.INFRASTRUCTURE:
            task.infra_failures += 1
            if task.infra_failures <= MAX_INFRA_FAILURES:
                delay = infra_delay(task.infra_failures)
                self._set_phase(task, TaskPhase.READY, ready_at=now, not_before=now + delay)
                return Outcome(accepted=True, will_retry=True)
            message = f"{message} (gave up after {MAX_INFRA_FAILURES} infrastructure failures)"
        else:
            task.app_failures += 1
            policy = self.runs[task.pipeline].step_spec(task.step).retry
            if task.app_failures <= policy.limit:
                at = now + policy.delay(task.app_failures)
                self._set_phase(task, TaskPhase.RETRYING, ready_at=at, not_before=at)
                return Outcome(accepted=True, will_retry=True)
        self._finish(task, TaskPhase.FAILED, now, message)
        self._skip_downstream(task, now)
        self._settle_run(task.pipeline, now)
        return Outcome(accepted=True, will_retry=False)

    def _finish(self, task: Task, phase: TaskPhase, now: float, message: str) -> None:
        self._set_phase(task, phase)
        task.finished_at = now
        if message or phase is TaskPhase.SUCCEEDED:
            task.message = message
        task.lease_expires_at = 0.0

    def unlocked_by(self, done: Task) -> list[Task]:
        """The Pending dependents of ``done`` that its success makes (or made) Ready."""
        unlocked = []
        for ref in self.index.dependents.get(done.task_id, ()):
            task = self.tasks[ref]
            if task.phase is TaskPhase.PENDING and all(
                d == done.step or self.tasks[task_id(done.pipeline, d)].phase is TaskPhase.SUCCEEDED
                for d in task.depends_on
            ):
                unlocked.append(task)
        return unlocked

    def _unlock_dependents(self, done: Task, now: float) -> None:
        for task in self.unlocked_by(done):
            self._set_phase(task, TaskPhase.READY, ready_at=now)

    def _skip_downstream(self, failed: Task, now: float) -> None:
        graph = {t.step: t.depends_on for t in self.tasks_of(failed.pipeline)}
        for step in sorted(dag.descendants(graph, failed.step)):
            task = self.tasks[task_id(failed.pipeline, step)]
            if task.phase not in TERMINAL:
                self._finish(
                    task, TaskPhase.SKIPPED, now, f"not run: upstream step {failed.step!r} failed"
                )

    def _settle_run(self, pipeline: str, now: float) -> None:
        run = self.runs[pipeline]
        if run.phase is not RunPhase.RUNNING or self.index.open_by_run.get(pipeline):
            return
        tasks = self.tasks_of(pipeline)
        run.revision += 1
        failed = [t.step for t in tasks if t.phase is TaskPhase.FAILED]
        run.finished_at = now
        if failed:
            run.phase, run.message = RunPhase.FAILED, f"step {failed[0]!r} failed"
        else:
            run.phase, run.message = RunPhase.SUCCEEDED, ""

    def _set_phase(
        self,
        task: Task,
        phase: TaskPhase,
        *,
        worker_id: str | None = None,
        region: str | None = None,
        ready_at: float | None = None,
        not_before: float | None = None,
    ) -> None:
        """Every change of phase (and of the fields the index sorts or groups by) goes
        through here, keeping the index and the run's revision current."""
        self.index.remove(task)
        task.phase = phase
        if worker_id is not None:
            task.worker_id = worker_id
        if region is not None:
            task.region = region
        if ready_at is not None:
            task.ready_at = ready_at
        if not_before is not None:
            task.not_before = not_before
        self.index.add(task)
        self.runs[task.pipeline].revision += 1

    def _add(self, task: Task) -> None:
        self.tasks[task.task_id] = task
        self.index.add(task)
        for dep in task.depends_on:
            upstream = task_id(task.pipeline, dep)
            self.index.dependents.setdefault(upstream, []).append(task.task_id)

    # ---- persistence --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": {k: r.to_dict() for k, r in sorted(self.runs.items())},
            "tasks": {k: t.to_dict() for k, t in sorted(self.tasks.items())},
            "stale_reports": self.stale_reports,
            "failures": dict(sorted(self.failures.items())),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Runs:
        runs = cls(
            runs={k: Run.from_dict(v) for k, v in data.get("runs", {}).items()},
            stale_reports=int(data.get("stale_reports", 0)),
        )
        for task_data in data.get("tasks", {}).values():
            runs._add(Task.from_dict(task_data))
        runs.failures.update(data.get("failures", {}))
        return runs
