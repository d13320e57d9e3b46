"""Work handed to a worker in the commit that frees its slot: planning and the commands."""

from __future__ import annotations

from pipeorch.core import state as core
from pipeorch.core.placement import Topology, plan_for
from pipeorch.core.runs import TaskPhase
from pipeorch.core.spec import parse_pipeline, spec_json
from pipeorch.core.workers import Registration

LEASE = 10.0
TOPOLOGY = Topology.from_matrix({"aws": {"gcp": 50}})


def new_state(slots: int = 2) -> core.State:
    state = core.State()
    for worker_id, region in (("aws-1", "aws"), ("aws-2", "aws"), ("gcp-1", "gcp")):
        reg = Registration(worker_id, region, "", 1.0, {}, slots)
        core.apply_command(state, core.register_worker_cmd(reg, 0.0))
    return state


def submit(state: core.State, steps: str, name: str = "p") -> None:
    head = f"apiVersion: pipeorch.dev/v1alpha1\nkind: Pipeline\nmetadata: {{name: {name}}}\n"
    pipeline = parse_pipeline(head + "spec:\n  steps:\n" + steps)
    core.apply_command(state, core.submit_pipeline_cmd(name, "k", spec_json(pipeline), 0.0))


CHAIN = """    - {name: a, run: "m:f"}
    - {name: b, run: "m:f", dependsOn: [a]}
    - {name: c, run: "m:f", dependsOn: [b]}
"""


def take(state: core.State, worker_id: str, now: float = 1.0) -> list[str]:
    planned = plan_for(worker_id, state.runs, state.workers.values(), TOPOLOGY, now, 1)
    rows = [(a.task_id, a.region, a.estimated_transfer_seconds) for a in planned]
    return core.apply_command(state, core.assign_and_start_cmd(worker_id, rows, now, LEASE))


def complete(state: core.State, ref: str, worker_id: str, take_next: int, now: float = 2.0):
    task = state.runs.tasks[ref]
    after = task if take_next else None
    planned = plan_for(
        worker_id, state.runs, state.workers.values(), TOPOLOGY, now, take_next, after=after
    )
    rows = [(a.task_id, a.region, a.estimated_transfer_seconds) for a in planned]
    cmd = core.complete_and_continue_cmd(ref, task.attempt, worker_id, [], "", "", now, rows, LEASE)
    return core.apply_command(state, cmd)


def test_a_worker_asking_for_work_gets_a_ready_task_running_in_one_command():
    state = new_state()
    submit(state, CHAIN)
    assert take(state, "aws-1") == ["p.a"]
    task = state.runs.tasks["p.a"]
    assert (task.phase, task.worker_id, task.attempt) == (TaskPhase.RUNNING, "aws-1", 1)
    assert task.scheduled_at == task.started_at == 1.0
    assert task.lease_expires_at == 1.0 + LEASE


def test_a_chain_step_is_handed_to_the_worker_that_finished_the_one_before():
    state = new_state()
    submit(state, CHAIN)
    take(state, "aws-1")
    submit(state, '    - {name: other, run: "m:f"}\n', name="q")
    busy = core.assign_and_start_cmd("aws-1", [("q.other", "aws", 0.0)], 1.0, LEASE)
    assert core.apply_command(state, busy) == ["q.other"]  # aws-1: fewer idle slots than aws-2
    outcome, started = complete(state, "p.a", "aws-1", take_next=1)
    assert outcome.accepted
    assert started == ["p.b"]  # Pending until this very commit, and already Running
    assert state.runs.tasks["p.b"].phase is TaskPhase.RUNNING
    assert state.runs.tasks["p.b"].worker_id == "aws-1"  # not aws-2, though it is idler


def test_a_worker_gets_only_its_share_of_the_plan():
    state = new_state()
    submit(state, '    - {name: far, run: "m:f", region: gcp}\n')
    assert take(state, "aws-1") == []  # pinned to gcp: the plan sends it to gcp-1
    assert take(state, "gcp-1") == ["p.far"]


def test_plans_in_flight_are_not_planned_twice():
    state = new_state()
    submit(state, "".join(f'    - {{name: f{i}, run: "m:f"}}\n' for i in range(3)))
    workers = state.workers.values()
    first = plan_for("aws-1", state.runs, workers, TOPOLOGY, 1.0, 1)
    second = plan_for("aws-1", state.runs, workers, TOPOLOGY, 1.0, 1, promised={"p.f0"})
    assert [a.task_id for a in first] == ["p.f0"]
    assert [a.task_id for a in second] == ["p.f1"]


def test_a_follow_up_taken_meanwhile_is_skipped_and_a_stale_completion_starts_nothing():
    state = new_state()
    submit(state, "".join(f'    - {{name: f{i}, run: "m:f"}}\n' for i in range(2)))
    take(state, "aws-1")  # f0
    workers = state.workers.values()
    (planned,) = plan_for(
        "aws-1", state.runs, workers, TOPOLOGY, 2.0, 1, after=state.runs.tasks["p.f0"]
    )
    assert planned.task_id == "p.f1"
    assert take(state, "aws-2") == ["p.f1"]  # another worker got there first
    row = (planned.task_id, planned.region, planned.estimated_transfer_seconds)
    cmd = core.complete_and_continue_cmd("p.f0", 1, "aws-1", [], "", "", 2.0, [row], LEASE)
    outcome, started = core.apply_command(state, cmd)
    assert outcome.accepted
    assert started == []
    assert state.runs.tasks["p.f1"].worker_id == "aws-2"

    stale = core.complete_and_continue_cmd("p.f0", 1, "aws-1", [], "", "", 3.0, [row], LEASE)
    outcome, started = core.apply_command(state, stale)
    assert not outcome.accepted
    assert started == []


def test_a_completion_records_when_its_worker_received_the_attempt():
    state = new_state()
    submit(state, CHAIN)
    take(state, "aws-1", now=1.0)
    cmd = core.complete_and_continue_cmd(
        "p.a", 1, "aws-1", [], "", "", 2.0, [], LEASE, received_at=1.25
    )
    core.apply_command(state, cmd)
    task = state.runs.tasks["p.a"]
    assert (task.phase, task.ready_at, task.received_at) == (TaskPhase.SUCCEEDED, 0.0, 1.25)


def test_a_completion_written_before_receipt_times_were_reported_replays_as_it_applied():
    state = new_state()
    submit(state, CHAIN)
    take(state, "aws-1", now=1.0)
    old = ("task.complete/2", ("p.a", 1, "aws-1", [], "", "", 2.0, [("p.b", "aws", 0.0)], LEASE))
    outcome, started = core.apply_command(state, old)
    assert outcome.accepted
    assert started == ["p.b"]
    assert state.runs.tasks["p.a"].received_at == 0.0


def test_an_offline_worker_is_handed_nothing():
    state = new_state()
    submit(state, CHAIN)
    core.apply_command(state, core.mark_offline_cmd(("aws-1",), 100.0))
    cmd = core.assign_and_start_cmd("aws-1", [("p.a", "aws", 0.0)], 100.0, LEASE)
    assert core.apply_command(state, cmd) == []
    assert state.runs.tasks["p.a"].phase is TaskPhase.READY


FAN = """    - {name: a, run: "m:f"}
    - {name: b, run: "m:f"}
    - {name: c, run: "m:f"}
    - {name: d, run: "m:f", dependsOn: [a]}
"""


def submit_start(state: core.State, waiting: list[tuple[str, int]], name: str = "p", now=5.0):
    head = f"apiVersion: pipeorch.dev/v1alpha1\nkind: Pipeline\nmetadata: {{name: {name}}}\n"
    pipeline = parse_pipeline(head + "spec:\n  steps:\n" + FAN)
    cmd = core.submit_and_start_cmd(
        name,
        "k",
        spec_json(pipeline),
        now,
        replace=False,
        waiting=waiting,
        topology=TOPOLOGY.to_plain(),
        lease=LEASE,
    )
    return core.apply_command(state, cmd)


def test_a_submission_starts_its_first_steps_on_the_waiting_workers_in_its_own_command():
    state = new_state(slots=2)
    run, created, started = submit_start(state, [("aws-1", 2), ("aws-2", 2), ("gcp-1", 2)])
    assert created
    assert run.name == "p"
    # Each waiting worker gets its share of the plan, up to the slots it waits with; the
    # dependent step waits for its dependency.
    assert sorted(r for refs in started.values() for r in refs) == ["p.a", "p.b", "p.c"]
    for worker_id, refs in started.items():
        for ref in refs:
            task = state.runs.tasks[ref]
            assert (task.phase, task.worker_id) == (TaskPhase.RUNNING, worker_id)
            assert task.ready_at == task.started_at == 5.0  # ready and running in one commit
    assert state.runs.tasks["p.d"].phase is TaskPhase.PENDING


def test_a_waiting_worker_gets_no_more_than_the_slots_it_waits_with():
    state = new_state(slots=4)
    _, _, started = submit_start(state, [("aws-1", 1)])
    assert len(started["aws-1"]) == 1


def test_a_submission_with_no_waiting_worker_or_a_second_time_starts_nothing():
    state = new_state()
    assert submit_start(state, [])[2] == {}
    assert state.runs.tasks["p.a"].phase is TaskPhase.READY
    _, created, started = submit_start(state, [("aws-1", 2)])  # the same name again
    assert not created
    assert started == {}


def test_an_offline_waiting_worker_gets_nothing():
    state = new_state()
    core.apply_command(state, core.mark_offline_cmd(("aws-1",), 3.0))
    _, _, started = submit_start(state, [("aws-1", 2), ("aws-2", 1)])
    assert list(started) == ["aws-2"]


def test_every_replica_places_a_submission_alike():
    one, two = new_state(), new_state()
    # The topology travels in the command: a replica's own configuration plays no part.
    assert (
        submit_start(one, [("aws-2", 1), ("gcp-1", 2)])[2]
        == (submit_start(two, [("aws-2", 1), ("gcp-1", 2)])[2])
    )
    assert one.digest() == two.digest()


def test_topology_survives_its_plain_form():
    topology = Topology.from_matrix({"aws": {"gcp": 50, "azure": 75}}, {"aws": {"gcp": 900}})
    assert Topology.from_plain(topology.to_plain()) == topology
