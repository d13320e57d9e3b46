"""The task state machine: transitions, retries, failure classes, stale reports."""

from __future__ import annotations

import pytest

from pipeorch.core.runs import Artifact, FailureClass, RunPhase, Runs, TaskPhase, task_id
from pipeorch.core.spec import parse_pipeline, spec_json

LEASE = 10.0


def submit(runs: Runs, steps: str, name: str = "p", now: float = 0.0):
    header = f"apiVersion: pipeorch.dev/v1alpha1\nkind: Pipeline\nmetadata: {{name: {name}}}\n"
    pipeline = parse_pipeline(header + "spec:\n  steps:\n" + steps)
    return runs.submit(name, "key-1", spec_json(pipeline), now)


CHAIN = """    - {name: a, run: "m:f", outputs: [x]}
    - {name: b, run: "m:f", dependsOn: [a], inputs: [a/x], retry: {limit: 2, backoffSeconds: 5}}
    - {name: c, run: "m:f", dependsOn: [b]}
"""


def phases(runs: Runs, pipeline: str = "p") -> dict[str, str]:
    return {t.step: t.phase.value for t in runs.tasks_of(pipeline)}


def run_step(runs: Runs, step: str, worker: str = "w1", now: float = 1.0) -> int:
    ref = task_id("p", step)
    assert runs.assign(ref, worker, "aws", now, LEASE, 0.0)
    return runs.tasks[ref].attempt


def out(name: str) -> list[Artifact]:
    return [Artifact(name=name, key=f"k/{name}", size=3, sha256="abc")]


def test_chain_runs_in_order_and_the_run_succeeds():
    runs = Runs()
    run, created = submit(runs, CHAIN)
    assert created
    assert phases(runs) == {"a": "Ready", "b": "Pending", "c": "Pending"}
    attempt = run_step(runs, "a")
    assert runs.renew("w1", {"p.a": attempt}, 2.0, LEASE) == 1
    assert runs.tasks["p.a"].phase is TaskPhase.RUNNING
    assert runs.complete("p.a", attempt, "w1", out("x"), "", "", 3.0).accepted
    assert phases(runs) == {"a": "Succeeded", "b": "Ready", "c": "Pending"}
    for step in ("b", "c"):
        attempt = run_step(runs, step)
        assert runs.complete(f"p.{step}", attempt, "w1", [], "", "", 4.0).accepted
    assert run.phase is RunPhase.SUCCEEDED
    assert runs.progress("p") == (3, 3)


def test_same_name_twice_creates_nothing():
    runs = Runs()
    first, _ = submit(runs, CHAIN)
    again, created = submit(runs, CHAIN, now=9.0)
    assert not created
    assert again is first
    assert len(runs.tasks) == 3


def test_application_failures_retry_with_backoff_then_fail_and_skip_downstream():
    runs = Runs()
    run, _ = submit(runs, CHAIN)
    runs.complete("p.a", run_step(runs, "a"), "w1", out("x"), "", "", 1.0)
    attempt = run_step(runs, "b", now=2.0)
    outcome = runs.fail("p.b", attempt, "w1", FailureClass.APPLICATION, "boom", "", "", 2.0)
    assert outcome.will_retry
    task = runs.tasks["p.b"]
    assert task.phase is TaskPhase.RETRYING
    assert not runs.assign("p.b", "w1", "aws", 6.9, LEASE, 0)  # backoff 5 s not over
    assert runs.assign("p.b", "w1", "aws", 7.0, LEASE, 0)
    outcome = runs.fail("p.b", task.attempt, "w1", FailureClass.APPLICATION, "boom", "", "", 8.0)
    assert task.not_before == 8.0 + 10.0  # backoffFactor 2
    runs.assign("p.b", "w1", "aws", 18.0, LEASE, 0)
    outcome = runs.fail("p.b", task.attempt, "w1", FailureClass.APPLICATION, "boom 3", "", "", 19.0)
    assert not outcome.will_retry
    assert task.phase is TaskPhase.FAILED
    assert task.app_failures == 3
    assert task.message == "boom 3"
    assert runs.tasks["p.c"].phase is TaskPhase.SKIPPED
    assert "upstream step 'b' failed" in runs.tasks["p.c"].message
    assert run.phase is RunPhase.FAILED
    assert run.message == "step 'b' failed"


def test_infrastructure_failures_do_not_spend_the_retry_budget():
    runs = Runs()
    submit(runs, CHAIN)
    for i in range(5):
        now = 100.0 * i  # past any backoff
        attempt = run_step(runs, "a", now=now)
        outcome = runs.fail(
            "p.a", attempt, "w1", FailureClass.INFRASTRUCTURE, "s3 down", "", "", now
        )
        assert outcome.will_retry
    task = runs.tasks["p.a"]
    assert (task.phase, task.app_failures, task.infra_failures) == (TaskPhase.READY, 0, 5)
    assert runs.failures == {"application": 0, "infrastructure": 5}


def test_stale_and_duplicate_completions_are_ignored_and_counted():
    runs = Runs()
    submit(runs, CHAIN)
    first = run_step(runs, "a", worker="w1")
    assert runs.requeue_worker("w1", 2.0) == ["p.a"]  # w1 lost: back to Ready
    second = run_step(runs, "a", worker="w2", now=3.0)
    assert second == first + 1
    late = runs.complete("p.a", first, "w1", out("x"), "", "", 4.0)
    assert not late.accepted
    assert "stale report" in late.reason
    assert runs.complete("p.a", second, "w2", out("x"), "", "", 5.0).accepted
    duplicate = runs.complete("p.a", second, "w2", out("x"), "", "", 6.0)
    assert not duplicate.accepted
    assert runs.stale_reports == 2
    assert runs.tasks["p.a"].finished_at == 5.0


def test_expired_lease_requeues_as_infrastructure_failure_only_if_still_expired():
    runs = Runs()
    submit(runs, CHAIN)
    attempt = run_step(runs, "a", now=0.0)
    assert runs.expired_leases(now=9.9) == ()
    proposed = runs.expired_leases(now=10.0)
    assert proposed == ("p.a",)
    runs.renew("w1", {"p.a": attempt}, 9.95, LEASE)  # a renewal committed first wins
    assert runs.expire_leases(proposed, now=10.0) == []
    assert runs.expire_leases(proposed, now=20.0) == ["p.a"]
    task = runs.tasks["p.a"]
    assert (task.phase, task.failure_class) == (TaskPhase.READY, "infrastructure")
    assert "lease expired" in task.message


def test_cancel_stops_every_unfinished_task():
    runs = Runs()
    run, _ = submit(runs, CHAIN)
    attempt = run_step(runs, "a")
    runs.cancel("p", 2.0)
    assert run.phase is RunPhase.CANCELLED
    assert set(phases(runs).values()) == {"Cancelled"}
    assert not runs.complete("p.a", attempt, "w1", [], "", "", 3.0).accepted


def test_round_trip_through_plain_data_keeps_everything():
    runs = Runs()
    submit(runs, CHAIN)
    runs.complete("p.a", run_step(runs, "a"), "w1", out("x"), "logs/a", "tail", 1.0)
    copy = Runs.from_dict(runs.to_dict())
    assert copy.to_dict() == runs.to_dict()
    assert copy.tasks["p.a"].outputs[0].key == "k/x"
    assert copy.runs["p"].spec.step("b").retry.limit == 2


@pytest.mark.parametrize("steps", ["    - {name: a, run: 'm:f'}\n"])
def test_single_step_pipeline(steps):
    runs = Runs()
    run, _ = submit(runs, steps)
    runs.complete("p.a", run_step(runs, "a"), "w1", [], "", "", 1.0)
    assert run.phase is RunPhase.SUCCEEDED


def test_start_happens_once_per_attempt():
    runs = Runs()
    submit(runs, CHAIN)
    attempt = run_step(runs, "a")
    assert not runs.start("p.a", attempt, "w2", 1.5, LEASE)  # not its worker
    assert runs.start("p.a", attempt, "w1", 1.5, LEASE)
    assert not runs.start("p.a", attempt, "w1", 1.6, LEASE)  # already running
    assert runs.tasks["p.a"].started_at == 1.5


@pytest.mark.parametrize("retrying", [False, True])
def test_assign_and_start_ends_as_assign_then_start(retrying: bool):
    two_steps, one_move = Runs(), Runs()
    steps = CHAIN.replace("outputs: [x]}", "outputs: [x], retry: {limit: 1, backoffSeconds: 5}}")
    for runs in (two_steps, one_move):
        submit(runs, steps)
        if retrying:  # a second attempt, from Retrying past its backoff
            attempt = run_step(runs, "a")
            runs.fail("p.a", attempt, "w1", FailureClass.APPLICATION, "boom", "", "", 2.0)
    now = 30.0
    assert two_steps.assign("p.a", "w2", "gcp", now, LEASE, 0.5)
    assert two_steps.start("p.a", two_steps.tasks["p.a"].attempt, "w2", now, LEASE)
    assert one_move.assign_and_start("p.a", "w2", "gcp", now, LEASE, 0.5)
    assert one_move.to_dict() == two_steps.to_dict()
    assert index_of(one_move) == index_of(two_steps)
    assert one_move.runs["p"].revision == two_steps.runs["p"].revision
    # And only once: Running is not assignable.
    assert not one_move.assign_and_start("p.a", "w2", "gcp", now, LEASE, 0.5)
    assert not one_move.assign_and_start("p.b", "w2", "gcp", now, LEASE, 0.5)  # still Pending


def test_repeated_infrastructure_failures_back_off():
    runs = Runs()
    submit(runs, CHAIN)
    delays = []
    now = 0.0
    for _ in range(6):
        ref = "p.a"
        while not runs.assign(ref, "w1", "aws", now, LEASE, 0):
            now += 0.25
        runs.fail(
            ref, runs.tasks[ref].attempt, "w1", FailureClass.INFRASTRUCTURE, "down", "", "", now
        )
        delays.append(runs.tasks[ref].not_before - now)
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]


def index_of(runs: Runs) -> dict[str, object]:
    index = runs.index
    return {
        "queue": list(index.queue),
        "active_by_worker": {w: sorted(r) for w, r in index.active_by_worker.items() if r},
        "active_by_run": dict(index.active_by_run),
        "active_by_run_region": dict(index.active_by_run_region),
        "open_by_run": dict(index.open_by_run),
        "dependents": {k: sorted(v) for k, v in index.dependents.items()},
        "scheduled": index.scheduled,
    }


def test_the_index_always_matches_one_rebuilt_from_the_tasks():
    """Every transition keeps the scheduler's index equal to a fresh rebuild (a restore)."""
    runs = Runs()
    submit(runs, CHAIN)
    submit(runs, CHAIN, name="q")
    fan = "".join(f'    - {{name: f{i}, run: "m:f"}}\n' for i in range(4))
    submit(runs, fan, name="fan")

    def check() -> None:
        assert index_of(runs) == index_of(Runs.from_dict(runs.to_dict()))

    check()
    a = run_step(runs, "a", worker="w1")
    check()
    runs.renew("w1", {"p.a": a}, 1.5, LEASE)
    runs.complete("p.a", a, "w1", out("x"), "", "", 2.0)
    check()
    b = run_step(runs, "b", worker="w2")
    runs.fail("p.b", b, "w2", FailureClass.APPLICATION, "boom", "", "", 3.0)  # -> Retrying
    check()
    assert runs.assign("q.a", "w1", "gcp", 3.0, LEASE, 0.0)
    assert runs.assign("fan.f0", "w1", "gcp", 3.0, LEASE, 0.0)
    assert runs.assign("fan.f1", "w2", "aws", 3.0, LEASE, 0.0)
    check()
    assert runs.requeue_worker("w1", 4.0) == ["fan.f0", "q.a"]  # -> Ready, infra failures
    check()
    assert runs.expire_leases(runs.expired_leases(99.0), 99.0) == ["fan.f1"]
    check()
    runs.cancel("q", 100.0)
    check()
    assert index_of(runs)["open_by_run"] == {"p": 2, "fan": 4}
    # Oldest first: never assigned (0), requeued (4), retry after its backoff (3 + 5), expired.
    assert [t.task_id for t in list(runs.assignable(100.0))] == [
        "fan.f2",
        "fan.f3",
        "fan.f0",
        "p.b",
        "fan.f1",
    ]


def test_every_change_to_a_run_moves_its_revision():
    runs = Runs()
    run, _ = submit(runs, CHAIN)
    seen = run.revision
    a = run_step(runs, "a")
    assert run.revision > seen
    seen = run.revision
    runs.complete("p.a", a, "w1", out("x"), "", "", 2.0)
    assert run.revision > seen
    seen = run.revision
    runs.cancel("p", 3.0)
    assert run.revision > seen


def test_a_finished_run_is_replaced_by_another_submission_of_its_name():
    runs = Runs()
    submit(runs, CHAIN)
    runs.cancel("p", 1.0)
    pipeline = parse_pipeline(
        "apiVersion: pipeorch.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\n"
        'spec:\n  steps:\n    - {name: only, run: "m:f"}\n'
    )
    again, created = runs.replace("p", "key-2", spec_json(pipeline), 2.0)
    assert created
    assert again.submission_key == "key-2"
    assert phases(runs) == {"only": "Ready"}
    assert set(runs.tasks) == {task_id("p", "only")}, "the old run's tasks are gone"
    assert not runs.index.dependents, "and nothing in the index refers to them"
    # Replaced from the dump too: the restored state is the same.
    assert Runs.from_dict(runs.to_dict()).to_dict() == runs.to_dict()


def test_a_running_run_is_not_replaced():
    runs = Runs()
    submit(runs, CHAIN)
    header = "apiVersion: pipeorch.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\n"
    pipeline = parse_pipeline(header + 'spec:\n  steps:\n    - {name: only, run: "m:f"}\n')
    run, created = runs.replace("p", "key-2", spec_json(pipeline), 2.0)
    assert not created
    assert run.submission_key == "key-1"
    assert set(phases(runs)) == {"a", "b", "c"}


def test_work_to_hand_is_a_ready_or_retrying_task_or_one_not_yet_taken():
    """What wakes the workers' waiting acquires: nothing else can give them a task."""
    runs = Runs()
    assert not runs.has_work_to_hand()
    submit(runs, CHAIN)
    assert runs.has_work_to_hand()  # a is Ready
    a = run_step(runs, "a")
    assert runs.has_work_to_hand()  # a is Scheduled on w1, not taken yet
    assert runs.start("p.a", a, "w1", 1.5, LEASE)
    assert not runs.has_work_to_hand()  # Running; b waits for it
    runs.complete("p.a", a, "w1", out("x"), "", "", 2.0)
    assert runs.has_work_to_hand()  # b is Ready
    b = run_step(runs, "b")
    runs.start("p.b", b, "w1", 2.5, LEASE)
    runs.fail("p.b", b, "w1", FailureClass.APPLICATION, "boom", "", "", 3.0)
    assert runs.has_work_to_hand()  # Retrying, backoff or not
    runs.cancel("p", 4.0)
    assert not runs.has_work_to_hand()
