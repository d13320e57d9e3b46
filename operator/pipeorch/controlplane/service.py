"""The control plane's operations, shared by the gRPC and HTTP adapters.

Reads come from the state as applied on this replica and are returned as copies (views), so no
caller ever holds a reference into state that applying Raft entries mutates. Writes go through the
Raft node and are answered once applied here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pipeorch.core import state as core
from pipeorch.core.placement import Topology, plan_for
from pipeorch.core.runs import Artifact, Outcome, Run, RunPhase, Task, TaskPhase, task_id
from pipeorch.core.spec import Step, parse_pipeline, spec_json
from pipeorch.core.workers import WorkerStatus
from pipeorch.errors import Conflict, NotFound
from pipeorch.raft.node import RaftNode

T = TypeVar("T")


@dataclass(frozen=True)
class RunView:
    """A run and its tasks, copied out of the state (see ``copy_view``)."""

    run: Run
    tasks: list[Task]


#: Turns a run and its tasks, as the state holds them, into what a caller keeps. It runs inside
#: a read of the state: it must copy what it keeps (a message, a JSON dict or ``copy_view``),
#: never keep the objects themselves, which applying later entries changes.
Render = Callable[[Run, Sequence[Task]], T]


def copy_view(run: Run, tasks: Sequence[Task]) -> RunView:
    """A view of copies, for callers that hold it across awaits."""
    return RunView(Run.from_dict(run.to_dict()), [_copy_task(t) for t in tasks])


@dataclass(frozen=True)
class Completion:
    """A worker's report that an attempt succeeded, with what it made."""

    worker_id: str
    ref: str
    attempt: int
    outputs: list[dict[str, object]]
    log_key: str = ""
    log_tail: str = ""
    #: Tasks the worker takes with the answer (the slot this attempt freed).
    take_next: int = 0
    #: When the worker received the attempt, by its clock (0: it did not say).
    received_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Work:
    """A task handed to a worker: the attempt, what to run, and where its inputs are.

    The task's few fields are taken rather than a copy of it: a copy of every field costs
    more than a no-op step's whole share of the leader's time."""

    task_id: str
    attempt: int
    pipeline: str
    step_name: str
    lease_expires_at: float
    step: Step
    inputs: list[Artifact]


class ChangeFeed:
    """Wakes asyncio waiters after every applied batch (fed from wherever Raft ticks).

    A waiter may also name a key (a worker's id): ``notify_keys`` then wakes only the waiters
    of those keys, where a change concerns a few of them (a submission handing its first steps
    to some workers) and waking the others would only make them look and wait again."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._event = asyncio.Event()
        self._keyed: dict[str, asyncio.Event] = {}
        self.version = 0

    def notify_threadsafe(self) -> None:
        """Wake the waiters, from any thread: at once on the loop's own (where a replica's
        Raft ticks), else through the loop's self-pipe (the operator's thread submits too)."""
        if _running_loop() is self.loop:
            self._bump()
        else:
            self.loop.call_soon_threadsafe(self._bump)

    def notify_keys(self, keys: Iterable[str]) -> None:
        """Wake only the waiters that named one of ``keys``; on the loop's thread. The version
        stays: a keyed waiter must find its news itself once woken (see ``wait``)."""
        for key in keys:
            event = self._keyed.pop(key, None)
            if event is not None:
                event.set()

    def _bump(self) -> None:
        self.version += 1
        self._event.set()
        self._event = asyncio.Event()
        keyed, self._keyed = self._keyed, {}
        for event in keyed.values():
            event.set()

    async def wait(self, seen: int, timeout: float, key: str | None = None) -> None:
        """Return once the version moved past ``seen``, after ``timeout`` seconds, or (with a
        ``key``) once ``notify_keys`` named it. A keyed notice with no waiter parked is
        dropped, so its sender leaves the news where the waiter looks before it parks."""
        if self.version != seen or timeout <= 0:
            return
        event = self._event if key is None else self._keyed.setdefault(key, asyncio.Event())
        # asyncio.timeout, not wait_for: no task of its own, so a set event resumes the waiter
        # on the loop's next turn.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _copy_task(task: Task) -> Task:
    return Task.from_dict(task.to_dict())


def _render(state: core.State, name: str, render: Render[T]) -> tuple[T] | None:
    run = state.runs.runs.get(name)
    if run is None:
        return None
    return (render(run, state.runs.tasks_of(name)),)


class ControlPlane:
    def __init__(
        self,
        node: RaftNode,
        feed: ChangeFeed,
        task_lease: float,
        topology: Topology,
        tick: float = 0.5,
    ) -> None:
        self.node = node
        self.feed = feed
        #: Wakes waiting acquires, only after changes that can leave a worker something to
        #: take (and when a submission hands them work): other changes would wake them for
        #: nothing.
        self.work = ChangeFeed(feed.loop)
        node.on_apply(self._after_apply)
        self.task_lease = task_lease
        self.topology = topology
        self.tick = tick
        #: Tasks that plans made here put in commits still in flight. Concurrent completions
        #: would otherwise all pick the same oldest ready task, and all but one go without.
        self.promised: set[str] = set()
        #: Workers whose AcquireTask waits on this replica now, with their idle slots: a
        #: submission starts their share of its first steps in its own commit.
        self.waiting: dict[str, int] = {}
        #: Tasks such a submission started for a worker, until an AcquireTask of it takes them
        #: (normally the one that was waiting; else its next one here, else the lease expires).
        self._handed: dict[str, list[str]] = {}

    def _after_apply(self) -> None:
        # Where Raft ticks: a cheap look, then a hand-over to the loop.
        if self.node.read(lambda s: s.runs.has_work_to_hand()):
            self.work.notify_threadsafe()

    # ---- pipelines ------------------------------------------------------------------------

    async def submit(
        self, manifest: str | bytes, key: str = "", replace: bool = False
    ) -> tuple[str, bool]:
        """Validate and submit; the same name twice runs once. A different key is a conflict,
        unless ``replace`` and that run has finished: then this submission replaces it.
        Returns the pipeline's name and whether this submission created it (see ``render``)."""
        pipeline = parse_pipeline(manifest)
        key = key or pipeline.metadata.uid or ""
        cmd = core.submit_and_start_cmd(
            pipeline.name,
            key,
            spec_json(pipeline),
            time.time(),
            replace=replace,
            waiting=sorted(self.waiting.items()),
            topology=self.topology.to_plain(),
            lease=self.task_lease,
        )
        run, created, _ = await self.node.awrite(cmd, on_applied=self._hand_over)
        if not created and key and run.submission_key and run.submission_key != key:
            raise Conflict(
                f"pipeline {pipeline.name!r} already exists from another submission "
                f"(key {run.submission_key!r}); cancel or rename it"
            )
        return pipeline.name, created

    def _hand_over(self, result: object) -> None:
        """Give waiting acquires what a submission started for their workers, as soon as it is
        applied: the workers hear of their new steps before the submitter's coroutine resumes."""
        if not isinstance(result, tuple):
            return  # Rejected: the submission raises it
        _, _, started = result
        if not started:
            return
        if _running_loop() is not self.feed.loop:  # a node that ticks on a thread of its own
            self.feed.loop.call_soon_threadsafe(self._hand_over, result)
            return
        for worker_id, refs in started.items():
            self._handed.setdefault(worker_id, []).extend(refs)
        self.work.notify_keys(started)

    def get(self, name: str) -> RunView:
        return self.render(name, copy_view)

    def render(self, name: str, render: Render[T]) -> T:
        """The pipeline as ``render`` makes it from the state (see ``Render``)."""
        rendered = self.node.read(lambda s: _render(s, name, render))
        if rendered is None:
            raise NotFound(f"pipeline {name!r} does not exist")
        return rendered[0]

    def render_all(self, render: Render[T]) -> list[T]:
        """Every pipeline, by name, as ``render`` makes it."""

        def each(state: core.State) -> list[T]:
            return [r[0] for name in sorted(state.runs.runs) if (r := _render(state, name, render))]

        return self.node.read(each)

    async def watch(
        self,
        name: str,
        render: Render[T],
        wait: float,
        after_revision: int = 0,
        until_finished: bool = False,
    ) -> T:
        """The pipeline once it changed past ``after_revision`` (or finished), or after ``wait``.

        Waiting here, woken by applied changes, spares the replica the renders that a client
        polling in a loop would make it build."""
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            seen = self.feed.version
            news = self.node.read(lambda s: _news(s, name, after_revision, until_finished))
            remaining = deadline - time.monotonic()
            if news or remaining <= 0:
                return self.render(name, render)
            await self.feed.wait(seen, remaining)

    def task(self, ref: str) -> Task:
        task = self.node.read(lambda s: _copy_task(t) if (t := s.runs.tasks.get(ref)) else None)
        if task is None:
            raise NotFound(f"task {ref!r} does not exist")
        return task

    async def cancel(self, name: str) -> None:
        """Cancel the run (see ``render`` for what it came to)."""
        result = await self.node.awrite(core.cancel_pipeline_cmd(name, time.time()))
        if isinstance(result, core.Rejected):
            raise NotFound(result.reason)

    # ---- workers --------------------------------------------------------------------------

    def online_workers(self) -> dict[str, int]:
        """Workers registered and online, by region (a CloudRegion's readyWorkers)."""

        def count(state: core.State) -> dict[str, int]:
            out: dict[str, int] = {}
            for worker in state.workers.values():
                if worker.status is WorkerStatus.ONLINE:
                    out[worker.region] = out.get(worker.region, 0) + 1
            return out

        return self.node.read(count)

    async def acquire(self, worker_id: str, wait: float, count: int = 1) -> list[Work]:
        """Long-poll for up to ``count`` tasks for ``worker_id``: its share of the placement
        plan, assigned and started in one commit (or a task already scheduled on it),
        returned Running. Empty after ``wait`` with nothing to do."""
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            handed = self._take_handed(worker_id, count)
            if handed:
                return handed
            seen = self.work.version
            scheduled = self.node.read(lambda s: _first_scheduled(s, worker_id))
            if scheduled is not None:
                ref, attempt = scheduled
                cmd = core.start_task_cmd(ref, attempt, worker_id, time.time(), self.task_lease)
                if await self.node.awrite(cmd):
                    return self._works([ref])
                continue
            now = time.time()
            plan = self.node.read(
                functools.partial(self._plan_for, worker_id=worker_id, now=now, count=count)
            )
            if plan:
                started = await self._commit_promised(
                    [plan],
                    self.node.awrite(
                        core.assign_and_start_cmd(worker_id, plan, now, self.task_lease)
                    ),
                )
                if started:
                    return self._works(started)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            # Changes wake it; the tick covers retries whose backoff ends with no change.
            self.waiting[worker_id] = count
            try:
                await self.work.wait(seen, min(remaining, self.tick), key=worker_id)
            finally:
                self.waiting.pop(worker_id, None)

    def _take_handed(self, worker_id: str, count: int) -> list[Work]:
        """Up to ``count`` of the tasks a submission started for the worker and that still run
        there (a cancel or an expired lease may have taken one meanwhile)."""
        refs = self._handed.pop(worker_id, None)
        if not refs:
            return []
        current = self.node.read(lambda s: [r for r in refs if _runs_on(s, r, worker_id)])
        if len(current) > count:
            self._handed[worker_id] = current[count:]
        return self._works(current[:count])

    async def complete(self, reports: list[Completion]) -> list[tuple[Outcome, list[Work]]]:
        """Record completions, committed together; each may also start up to its
        ``take_next`` tasks on its worker, placed as the scheduler would place them, returned
        as that worker's next work. One read, one write and one wake-up for the lot."""
        if not reports:
            return []
        now = time.time()
        plans = self.node.read(lambda s: self._plans_after(s, now, reports))
        commands = [
            core.complete_and_continue_cmd(
                r.ref,
                r.attempt,
                r.worker_id,
                r.outputs,
                r.log_key,
                r.log_tail,
                now,
                plan,
                self.task_lease,
                received_at=r.received_at,
            )
            for r, plan in zip(reports, plans, strict=True)
        ]
        results = await self._commit_promised(plans, self.node.awrite_all(commands))
        started_refs = [ref for _, started in results for ref in started]
        works = dict(zip(started_refs, self._works(started_refs), strict=True))
        return [(outcome, [works[ref] for ref in started]) for outcome, started in results]

    def _plans_after(
        self, state: core.State, now: float, reports: list[Completion]
    ) -> list[list[tuple[str, str, float]]]:
        """Each report's follow-ups: planned one after another, each leaving out what the
        ones before it took."""
        promised = set(self.promised)
        plans = []
        for r in reports:
            plan = self._plan_for(
                state, r.worker_id, now, r.take_next, after=(r.ref, r.attempt), promised=promised
            )
            promised.update(ref for ref, _, _ in plan)
            plans.append(plan)
        return plans

    def _plan_for(
        self,
        state: core.State,
        worker_id: str,
        now: float,
        count: int = 1,
        after: tuple[str, int] | None = None,
        promised: set[str] | None = None,
    ) -> list[tuple[str, str, float]]:
        """(task id, region, estimated transfer seconds) for the worker, from its share of the
        plan; ``after`` names its task that is about to succeed (see ``plan_for``)."""
        done = None
        if after is not None:
            done = state.runs.tasks.get(after[0])
            if done is None or not done.is_current(after[1], worker_id):
                return []
        workers = state.workers.values()
        planned = plan_for(
            worker_id,
            state.runs,
            workers,
            self.topology,
            now,
            count,
            after=done,
            promised=self.promised if promised is None else promised,
        )
        return [(a.task_id, a.region, a.estimated_transfer_seconds) for a in planned]

    async def _commit_promised(
        self, plans: list[list[tuple[str, str, float]]], write: Awaitable[T]
    ) -> T:
        """Await ``write`` with the tasks its plans place promised until it applies: concurrent
        plans would otherwise all pick the same oldest ready task, and all but one come back
        empty."""
        promised = {ref for plan in plans for ref, _, _ in plan}
        self.promised |= promised
        try:
            return await write
        finally:
            self.promised -= promised

    def _works(self, refs: list[str]) -> list[Work]:
        """What to hand a worker for each task, built in one read of the state."""
        if not refs:
            return []
        return self.node.read(lambda s: [_work(s, ref) for ref in refs])

    async def fail(
        self,
        worker_id: str,
        ref: str,
        attempt: int,
        failure: str,
        message: str,
        log_key: str,
        log_tail: str,
    ) -> Outcome:
        cmd = core.fail_task_cmd(
            ref, attempt, worker_id, failure, message, log_key, log_tail, time.time()
        )
        outcome: Outcome = await self.node.awrite(cmd)
        return outcome


def _news(state: core.State, name: str, after_revision: int, until_finished: bool) -> bool:
    run = state.runs.runs.get(name)
    if run is None:
        return True  # answered at once, as NotFound
    if until_finished:
        return run.phase is not RunPhase.RUNNING
    return run.revision > after_revision


def _runs_on(state: core.State, ref: str, worker_id: str) -> bool:
    task = state.runs.tasks.get(ref)
    return task is not None and task.phase is TaskPhase.RUNNING and task.worker_id == worker_id


def _first_scheduled(state: core.State, worker_id: str) -> tuple[str, int] | None:
    for task in state.runs.assigned_to(worker_id):
        if task.phase is TaskPhase.SCHEDULED:
            return task.task_id, task.attempt
    return None


def _work(state: core.State, ref: str) -> Work:
    task = state.runs.tasks[ref]
    step = state.runs.runs[task.pipeline].step_spec(task.step)
    inputs = []
    for source, name in step.input_refs():
        producer = state.runs.tasks[task_id(task.pipeline, source)]
        inputs += [Artifact.from_dict(a.to_dict()) for a in producer.outputs if a.name == name]
    return Work(
        task.task_id, task.attempt, task.pipeline, task.step, task.lease_expires_at, step, inputs
    )
