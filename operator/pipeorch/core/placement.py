"""Placement: which ready task goes to which worker, and what moving its inputs will cost.

The cost of running a step in region R is the sum over its inputs of
``RTT(R, region holding the input) + bytes / bandwidth(R, that region)``, from the region
matrix. A pin (``step.region``) wins; ``spread`` placement balances a pipeline's running steps
across regions instead. Ties go to the region with the most idle capacity, then by name, so the
same state always yields the same plan. ``maxParallel`` caps a pipeline's active steps.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeorch.core.runs import Runs, Task, task_id
from pipeorch.core.workers import Worker, WorkerStatus


@dataclass(frozen=True)
class Topology:
    """Round trips and bandwidth between regions (symmetric); defaults for unknown pairs."""

    rtt_ms: dict[frozenset[str], float] = field(default_factory=dict)
    bandwidth_mbps: dict[frozenset[str], float] = field(default_factory=dict)
    local_rtt_ms: float = 0.2
    local_bandwidth_mbps: float = 10_000.0
    default_rtt_ms: float = 100.0
    default_bandwidth_mbps: float = 100.0

    @classmethod
    def from_matrix(
        cls,
        rtt_ms: dict[str, dict[str, float]],
        bandwidth_mbps: dict[str, dict[str, float]] | None = None,
    ) -> Topology:
        """From ``{region: {other: value}}`` tables (a CloudRegion's ``latencyMs``)."""

        def pairs(table: dict[str, dict[str, float]]) -> dict[frozenset[str], float]:
            return {frozenset((a, b)): v for a, row in table.items() for b, v in row.items()}

        return cls(rtt_ms=pairs(rtt_ms), bandwidth_mbps=pairs(bandwidth_mbps or {}))

    def to_plain(self) -> tuple[Any, ...]:
        """Plain data (sorted pairs and numbers) for a replicated command: every replica then
        places with the same topology, whatever its own configuration says."""

        def rows(table: dict[frozenset[str], float]) -> list[tuple[tuple[str, ...], float]]:
            return sorted((tuple(sorted(pair)), value) for pair, value in table.items())

        return (
            rows(self.rtt_ms),
            rows(self.bandwidth_mbps),
            self.local_rtt_ms,
            self.local_bandwidth_mbps,
            self.default_rtt_ms,
            self.default_bandwidth_mbps,
        )

    @classmethod
    def from_plain(cls, plain: tuple[Any, ...]) -> Topology:
        rtt, bandwidth, local_rtt, local_bandwidth, default_rtt, default_bandwidth = plain
        return cls(
            rtt_ms={frozenset(pair): value for pair, value in rtt},
            bandwidth_mbps={frozenset(pair): value for pair, value in bandwidth},
            local_rtt_ms=local_rtt,
            local_bandwidth_mbps=local_bandwidth,
            default_rtt_ms=default_rtt,
            default_bandwidth_mbps=default_bandwidth,
        )

    def rtt(self, a: str, b: str) -> float:
        if a == b:
            return self.local_rtt_ms
        return self.rtt_ms.get(frozenset((a, b)), self.default_rtt_ms)

    def bandwidth(self, a: str, b: str) -> float:
        if a == b:
            return self.local_bandwidth_mbps
        return self.bandwidth_mbps.get(frozenset((a, b)), self.default_bandwidth_mbps)

    def transfer_seconds(self, to_region: str, from_region: str, size_bytes: int) -> float:
        seconds_per_byte = 8 / (self.bandwidth(to_region, from_region) * 1e6)
        return self.rtt(to_region, from_region) / 1000 + size_bytes * seconds_per_byte


@dataclass(frozen=True, slots=True)
class Assignment:
    task_id: str
    worker_id: str
    region: str
    estimated_transfer_seconds: float


def plan(
    runs: Runs,
    workers: Iterable[Worker],
    topology: Topology,
    now: float,
    *,
    after: Task | None = None,
    promised: Collection[str] = (),
    share_of: tuple[str, int] | None = None,
) -> list[Assignment]:
    """Assign as many eligible tasks as there is idle capacity, oldest ready first.

    With ``after``, plan as if that running task had just succeeded: its slot is free, its
    dependents that it unlocks are ready, and its own worker is preferred among equals (so a
    chain of steps stays on the worker that holds the previous step's files in its cache).
    ``promised`` tasks are left out: other plans have them in commits still in flight.
    With ``share_of`` (worker, count), stop once that worker has ``count`` tasks: each task is
    placed in turn and never moved, so the rest of the plan cannot change that worker's share.
    """
    if not runs.index.queue and (after is None or after.task_id not in runs.index.dependents):
        return []  # nothing is ready, and nothing will be: no capacity to count
    capacity = _idle_capacity(runs, workers, released=after)
    free = sum(n for workers_ in capacity.values() for n in workers_.values())
    assignments: list[Assignment] = []
    if not free:
        return assignments
    active = dict(runs.index.active_by_run)
    spread = dict(runs.index.active_by_run_region)
    candidates: Iterable[Task] = runs.assignable(now)
    if after is not None:
        _bump(active, after.pipeline, -1)
        _bump(spread, (after.pipeline, after.region), -1)
        candidates = itertools.chain(candidates, runs.unlocked_by(after))
    prefer = after.worker_id if after is not None else None  # keeps a chain on its worker
    shared = 0
    for task in candidates:
        if task.task_id in promised:
            continue
        if len(assignments) == free:
            break  # every slot is taken: the rest waits for the next round
        run = runs.runs[task.pipeline]
        limit = run.spec.maxParallel
        if limit is not None and active.get(task.pipeline, 0) >= limit:
            continue
        choice = _choose(runs, task, capacity, topology, spread, run.spec.placement, prefer)
        if choice is None:
            continue
        worker, region, estimate = choice
        capacity[region][worker] -= 1
        active[task.pipeline] = active.get(task.pipeline, 0) + 1
        spread[(task.pipeline, region)] = spread.get((task.pipeline, region), 0) + 1
        assignments.append(Assignment(task.task_id, worker, region, estimate))
        if share_of is not None and worker == share_of[0]:
            shared += 1
            if shared == share_of[1]:
                break
    return assignments


def input_estimate(runs: Runs, task: Task, region: str, topology: Topology) -> float:
    """Seconds to bring ``task``'s inputs to ``region``."""
    step = runs.runs[task.pipeline].step_spec(task.step)
    total = 0.0
    for source, name in step.input_refs():
        producer = runs.tasks[task_id(task.pipeline, source)]
        for artifact in producer.outputs:
            if artifact.name == name:
                total += topology.transfer_seconds(region, artifact.region or region, artifact.size)
    return total


def _choose(
    runs: Runs,
    task: Task,
    capacity: dict[str, dict[str, int]],
    topology: Topology,
    spread: dict[tuple[str, str], int],
    placement: str,
    prefer: str | None = None,
) -> tuple[str, str, float] | None:
    pin = runs.runs[task.pipeline].step_spec(task.step).region
    regions = [r for r, ws in capacity.items() if any(n > 0 for n in ws.values())]
    if pin is not None:
        regions = [r for r in regions if r == pin]
    if not regions:
        return None

    def rank(region: str) -> tuple[float, float, int, str]:
        estimate = input_estimate(runs, task, region, topology)
        balance = spread.get((task.pipeline, region), 0) if placement == "spread" else 0
        return (balance, estimate, -sum(capacity[region].values()), region)

    best = min(regions, key=rank)
    workers = capacity[best]
    idle = [w for w, n in workers.items() if n > 0]
    worker = prefer if prefer in idle else min(idle, key=lambda w: (-workers[w], w))
    return worker, best, input_estimate(runs, task, best, topology)


def plan_for(
    worker_id: str,
    runs: Runs,
    workers: Iterable[Worker],
    topology: Topology,
    now: float,
    count: int,
    *,
    after: Task | None = None,
    promised: Collection[str] = (),
) -> list[Assignment]:
    """Up to ``count`` tasks for ``worker_id``: its share of the whole plan, so a worker
    asking for work gets exactly what a central scheduler would have sent it. With ``after``
    (a task of this worker's about to succeed), the tasks to hand over with that completion.
    """
    if count <= 0:
        return []
    planned = plan(
        runs, workers, topology, now, after=after, promised=promised, share_of=(worker_id, count)
    )
    return [a for a in planned if a.worker_id == worker_id]


def _bump(counts: dict[Any, int], key: Any, delta: int) -> None:
    counts[key] = max(0, counts.get(key, 0) + delta)


def _idle_capacity(
    runs: Runs, workers: Iterable[Worker], released: Task | None = None
) -> dict[str, dict[str, int]]:
    busy = runs.index.active_by_worker
    capacity: dict[str, dict[str, int]] = {}
    for worker in workers:
        if worker.status is WorkerStatus.ONLINE:
            running = len(busy.get(worker.worker_id, ()))
            if released is not None and released.worker_id == worker.worker_id:
                running -= 1
            idle = worker.slots - running
            capacity.setdefault(worker.region, {})[worker.worker_id] = max(0, idle)
    return capacity
