"""Placement: pins, input locality, spread, load tie-breaks, capacity and maxParallel."""

from __future__ import annotations

import random

from pipeorch.core.placement import Topology, plan, plan_for
from pipeorch.core.runs import Artifact, Runs, task_id
from pipeorch.core.spec import parse_pipeline, spec_json
from pipeorch.core.workers import Worker, WorkerStatus

TOPOLOGY = Topology.from_matrix(
    {"aws": {"gcp": 50, "azure": 75}, "gcp": {"azure": 125}},
    {"aws": {"gcp": 100, "azure": 100}, "gcp": {"azure": 50}},
)


def worker(worker_id: str, region: str, slots: int = 1, online: bool = True) -> Worker:
    status = WorkerStatus.ONLINE if online else WorkerStatus.OFFLINE
    return Worker(worker_id, region, "", 1.0, 0.0, 0.0, status=status, slots=slots)


def submit(runs: Runs, spec: str, name: str = "p") -> None:
    head = f"apiVersion: pipeorch.dev/v1alpha1\nkind: Pipeline\nmetadata: {{name: {name}}}\n"
    runs.submit(name, "k", spec_json(parse_pipeline(head + "spec:\n" + spec)), 0.0)


def finish(runs: Runs, step: str, region: str, size: int, pipeline: str = "p") -> None:
    ref = task_id(pipeline, step)
    runs.assign(ref, "producer", region, 0.0, 10, 0)
    artifact = Artifact("data", f"k/{step}", size, "x", step=step, region=region)
    runs.complete(ref, runs.tasks[ref].attempt, "producer", [artifact], "", "", 0.0)


WORKERS = [worker("aws-1", "aws"), worker("gcp-1", "gcp"), worker("azure-1", "azure")]


def test_a_step_runs_where_its_inputs_are_cheapest_to_reach():
    runs = Runs()
    submit(
        runs,
        """  steps:
    - {name: a, run: "m:f", outputs: [data]}
    - {name: b, run: "m:f", dependsOn: [a], inputs: [a/data]}
""",
    )
    finish(runs, "a", "gcp", 50_000_000)
    (assignment,) = plan(runs, WORKERS, TOPOLOGY, now=1.0)
    assert (assignment.task_id, assignment.region, assignment.worker_id) == ("p.b", "gcp", "gcp-1")
    assert assignment.estimated_transfer_seconds == TOPOLOGY.transfer_seconds(
        "gcp", "gcp", 50_000_000
    )
    # From aws the same input would cost one 50 ms round trip plus 4 s at 100 Mbit/s.
    assert TOPOLOGY.transfer_seconds("aws", "gcp", 50_000_000) == 0.05 + 4.0


def test_a_pin_wins_over_locality_and_waits_for_its_region():
    runs = Runs()
    submit(
        runs,
        """  steps:
    - {name: a, run: "m:f", outputs: [data]}
    - {name: b, run: "m:f", dependsOn: [a], inputs: [a/data], region: azure}
""",
    )
    finish(runs, "a", "gcp", 10)
    assert [(a.region) for a in plan(runs, WORKERS, TOPOLOGY, 1.0)] == ["azure"]
    busy_azure = [WORKERS[0], WORKERS[1], worker("azure-1", "azure", online=False)]
    assert plan(runs, busy_azure, TOPOLOGY, 1.0) == []


def test_without_inputs_ties_go_to_the_most_idle_region():
    runs = Runs()
    submit(
        runs,
        """  steps:
    - {name: a, run: "m:f"}
""",
    )
    workers = [worker("aws-1", "aws"), worker("gcp-1", "gcp", slots=4)]
    (assignment,) = plan(runs, workers, TOPOLOGY, 1.0)
    assert assignment.worker_id == "gcp-1"


def test_capacity_and_max_parallel_are_honoured():
    runs = Runs()
    steps = "".join(f'    - {{name: s{i}, run: "m:f"}}\n' for i in range(10))
    submit(runs, "  maxParallel: 3\n  steps:\n" + steps)
    workers = [worker("aws-1", "aws", slots=2), worker("gcp-1", "gcp", slots=5)]
    assert len(plan(runs, workers, TOPOLOGY, 1.0)) == 3
    submit(runs, "  steps:\n" + steps, name="q")
    assignments = plan(runs, workers, TOPOLOGY, 1.0)
    assert len(assignments) == 7  # 3 of p, then q fills the rest of the 7 slots
    per_worker = {w: sum(a.worker_id == w for a in assignments) for w in ("aws-1", "gcp-1")}
    assert per_worker == {"aws-1": 2, "gcp-1": 5}


def test_spread_balances_a_pipeline_across_regions():
    runs = Runs()
    steps = "".join(f'    - {{name: s{i}, run: "m:f"}}\n' for i in range(3))
    submit(runs, "  placement: spread\n  steps:\n" + steps)
    workers = [
        worker("aws-1", "aws", slots=3),
        worker("gcp-1", "gcp", slots=3),
        worker("azure-1", "azure", slots=3),
    ]
    assert sorted(a.region for a in plan(runs, workers, TOPOLOGY, 1.0)) == ["aws", "azure", "gcp"]


def test_retrying_tasks_wait_for_their_backoff():
    runs = Runs()
    submit(
        runs,
        """  steps:
    - {name: a, run: "m:f", retry: {limit: 1, backoffSeconds: 30}}
""",
    )
    from pipeorch.core.runs import FailureClass

    runs.assign("p.a", "aws-1", "aws", 0.0, 10, 0)
    runs.fail("p.a", 1, "aws-1", FailureClass.APPLICATION, "boom", "", "", 1.0)
    assert plan(runs, WORKERS, TOPOLOGY, 30.9) == []
    assert [a.task_id for a in plan(runs, WORKERS, TOPOLOGY, 31.0)] == ["p.a"]


def test_a_workers_share_is_exactly_its_part_of_the_whole_plan():
    """plan_for stops planning once the asking worker has its count; the share must be what
    the whole plan gives that worker, over pins, inputs, spread, maxParallel and slots."""
    rng = random.Random(7)
    for _ in range(60):
        runs = Runs()
        regions = ["aws", "gcp", "azure"]
        for p in range(rng.randint(1, 3)):
            lines = []
            for i in range(rng.randint(1, 12)):
                pin = f", region: {rng.choice(regions)}" if rng.random() < 0.2 else ""
                lines.append(f'    - {{name: s{i}, run: "m:f"{pin}}}\n')
            head = f"  maxParallel: {rng.randint(1, 6)}\n" if rng.random() < 0.4 else ""
            placement = "  placement: spread\n" if rng.random() < 0.3 else ""
            submit(runs, head + placement + "  steps:\n" + "".join(lines), name=f"p{p}")
        workers = [
            worker(f"{r}-{n}", r, slots=rng.randint(0, 4))
            for r in regions
            for n in range(rng.randint(0, 2))
        ]
        whole = plan(runs, workers, TOPOLOGY, 1.0)
        for w in workers:
            for count in (1, 2, 5):
                mine = [a for a in whole if a.worker_id == w.worker_id][:count]
                assert plan_for(w.worker_id, runs, workers, TOPOLOGY, 1.0, count) == mine
