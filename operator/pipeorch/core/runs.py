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

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pipeorch.core import dag
from pipeorch.core.spec import PipelineSpec, Step

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

    _spec: PipelineSpec | None = field(default=None, repr=False, compare=False)
    _steps: dict[str, Step] = field(default_factory=dict, repr=False, compare=False)

    @property
    def spec(self) -> PipelineSpec:
        if self._spec is None:
            self._spec = PipelineSpec.model_validate(json.loads(self.spec_json))
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
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Run:
        data = dict(data)
        data["phase"] = RunPhase(data["phase"])
        return cls(**data)


def task_id(pipeline: str, step: str) -> str:
    """Deterministic, so resubmissions and the Kubernetes Task resources agree on it."""
    return f"{pipeline}.{step}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a completion or failure did."""

    accepted: bool
    reason: str = ""
    will_retry: bool = False


@dataclass(slots=True)
class Runs:
    runs: dict[str, Run] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    #: Completions and failures ignored because they named a stale or finished attempt.
    stale_reports: int = 0
    #: Failures by class (retries counted apart from the retry budget).
    failures: dict[str, int] = field(default_factory=lambda: {c.value: 0 for c in FailureClass})

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
        for step_name in order:
            step = spec.step(step_name)
            task = Task(
                task_id=task_id(name, step_name),
                pipeline=name,
                step=step_name,
                depends_on=list(step.dependsOn),
            )
            if not step.dependsOn:
                task.phase, task.ready_at = TaskPhase.READY, now
            self.tasks[task.task_id] = task
        return run, True

    def cancel(self, name: str, now: float) -> Run | None:
        run = self.runs.get(name)
        if run is None:
            return None
        if run.phase is RunPhase.RUNNING:
            for task in self.tasks_of(name):
                if task.phase not in TERMINAL:
                    self._finish(task, TaskPhase.CANCELLED, now, "pipeline cancelled")
            run.phase, run.finished_at, run.message = RunPhase.CANCELLED, now, "cancelled"
        return run

    # ---- scheduling ---------------------------------------------------------------------

    def assign(
        self, task_ref: str, worker_id: str, region: str, now: float, lease: float, estimate: float
    ) -> bool:
        """Ready (or Retrying past its backoff) -> Scheduled on ``worker_id``."""
        task = self.tasks.get(task_ref)
        if task is None or not self.is_assignable(task, now):
            return False
        task.phase = TaskPhase.SCHEDULED
        task.attempt += 1
        task.worker_id, task.region = worker_id, region
        task.scheduled_at, task.lease_expires_at = now, now + lease
        task.estimated_transfer_seconds = estimate
        task.message = ""
        return True

    def is_assignable(self, task: Task, now: float) -> bool:
        return task.phase in (TaskPhase.READY, TaskPhase.RETRYING) and task.not_before <= now

    def start(self, ref: str, attempt: int, worker_id: str, now: float, lease: float) -> bool:
        """The worker took its scheduled attempt: Scheduled -> Running. Only once."""
        task = self.tasks.get(ref)
        if task is None or task.phase is not TaskPhase.SCHEDULED:
            return False
        if not task.is_current(attempt, worker_id):
            return False
        task.phase, task.started_at, task.lease_expires_at = TaskPhase.RUNNING, now, now + lease
        return True

    def renew(self, worker_id: str, attempts: dict[str, int], now: float, lease: float) -> int:
        """Heartbeat of a worker naming its running attempts: Scheduled -> Running, lease on."""
        renewed = 0
        for ref, attempt in attempts.items():
            task = self.tasks.get(ref)
            if task is None or not task.is_current(attempt, worker_id):
                continue
            if task.phase is TaskPhase.SCHEDULED:
                task.phase, task.started_at = TaskPhase.RUNNING, now
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
    ) -> Outcome:
        task = self._reported(task_ref, attempt, worker_id)
        if isinstance(task, Outcome):
            return task
        task.outputs, task.log_key, task.log_tail = outputs, log_key, log_tail
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
        lost = [t for t in self.tasks.values() if t.phase in ACTIVE and t.worker_id == worker_id]
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
        return tuple(
            sorted(
                t.task_id
                for t in self.tasks.values()
                if t.phase in ACTIVE and t.lease_expires_at <= now
            )
        )

    def assigned_to(self, worker_id: str) -> list[Task]:
        return sorted(
            (t for t in self.tasks.values() if t.phase in ACTIVE and t.worker_id == worker_id),
            key=lambda t: t.task_id,
        )

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
                task.phase, task.ready_at = TaskPhase.READY, now
                task.not_before = now + infra_delay(task.infra_failures)
                return Outcome(accepted=True, will_retry=True)
            message = f"{message} (gave up after {MAX_INFRA_FAILURES} infrastructure failures)"
        else:
            task.app_failures += 1
            policy = self.runs[task.pipeline].step_spec(task.step).retry
            if task.app_failures <= policy.limit:
                task.phase = TaskPhase.RETRYING
                task.ready_at = task.not_before = now + policy.delay(task.app_failures)
                return Outcome(accepted=True, will_retry=True)
        self._finish(task, TaskPhase.FAILED, now, message)
        self._skip_downstream(task, now)
        self._settle_run(task.pipeline, now)
        return Outcome(accepted=True, will_retry=False)

    def _finish(self, task: Task, phase: TaskPhase, now: float, message: str) -> None:
        task.phase, task.finished_at = phase, now
        if message or phase is TaskPhase.SUCCEEDED:
            task.message = message
        task.lease_expires_at = 0.0

    def _unlock_dependents(self, done: Task, now: float) -> None:
        for task in self.tasks_of(done.pipeline):
            if task.phase is TaskPhase.PENDING and done.step in task.depends_on:
                deps = [self.tasks[task_id(done.pipeline, d)] for d in task.depends_on]
                if all(d.phase is TaskPhase.SUCCEEDED for d in deps):
                    task.phase, task.ready_at = TaskPhase.READY, now

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
        if run.phase is not RunPhase.RUNNING:
            return
        tasks = self.tasks_of(pipeline)
        if not all(t.phase in TERMINAL for t in tasks):
            return
        failed = [t.step for t in tasks if t.phase is TaskPhase.FAILED]
        run.finished_at = now
        if failed:
            run.phase, run.message = RunPhase.FAILED, f"step {failed[0]!r} failed"
        else:
            run.phase, run.message = RunPhase.SUCCEEDED, ""

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
            tasks={k: Task.from_dict(v) for k, v in data.get("tasks", {}).items()},
            stale_reports=int(data.get("stale_reports", 0)),
        )
        runs.failures.update(data.get("failures", {}))
        return runs
